"""The Explainer base class, parameter checking and the global summary every method shares.

The text masking the methods share lives in explanations/masking.py.

Imported by the web process (validate_params runs there): numpy, torch,
shap and lime are only imported inside the methods that compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from explanations.masking import Progress, prepare_text, tokens_covered
from glassbox.errors import InvalidInput


@dataclass(frozen=True)
class Param:
    """One method parameter: its type, default and allowed range or choices."""

    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    help: str = ""

    def check(self, name: str, value: Any) -> Any:
        field = f"params.{name}"
        if self.kind is dict:
            if value is not None and not isinstance(value, dict):
                raise InvalidInput(f"parameter {name!r} must be an object", field=field)
            return value
        if self.choices is not None:
            if value not in self.choices:
                raise InvalidInput(
                    f"parameter {name!r} must be one of {', '.join(map(str, self.choices))}, not {value!r}",
                    field=field,
                )
            return value
        # bool is an int in Python; True as a sample count is a caller mistake.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"parameter {name!r} must be a number, not {value!r}", field=field)
        if self.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise InvalidInput(f"parameter {name!r} must be a whole number, not {value!r}", field=field)
            value = int(value)
        elif not math.isfinite(value):
            raise InvalidInput(f"parameter {name!r} must be finite", field=field)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise InvalidInput(
                f"parameter {name!r} must be between {self.low:g} and {self.high:g}, not {value!r}", field=field
            )
        return value


def chunk_seed(seed: int, index: int) -> list[int]:
    """A seed for one text that does not depend on how the report was chunked."""
    return [int(seed), int(index)]


class Explainer:
    """Base class of the explanation methods; see explanations.explainers for the contract."""

    method: str = ""
    is_global: bool = False
    # The model flavors the method can explain (integrated gradients needs gradients: transformers only).
    flavors: tuple[str, ...] = ("transformers", "sklearn")
    PARAMS: dict[str, Param] = {}

    def flavor_refusal(self, flavor: str) -> InvalidInput | None:
        """Why a version of this flavor cannot be explained by the method, or None."""
        if flavor in self.flavors:
            return None
        return InvalidInput(
            f"{self.method} cannot explain a {flavor} model: it explains {' and '.join(self.flavors)} models only.",
            field="method",
        )

    def estimated_rows(self, n_texts: int, params: dict, n_labels: int) -> int:
        """Model rows (forward-pass equivalents) a report of ``n_texts`` costs,
        fidelity included: what the time estimate divides by the measured rows/s."""
        raise NotImplementedError

    def validate_params(self, params: dict | None) -> dict:
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise InvalidInput(
                f"unknown parameter(s) for {self.method}: {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(self.PARAMS))})",
                field=f"params.{unknown[0]}",
            )
        return {name: spec.check(name, params.get(name, spec.default)) for name, spec in self.PARAMS.items()}

    def check_inputs(self, texts: list[str], labels: list[str] | None, model_labels: list[str] | None = None) -> None:
        """Refuse inputs no report can be made of (raises InvalidInput)."""
        if not texts:
            raise InvalidInput("there are no texts to explain")
        empty = [i for i, text in enumerate(texts) if not str(text).strip()]
        if empty:
            raise InvalidInput(f"{len(empty)} text(s) are empty (first at row {empty[0]})")
        if labels is not None:
            if len(labels) != len(texts):
                raise InvalidInput("there must be one label per text")
            if model_labels is not None:
                unknown = sorted({str(label) for label in labels} - {str(label) for label in model_labels})
                if unknown:
                    raise InvalidInput(f"labels the model does not know: {', '.join(unknown[:10])}")

    def plan_chunks(self, n_texts: int, params: dict) -> list[dict]:
        raise NotImplementedError

    def run_chunk(self, predictor, texts, labels, chunk: dict, params: dict, progress: Progress = None) -> dict:
        raise NotImplementedError

    def combine(self, predictor, texts, labels, chunk_results: list[dict], params: dict) -> dict:
        raise NotImplementedError

    def fidelity(self, predictor, texts, labels, results: dict, params: dict) -> dict:
        raise NotImplementedError


GLOBAL_TOP = 50
# Rows of the ERASER fidelity check per text (explanations.fidelity): the
# text, and for the model's and a random ranking at 5 bins, the text
# without and with only the top tokens.
ERASER_ROWS_PER_TEXT = 1 + 2 * 5 * 2


class LocalExplainer(Explainer):
    """Shared chunking, combining and fidelity for per-text methods (SHAP, LIME)."""

    is_global = False

    def rows_per_text(self, params: dict, n_labels: int) -> int:
        """Model rows the method itself spends on one text (at most)."""
        raise NotImplementedError

    def estimated_rows(self, n_texts: int, params: dict, n_labels: int) -> int:
        return n_texts * (self.rows_per_text(params, n_labels) + ERASER_ROWS_PER_TEXT)

    def plan_chunks(self, n_texts: int, params: dict) -> list[dict]:
        size = int(params.get("chunk_size") or 25)
        return [{"start": start, "stop": min(n_texts, start + size)} for start in range(0, n_texts, size)]

    def combine(self, predictor, texts, labels, chunk_results: list[dict], params: dict) -> dict:
        by_index = {}
        for result in chunk_results:
            for entry in result["texts"]:
                # A re-run chunk gives the same entries; the last copy wins.
                by_index[entry["index"]] = entry
        entries = [by_index[i] for i in sorted(by_index)]
        label_names = list(predictor.labels)
        return {
            "texts": entries,
            "global": global_summary(entries, label_names),
            "labels": label_names,
            "truncated_count": sum(1 for entry in entries if entry["truncated"]),
        }

    def fidelity(self, predictor, texts, labels, results: dict, params: dict) -> dict:
        from explanations.fidelity import FidelityCase, eraser

        cases = []
        for entry in results["texts"]:
            prepared = prepare_text(predictor, texts[entry["index"]])
            units = [(token["start"], token["end"]) for token in entry["tokens"]]
            if not units:
                continue
            label = entry["predicted_label"]
            values = entry["values"][label]
            ranking = sorted(range(len(units)), key=lambda u: (-values[u], u))
            cases.append(
                FidelityCase(
                    index=entry["index"],
                    prepared=prepared,
                    groups=tokens_covered(prepared, units),
                    ranking=ranking,
                    label_index=label_names_index(predictor, label),
                )
            )
        return eraser(predictor, cases, seed=int(params.get("seed", 0)), batch_size=int(params.get("batch_size", 128)))


def label_names_index(predictor, label: str) -> int:
    return list(predictor.labels).index(label)


def global_summary(entries: list[dict], label_names: list[str], top: int = GLOBAL_TOP) -> dict:
    """Per label, the top tokens by their share of the attribution mass (see
    explanations.global_importance), as stored with a new report."""
    from explanations.global_importance import global_importance

    ranked = global_importance({"texts": entries, "labels": label_names}, top=top)
    return {label: ranked_label["rows"] for label, ranked_label in ranked["labels"].items()}
