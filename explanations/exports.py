"""A succeeded report as a JSON document or CSV rows (one row per token per
text for local methods, one row per feature for PFI)."""

import csv
import io
from collections.abc import Iterator

from explanations.global_importance import DEFAULT_MIN_TEXTS, cached_global_importance
from explanations.models import ExplanationReport

LOCAL_COLUMNS = [
    "text_index",
    "token_index",
    "token",
    "start",
    "end",
    "predicted_label",
    "predicted_probability",
    "true_label",
    "truncated",
]
PFI_COLUMNS = [
    "token",
    "accuracy_drop_mean",
    "accuracy_drop_std",
    "accuracy_drop_positive_repeats",
    "macro_f1_drop_mean",
    "macro_f1_drop_std",
    "texts_affected",
]


GLOBAL_COLUMNS = [
    "label",
    "unit",
    "rank",
    "token",
    "share",
    "share_low",
    "share_high",
    "rank_unstable",
    "texts",
    "count",
    "mean",
    "mean_abs",
]


def report_document(report: ExplanationReport, *, unit: str = "token", min_texts: int = DEFAULT_MIN_TEXTS) -> dict:
    document = {
        "report": {
            "id": report.pk,
            "model": report.version.model.name,
            "version": report.version.number,
            "artifact_sha256": report.version.artifact_sha256,
            "method": report.method,
            "dataset": report.dataset_id,
            "text_count": report.text_count,
            "params": report.params,
            "status": report.status,
            "requested_by": report.requested_by.get_username(),
            "created_at": report.created_at.isoformat(),
            "started_at": report.started_at.isoformat() if report.started_at else None,
            "finished_at": report.finished_at.isoformat() if report.finished_at else None,
            "timings": report.timings,
        },
        "results": report.results,
        "fidelity": report.fidelity,
    }
    if not report.is_global:
        # Computed from the per-text values at export time (stored results stay as they were).
        document["global_importance"] = cached_global_importance(report, unit=unit, min_texts=min_texts)
    return document


def global_importance_csv(report: ExplanationReport, *, unit: str, min_texts: int) -> str:
    """One row per ranked token (or word) per label, then each label's rare-tokens row."""
    importance = cached_global_importance(report, unit=unit, min_texts=min_texts)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(GLOBAL_COLUMNS)
    for label, ranked in importance["labels"].items():
        for row in ranked["rows"]:
            writer.writerow([_cell(label), unit] + [_cell(row.get(column)) for column in GLOBAL_COLUMNS[2:]])
        rare = ranked["rare"]
        writer.writerow(
            [_cell(label), unit, "", f"(rare: {rare['tokens']} in fewer than {min_texts} texts)", rare["share"]]
            + [""] * (len(GLOBAL_COLUMNS) - 5)
        )
    return buffer.getvalue()


def _cell(value):
    # A text cell starting with = + - @ is a formula to a spreadsheet.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _local_rows(results: dict) -> Iterator[list]:
    labels = list(results.get("labels") or [])
    entries = results.get("texts") or []
    # SHAP reports since issue 12 carry a standard error per value; older
    # reports and LIME have none, and their CSV keeps its old columns.
    with_errors = any(entry.get("std_errors") for entry in entries)
    header = LOCAL_COLUMNS + [f"value:{label}" for label in labels]
    if with_errors:
        header += [f"std_error:{label}" for label in labels] + ["evaluations"]
    yield header
    for entry in entries:
        predicted = entry.get("predicted_label")
        probability = (entry.get("probabilities") or {}).get(predicted)
        values = entry.get("values") or {}
        errors = entry.get("std_errors") or {}
        for position, token in enumerate(entry.get("tokens") or []):
            row = [
                entry.get("index"),
                position,
                _cell(token.get("text", "")),
                token.get("start"),
                token.get("end"),
                _cell(predicted),
                probability,
                _cell(entry.get("true_label") or ""),
                bool(entry.get("truncated")),
            ]
            row += [_at(values.get(label), position) for label in labels]
            if with_errors:
                row += [_at(errors.get(label), position) for label in labels] + [entry.get("evaluations")]
            yield row


def _at(items, position: int):
    return items[position] if isinstance(items, list) and position < len(items) else None


def _pfi_rows(results: dict) -> Iterator[list]:
    yield PFI_COLUMNS
    for feature in results.get("features") or []:
        yield [_cell(feature.get("token", ""))] + [feature.get(column) for column in PFI_COLUMNS[1:]]


def report_csv(report: ExplanationReport) -> str:
    results = report.results or {}
    rows = _pfi_rows(results) if report.is_global else _local_rows(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows(rows)
    return buffer.getvalue()
