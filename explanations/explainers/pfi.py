"""Permutation feature importance for text: how much accuracy and macro-F1
fall when one word (or token) is masked everywhere in the evaluation set.

"Permuting" a word column of a text dataset means nothing, so the feature is
removed instead: every occurrence is replaced by the model's mask token, the
masked texts are predicted, and the drop is measured on R bootstrap resamples
of the rows (the same resamples for every feature, so features compare on
equal footing). The report gives mean ± std over the resamples.
"""

from __future__ import annotations

import unicodedata
from collections import Counter

import numpy as np

from explanations.explainers.base import ERASER_ROWS_PER_TEXT, Explainer, Param
from explanations.hierarchy import word_spans
from explanations.masking import Progress, prepare_text, tokens_covered
from glassbox.errors import InvalidInput


def _is_punctuation(token: str) -> bool:
    # Punctuation, symbols and spaces would fill the top-K by frequency alone.
    return all(unicodedata.category(ch)[0] in "PSZ" for ch in token)


def text_units(prepared, unit: str) -> dict[str, set[int]]:
    """Each distinct feature of a text → the model tokens of all its occurrences."""
    spans = list(prepared.spans) if unit == "char" else word_spans(prepared.text)
    found: dict[str, set[int]] = {}
    for (start, end), group in zip(spans, tokens_covered(prepared, spans)):
        token = prepared.text[start:end]
        if group and not _is_punctuation(token):
            found.setdefault(token, set()).update(group)
    return found


def top_features(units: list[dict[str, set[int]]], top_k: int) -> list[str]:
    """The top-K features by the number of texts holding them (ties: total count, then text)."""
    frequency = Counter(token for found in units for token in found)
    return [token for token, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]


