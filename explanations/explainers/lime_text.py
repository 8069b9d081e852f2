"""LIME with Chinese features: jieba words or the model's tokens.

lime's LimeTextExplainer splits on ``\\W+``, which keeps a whole Chinese
clause as one "word". Here the features are jieba words (``unit="word"``) or
the model's own tokens (``unit="char"``: characters for a Chinese char
model). The neighbourhood is drawn exactly as lime draws it (remove a
uniformly random number of features, cosine distance ×100, lime's kernel),
but seeded per text and masked at the model's tokens, so that all texts of a
chunk share predict_proba batches; the weighted ridge surrogate and its R²
are lime's own (LimeTextExplainer().base).
"""

from __future__ import annotations

import numpy as np

from explanations.explainers.base import LocalExplainer, Param, chunk_seed
from explanations.hierarchy import word_spans
from explanations.masking import Progress, predict_rows, prepare_text, tokens_covered


def unit_spans(prepared, unit: str) -> list[tuple[int, int]]:
    if unit == "char":
        return list(prepared.spans)
    words = word_spans(prepared.text)
    groups = tokens_covered(prepared, words)
    # A word with no model token in it (a symbol the tokenizer drops) cannot be hidden.
    return [span for span, group in zip(words, groups) if group]


class LimeTextExplainer(LocalExplainer):
    method = "lime"
    PARAMS = {
        "num_samples": Param(int, 1000, 50, 20_000, help="perturbed texts per text"),
        "unit": Param(str, "word", choices=("word", "char")),
        "seed": Param(int, 0, 0, 2**31 - 1),
        "kernel_width": Param(float, 25.0, 0.1, 1000.0),
        "chunk_size": Param(int, 25, 1, 1000),
        "batch_size": Param(int, 128, 1, 4096),
    }

    def rows_per_text(self, params: dict, n_labels: int) -> int:
        return int(params["num_samples"]) + 1  # the samples and the all-hidden text

    def run_chunk(self, predictor, texts, labels, chunk: dict, params: dict, progress: Progress = None) -> dict:
        from lime.lime_text import LimeTextExplainer as LibraryLime
        from sklearn.metrics.pairwise import cosine_distances

        params = self.validate_params(params)
        label_names = list(predictor.labels)
        indices = range(int(chunk["start"]), min(len(texts), int(chunk["stop"])))
        rows: dict[str, int] = {}
        token_counts: list[int] = []
        plans = []
        for index in indices:
            prepared = prepare_text(predictor, texts[index])
            units = unit_spans(prepared, params["unit"])
            groups = tokens_covered(prepared, units)
            d = len(units)
            rng = np.random.RandomState(chunk_seed(params["seed"], index))
            data = np.ones((params["num_samples"], d))
            if d:
                # lime's own sampling: how many features to remove, then which ones.
                sizes = rng.randint(1, d + 1, params["num_samples"] - 1)
                for r, size in enumerate(sizes, start=1):
                    data[r, rng.choice(d, size, replace=False)] = 0

            # Called only within this iteration, so it always sees this text's `prepared`.
            def row_of(string: str, n_tokens: int = prepared.n) -> int:
                if string not in rows:
                    rows[string] = len(rows)
                    token_counts.append(n_tokens)
                return rows[string]

            sample_rows = [
                row_of(prepared.render({t for u in np.flatnonzero(data[r] == 0) for t in groups[u]}))
                for r in range(params["num_samples"])
            ]
            empty_row = row_of(prepared.render(set(range(prepared.n))))
            plans.append((index, prepared, units, data, np.array(sample_rows), empty_row))
        if progress:
            progress(0.05)
        values = predict_rows(predictor, list(rows), token_counts, params["batch_size"], progress, span=(0.05, 0.9))

        entries = []
        for index, prepared, units, data, sample_rows, empty_row in plans:
            probs = values[sample_rows]
            f_x = probs[0]
            predicted = int(np.argmax(f_x))
            entry = {
                "index": index,
                "text": str(texts[index]),
                "truncated": prepared.truncated,
                "tokens": [{"text": prepared.text[s:e], "start": s, "end": e} for s, e in units],
                "predicted_label": label_names[predicted],
                "probabilities": {label: float(p) for label, p in zip(label_names, f_x)},
                "base_values": {label: float(b) for label, b in zip(label_names, values[empty_row])},
                "values": {label: [0.0] * len(units) for label in label_names},
                "intercepts": {},
                "r2": None,
                "r2_by_label": {},
                "true_label": None if labels is None else str(labels[index]),
            }
            if units:
                distances = cosine_distances(data, data[:1]).ravel() * 100
                library = LibraryLime(
                    kernel_width=params["kernel_width"],
                    random_state=np.random.RandomState(chunk_seed(params["seed"], index)),
                )
                for k, label in enumerate(label_names):
                    intercept, weights, score, _ = library.base.explain_instance_with_data(
                        data, probs, distances, k, len(units), feature_selection="none"
                    )
                    coef = [0.0] * len(units)
                    for feature, weight in weights:
                        coef[int(feature)] = float(weight)
                    entry["values"][label] = coef
                    entry["intercepts"][label] = float(intercept)
                    entry["r2_by_label"][label] = float(score)
                entry["r2"] = entry["r2_by_label"][label_names[predicted]]
            entries.append(entry)
        if progress:
            progress(1.0)
        return {"texts": entries, "model_rows": len(rows)}

    def combine(self, predictor, texts, labels, chunk_results: list[dict], params: dict) -> dict:
        results = super().combine(predictor, texts, labels, chunk_results, params)
        results["unit"] = params.get("unit", "word")
        return results

    def fidelity(self, predictor, texts, labels, results: dict, params: dict) -> dict:
        scores = super().fidelity(predictor, texts, labels, results, params)
        r2 = [entry["r2"] for entry in results["texts"] if entry.get("r2") is not None]
        scores["r2_mean"] = float(np.mean(r2)) if r2 else None
        return scores
