"""The Explainer base class, parameter checking and the text masking every method shares.

Imported by the web process (validate_params runs there): numpy, torch,
shap and lime are only imported inside the methods that compute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from glassbox.errors import InvalidInput

Progress = Callable[[float], None] | None


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
        if self.kind is dict:
            if value is not None and not isinstance(value, dict):
                raise InvalidInput(f"parameter {name!r} must be an object")
            return value
        if self.choices is not None:
            if value not in self.choices:
                raise InvalidInput(
                    f"parameter {name!r} must be one of {', '.join(map(str, self.choices))}, not {value!r}"
                )
            return value
        # bool is an int in Python; True as a sample count is a caller mistake.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"parameter {name!r} must be a number, not {value!r}")
        if self.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise InvalidInput(f"parameter {name!r} must be a whole number, not {value!r}")
            value = int(value)
        elif not math.isfinite(value):
            raise InvalidInput(f"parameter {name!r} must be finite")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise InvalidInput(f"parameter {name!r} must be between {self.low:g} and {self.high:g}, not {value!r}")
        return value


@dataclass
class PreparedText:
    """A text cut to what the model reads, with its tokens' spans, able to
    render itself with any set of tokens hidden."""

    text: str
    truncated: bool
    spans: list[tuple[int, int]]
    mask_text: str
    _gaps: list[str] = field(default_factory=list, repr=False)
    _pieces: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        # The text between tokens (spaces, characters the tokenizer drops) is
        # always kept, so a rendering differs from the text only at hidden tokens.
        previous = 0
        for start, end in self.spans:
            self._gaps.append(self.text[previous:start])
            self._pieces.append(self.text[start:end])
            previous = end
        self._tail = self.text[previous:]

    @property
    def n(self) -> int:
        return len(self.spans)

    def render(self, hidden) -> str:
        """The text with the tokens whose indices are in ``hidden`` replaced by the mask."""
        mask = self.mask_text
        parts = []
        for i, (gap, piece) in enumerate(zip(self._gaps, self._pieces)):
            parts.append(gap)
            parts.append(mask if i in hidden else piece)
        parts.append(self._tail)
        return "".join(parts)

    def render_present(self, present: int) -> str:
        """The text keeping only the tokens whose bits are set in ``present``."""
        mask = self.mask_text
        parts = []
        for i, (gap, piece) in enumerate(zip(self._gaps, self._pieces)):
            parts.append(gap)
            parts.append(piece if (present >> i) & 1 else mask)
        parts.append(self._tail)
        return "".join(parts)


def prepare_text(predictor, text: str) -> PreparedText:
    """Cut ``text`` after the last token the model reads and say whether anything was cut."""
    text = str(text)
    tokens = [(start, end) for _, start, end in predictor.tokenize_with_offsets(text) if end > start]
    limit = getattr(predictor, "max_tokens", None)
    truncated = limit is not None and len(tokens) > limit
    if truncated:
        tokens = tokens[:limit]
        text = text[: tokens[-1][1]] if tokens else ""
    return PreparedText(text=text, truncated=truncated, spans=tokens, mask_text=predictor.mask_text)


def tokens_covered(prepared: PreparedText, units: list[tuple[int, int]]) -> list[list[int]]:
    """For each unit span (a word, say), the model tokens starting inside it."""
    groups: list[list[int]] = [[] for _ in units]
    j = 0
    for i, (start, _) in enumerate(prepared.spans):
        while j + 1 < len(units) and units[j + 1][0] <= start:
            j += 1
        if units and units[j][0] <= start < units[j][1]:
            groups[j].append(i)
    return groups


def predict_rows(
    predictor, strings: list[str], token_counts: list[int], batch_size: int, progress: Progress, span=(0.05, 0.95)
):
    """predict_proba over many masked texts, in batches of rows with the same token count.

    predict_proba groups rows by character length, but a "[MASK]" is six
    characters for one token: grouping by token count here keeps padding
    (wasted forward work) near zero. Progress moves across ``span``.
    """
    import numpy as np

    order = sorted(range(len(strings)), key=lambda i: (token_counts[i], len(strings[i])))
    out = np.zeros((len(strings), len(predictor.labels)))
    step = max(1, batch_size)
    next_report = 0.0
    for start in range(0, len(order), step):
        idx = order[start : start + step]
        out[idx] = predictor.predict_proba([strings[i] for i in idx], batch_size=step)
        done = min(1.0, (start + step) / max(1, len(order)))
        if progress and done >= next_report:
            progress(span[0] + (span[1] - span[0]) * done)
            next_report = done + 0.05
    return out


def chunk_seed(seed: int, index: int) -> list[int]:
    """A seed for one text that does not depend on how the report was chunked."""
    return [int(seed), int(index)]


class Explainer:
    """Base class of the explanation methods; see explanations.explainers for the contract."""

    method: str = ""
    is_global: bool = False
    PARAMS: dict[str, Param] = {}

    def validate_params(self, params: dict | None) -> dict:
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise InvalidInput(
                f"unknown parameter(s) for {self.method}: {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(self.PARAMS))})"
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


class LocalExplainer(Explainer):
    """Shared chunking, combining and fidelity for per-text methods (SHAP, LIME)."""

    is_global = False

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
    """Per label, the tokens with the largest mean |value| over all their occurrences."""
    summary = {}
    for label in label_names:
        totals: dict[str, list[float]] = {}
        for entry in entries:
            for token, value in zip(entry["tokens"], entry["values"].get(label, [])):
                stats = totals.setdefault(token["text"], [0.0, 0.0, 0])
                stats[0] += abs(value)
                stats[1] += value
                stats[2] += 1
        rows = [
            {"token": token, "mean_abs": s_abs / count, "mean": s / count, "count": count}
            for token, (s_abs, s, count) in totals.items()
        ]
        rows.sort(key=lambda row: (-row["mean_abs"], row["token"]))
        summary[label] = rows[:top]
    return summary