def _metrics(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    return float(np.mean(y_true == y_pred)), float(f1_score(y_true, y_pred, average="macro", zero_division=0))


class PermutationImportanceExplainer(Explainer):
    method = "pfi"
    is_global = True
    PARAMS = {
        "top_k": Param(int, 20, 1, 200, help="most frequent features to test"),
        "repeats": Param(int, 5, 1, 100, help="bootstrap resamples of the rows"),
        "unit": Param(str, "word", choices=("word", "char")),
        "seed": Param(int, 0, 0, 2**31 - 1),
        "chunk_size": Param(int, 5, 1, 200, help="features per chunk"),
        "batch_size": Param(int, 128, 1, 4096),
        "fidelity_texts": Param(int, 100, 1, 5000),
        "shap_results": Param(dict, None),
    }

    def estimated_rows(self, n_texts: int, params: dict, n_labels: int) -> int:
        # Each text once, and once more per top-K feature it holds (at most
        # K); the repeats resample predictions already made and cost no rows.
        fidelity = min(n_texts, int(params["fidelity_texts"])) * (1 + ERASER_ROWS_PER_TEXT)
        return n_texts * (1 + int(params["top_k"])) + fidelity

    def check_inputs(self, texts, labels, model_labels=None) -> None:
        if labels is None:
            raise InvalidInput("permutation importance needs a dataset with labels")
        super().check_inputs(texts, labels, model_labels)

    def plan_chunks(self, n_texts: int, params: dict) -> list[dict]:
        size = int(params.get("chunk_size") or 5)
        top_k = int(params.get("top_k") or 20)
        return [{"feature_start": s, "feature_stop": min(top_k, s + size)} for s in range(0, top_k, size)]

    def _prepare(self, predictor, texts, params):
        prepared = [prepare_text(predictor, text) for text in texts]
        units = [text_units(p, params["unit"]) for p in prepared]
        return prepared, units

    def run_chunk(self, predictor, texts, labels, chunk: dict, params: dict, progress: Progress = None) -> dict:
        params = self.validate_params(params)
        self.check_inputs(texts, labels, predictor.labels)
        label_names = list(predictor.labels)
        prepared, units = self._prepare(predictor, texts, params)
        features = top_features(units, params["top_k"])[int(chunk["feature_start"]) : int(chunk["feature_stop"])]
        y_true = np.array([label_names.index(str(label)) for label in labels])

        strings: dict[str, int] = {}
        base_rows = [strings.setdefault(p.text, len(strings)) for p in prepared]
        masked_rows: list[dict[int, int]] = []
        for feature in features:
            rows = {}
            for i, (p, found) in enumerate(zip(prepared, units)):
                if feature in found:
                    rows[i] = strings.setdefault(p.render(found[feature]), len(strings))
            masked_rows.append(rows)
        if progress:
            progress(0.1)
        probs = predictor.predict_proba(list(strings), batch_size=params["batch_size"])
        predicted = probs.argmax(axis=1)
        if progress:
            progress(0.9)

        base_pred = predicted[base_rows]
        resamples = [
            np.random.default_rng([params["seed"], r]).integers(0, len(texts), len(texts))
            for r in range(params["repeats"])
        ]
        base_scores = [_metrics(y_true[idx], base_pred[idx]) for idx in resamples]
        rows_out = []
        for rank, (feature, rows) in enumerate(zip(features, masked_rows), start=int(chunk["feature_start"])):
            pred = base_pred.copy()
            for i, row in rows.items():
                pred[i] = predicted[row]
            drops = np.array(
                [np.subtract(base, _metrics(y_true[idx], pred[idx])) for base, idx in zip(base_scores, resamples)]
            )
            rows_out.append(
                {
                    "rank": rank,
                    "token": feature,
                    "accuracy_drop_mean": float(drops[:, 0].mean()),
                    "accuracy_drop_std": float(drops[:, 0].std(ddof=1)) if len(drops) > 1 else 0.0,
                    # How many of the repeats saw accuracy fall at all: the drop's own evidence.
                    "accuracy_drop_positive_repeats": int((drops[:, 0] > 0).sum()),
                    "macro_f1_drop_mean": float(drops[:, 1].mean()),
                    "macro_f1_drop_std": float(drops[:, 1].std(ddof=1)) if len(drops) > 1 else 0.0,
                    "texts_affected": len(rows),
                }
            )
        accuracy, macro_f1 = _metrics(y_true, base_pred)
        if progress:
            progress(1.0)
        return {
            "baseline": {"accuracy": accuracy, "macro_f1": macro_f1},
            "features": rows_out,
            "model_rows": len(strings),
        }

    def combine(self, predictor, texts, labels, chunk_results: list[dict], params: dict) -> dict:
        by_rank = {row["rank"]: row for result in chunk_results for row in result["features"]}
        # Listed by importance; "rank" keeps the frequency order they were chosen in.
        features = sorted(
            by_rank.values(), key=lambda row: (-row["accuracy_drop_mean"], -row["macro_f1_drop_mean"], row["rank"])
        )
        results = {
            "baseline": chunk_results[0]["baseline"] if chunk_results else None,
            "features": features,
            "repeats": int(params.get("repeats", 5)),
            "top_k": int(params.get("top_k", 20)),
            "unit": params.get("unit", "word"),
            "resampling": "bootstrap of the rows, seeded per repeat",
        }
        shap_results = params.get("shap_results")
        if shap_results and isinstance(shap_results.get("global"), dict):
            results["shap_summary"] = {
                label: [
                    {
                        key: row[key]
                        for key in (
                            "token",
                            "share",
                            "share_low",
                            "share_high",
                            "rank_unstable",
                            "texts",
                            "mean",
                            "mean_abs",
                            "count",
                        )
                        if key in row
                    }
                    for row in rows
                ]
                for label, rows in shap_results["global"].items()
            }
        return results

    def fidelity(self, predictor, texts, labels, results: dict, params: dict) -> dict:
        """ERASER on the first texts, each text's features ranked by their global importance."""
        from explanations.fidelity import FidelityCase, eraser

        params = {**{name: spec.default for name, spec in self.PARAMS.items()}, **params}
        subset = list(texts[: int(params["fidelity_texts"])])
        prepared, units = self._prepare(predictor, subset, params)
        importance = {row["token"]: row["accuracy_drop_mean"] for row in results["features"]}
        predicted = predictor.predict_proba([p.text for p in prepared], batch_size=int(params["batch_size"])).argmax(
            axis=1
        )
        cases = []
        for i, (p, found) in enumerate(zip(prepared, units)):
            if not found:
                continue
            names = sorted(found)
            rng = np.random.default_rng([int(params["seed"]), i, 11])
            tie_break = rng.permutation(len(names))
            # Features the report measured come first by their drop; the rest follow in a seeded random order.
            ranking = sorted(
                range(len(names)),
                key=lambda u: (names[u] not in importance, -importance.get(names[u], 0.0), tie_break[u]),
            )
            cases.append(
                FidelityCase(
                    index=i,
                    prepared=p,
                    groups=[sorted(found[name]) for name in names],
                    ranking=ranking,
                    label_index=int(predicted[i]),
                )
            )
        scores = eraser(predictor, cases, seed=int(params["seed"]), batch_size=int(params["batch_size"]))
        scores["ranking"] = "per text, its words ordered by the global accuracy drop; untested words follow at random"
        return scores
