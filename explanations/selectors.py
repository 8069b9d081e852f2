"""Reads of explanation reports, for the pages, the API, the workers and the
approval policy (succeeded_methods)."""

import threading
from collections import OrderedDict

from django.db.models import Count, IntegerField, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast

from explanations.models import ExplanationChunk, ExplanationReport
from glassbox.errors import NotFound, NotPermitted
from governance.access import has_standing


def explainer_for(method: str):
    """The explainer of a method. The registry behind it is lazy: the web
    process imports no shap, lime or torch to validate a request."""
    from explanations.explainers import get_explainer

    return get_explainer(method)


def known_methods() -> list[str]:
    from explanations.explainers import EXPLAINER_CLASSES

    return list(EXPLAINER_CLASSES)


def _require_read(user) -> None:
    if not has_standing(user):
        raise NotPermitted("You have no role that may read explanation reports.")


def report_get(*, user, pk: int) -> ExplanationReport:
    _require_read(user)
    report = (
        ExplanationReport.objects.select_related("version__model", "dataset", "requested_by")
        .annotate(chunks_total=Count("chunks"), chunks_done=Count("chunks", filter=Q(chunks__status="done")))
        .filter(pk=pk)
        .first()
    )
    if report is None:
        raise NotFound(f"No explanation report {pk}.")
    if not report.can_be_viewed_by(user):
        # Not revealed: the same answer as a report that does not exist.
        raise NotFound(f"No explanation report {pk}.")
    return report


def report_list(*, user, version) -> QuerySet[ExplanationReport]:
    """A version's reports, newest first, without their (large) results."""
    _require_read(user)
    if not version.model.can_be_viewed_by(user):
        raise NotFound(f"No model named {version.model.name!r}.")
    return (
        ExplanationReport.objects.filter(version=version)
        .select_related("version__model", "dataset", "requested_by")
        .annotate(chunks_total=Count("chunks"), chunks_done=Count("chunks", filter=Q(chunks__status="done")))
        .defer("results", "texts")
        .order_by("-created_at", "-id")
    )


def succeeded_methods(*, version, finished_after=None) -> set[str]:
    """Explanation methods ("shap", "pfi", ...) with a succeeded report for
    `version`: the evidence the approval policy asks for. `finished_after`
    counts only reports finished later (a re-certification's fresh evidence)."""
    reports = ExplanationReport.objects.filter(version=version, status=ExplanationReport.Status.SUCCEEDED)
    if finished_after is not None:
        reports = reports.filter(finished_at__gt=finished_after)
    return set(reports.values_list("method", flat=True).distinct())


def succeeded_reports(*, version) -> QuerySet[ExplanationReport]:
    """The evidence itself, newest first (review page, dossier)."""
    return (
        ExplanationReport.objects.filter(version=version, status=ExplanationReport.Status.SUCCEEDED)
        .select_related("dataset", "requested_by", "version__model")
        .defer("results", "texts")
    )


def evidence_rows(*, version) -> list[dict]:
    """What a decision's evidence snapshot records of each succeeded report of
    the version, oldest first, in one query and without the results."""
    return list(
        ExplanationReport.objects.filter(version=version, status=ExplanationReport.Status.SUCCEEDED)
        .order_by("id")
        .values(
            "id",
            "method",
            "params",
            "dataset_id",
            "dataset__sha256",
            "text_count",
            "finished_at",
            "results_sha256",
            "fidelity_sha256",
            "fidelity",
        )
    )


def latest_succeeded(*, version, method: str, dataset_id: int | None = None) -> ExplanationReport | None:
    reports = ExplanationReport.objects.filter(
        version=version, method=method, status=ExplanationReport.Status.SUCCEEDED
    )
    if dataset_id is not None:
        reports = reports.filter(dataset_id=dataset_id)
    return reports.order_by("-finished_at", "-id").first()


# --- what the workers read ----------------------------------------------------------

# Chunks of one report run in the same worker processes one after another;
# reading a dataset back from the store once per process is enough.
_DATASET_CACHE: "OrderedDict[str, tuple[list[str], list[str]]]" = OrderedDict()
_DATASET_CACHE_LOCK = threading.Lock()
_DATASET_CACHE_SIZE = 4


def report_inputs(report: ExplanationReport) -> tuple[list[str], list[str] | None]:
    """(texts, true labels or None for inline texts) of a report; for a
    sampled report, the rows its sample draws (the same every time)."""
    if report.dataset_id is None:
        return list(report.texts), None
    texts, labels = _dataset_inputs(report)
    sample = (report.params or {}).get("sample")
    if sample:
        from explanations.sampling import stratified_sample

        rows = stratified_sample(labels, int(sample["n"]), int(sample["seed"]))
        return [texts[i] for i in rows], [labels[i] for i in rows]
    return texts, labels


def _dataset_inputs(report: ExplanationReport) -> tuple[list[str], list[str]]:
    from registry.selectors import dataset_rows

    dataset = report.dataset
    with _DATASET_CACHE_LOCK:
        cached = _DATASET_CACHE.get(dataset.sha256)
    if cached is None:
        rows = dataset_rows(dataset)
        cached = ([text for text, _ in rows], [label for _, label in rows])
        with _DATASET_CACHE_LOCK:
            _DATASET_CACHE[dataset.sha256] = cached
            while len(_DATASET_CACHE) > _DATASET_CACHE_SIZE:
                _DATASET_CACHE.popitem(last=False)
    return list(cached[0]), list(cached[1])


def report_predictor(report: ExplanationReport):
    from registry.selectors import version_predictor

    return version_predictor(report.version)


def run_params(report: ExplanationReport) -> dict:
    """The parameters the explainer runs with. PFI also gets the results of
    the latest succeeded SHAP report on the same dataset and version, for
    its global SHAP summary."""
    params = dict(report.params)
    params.pop("sample", None)  # which texts, not how to explain them: report_inputs applies it
    if report.method == ExplanationReport.Method.PFI and report.dataset_id is not None:
        shap = latest_succeeded(version=report.version, method="shap", dataset_id=report.dataset_id)
        params["shap_results"] = shap.results if shap is not None else None
    return params


def chunk_results(report: ExplanationReport) -> list[dict]:
    return list(report.chunks.order_by("index").values_list("result", flat=True))


def chunk_timings(report: ExplanationReport) -> list[float]:
    seconds = []
    for started, finished in report.chunks.order_by("index").values_list("started_at", "finished_at"):
        seconds.append(round((finished - started).total_seconds(), 3) if started and finished else None)
    return seconds


def unfinished_chunks(report_id: int) -> QuerySet[ExplanationChunk]:
    return ExplanationChunk.objects.filter(report_id=report_id).exclude(status=ExplanationChunk.Status.DONE)


def comparable_reports(*, old, new, method: str) -> tuple[ExplanationReport | None, ExplanationReport | None]:
    """The latest succeeded `method` reports of two versions, on the same
    dataset when both have one on a common dataset."""

    def succeeded(version):
        return ExplanationReport.objects.filter(
            version=version, method=method, status=ExplanationReport.Status.SUCCEEDED
        ).order_by("-finished_at", "-id")

    common = set(succeeded(old).exclude(dataset=None).values_list("dataset_id", flat=True)) & set(
        succeeded(new).exclude(dataset=None).values_list("dataset_id", flat=True)
    )
    if common:
        newest = succeeded(new).filter(dataset_id__in=common).first()
        return succeeded(old).filter(dataset_id=newest.dataset_id).first(), newest
    return succeeded(old).first(), succeeded(new).first()


def report_top_tokens(report: ExplanationReport, *, top: int = 5) -> list[dict]:
    """Per label, a succeeded local report's first tokens by share of the
    attribution mass (the ranking of its report page); [] otherwise."""
    from explanations.global_importance import cached_global_importance

    if report.status != ExplanationReport.Status.SUCCEEDED or report.is_global:
        return []
    importance = cached_global_importance(report)
    return [
        {
            "label": label,
            "tokens": [
                {key: row[key] for key in ("token", "share", "share_low", "share_high", "rank_unstable", "texts")}
                for row in ranked["rows"][:top]
            ],
        }
        for label, ranked in importance["labels"].items()
    ]


def dossier_reports(*, user, version) -> list[dict]:
    """A version's reports as the compliance dossier's JSON lists them."""
    if not version.model.can_be_viewed_by(user):
        return []
    return [
        {
            "id": report.pk,
            "method": report.method,
            "status": report.status,
            "dataset": report.dataset_id,
            "text_count": report.text_count,
            "params": report.params,
            "requested_by": report.requested_by.get_username(),
            "created_at": report.created_at.isoformat(),
            "finished_at": report.finished_at.isoformat() if report.finished_at else None,
            "error": report.error,
            "dataset_sha256": report.dataset.sha256 if report.dataset_id else None,
            "results_sha256": report.results_sha256,
            "fidelity_sha256": report.fidelity_sha256,
            "fidelity": report.fidelity,
            "top_tokens": report_top_tokens(report, top=10),
            "url": f"/api/v1/explanations/{report.pk}/",
        }
        for report in report_list(user=user, version=version)
    ]


# --- how long a report will take ------------------------------------------------------

# Until a version has run a report, its speed is assumed, on the slow side:
# a BERT-base-sized transformers model managed 11-16 rows/s on two CPU cores
# (issue 11); a TF-IDF + linear scikit-learn pipeline thousands.
ASSUMED_ROWS_PER_SECOND = {"transformers": 10.0, "sklearn": 500.0}
# The newest finished chunks that measure a version's speed.
MEASURED_CHUNKS = 50


def measured_rows_per_second(*, version) -> tuple[float, int, int] | None:
    """(rows/s, rows, chunks) over the newest finished chunks of the version's
    reports, on whichever workers ran them; None before any has finished.
    The time includes each worker's first model load: it errs on the slow side."""
    chunks = (
        ExplanationChunk.objects.filter(
            report__version=version, status=ExplanationChunk.Status.DONE, started_at__isnull=False
        )
        .exclude(finished_at=None)
        .annotate(rows=Cast(KeyTextTransform("model_rows", "result"), IntegerField()))
        .exclude(rows=None)
        .order_by("-finished_at")
        .values_list("rows", "started_at", "finished_at")[:MEASURED_CHUNKS]
    )
    rows = seconds = 0.0
    count = 0
    for chunk_rows, started, finished in chunks:
        rows += chunk_rows
        seconds += max(0.001, (finished - started).total_seconds())
        count += 1
    if not count or rows <= 0:
        return None
    return rows / seconds, int(rows), count


def report_estimate(*, version, explainer, params: dict, n_texts: int) -> dict:
    """How long a report should take on one worker: the model rows the
    method spends on n_texts (fidelity included) ÷ the version's measured
    rows/s, or an assumed rate when none is measured yet."""
    rows = int(explainer.estimated_rows(n_texts, params, max(2, len(version.labels or []))))
    measured = measured_rows_per_second(version=version)
    if measured is not None:
        rate, measured_rows, chunks = measured
        basis = (
            f"measured on this version: {measured_rows:,} model rows in its last {chunks} finished "
            f"report chunk{'s' if chunks != 1 else ''}"
        )
    else:
        rate = ASSUMED_ROWS_PER_SECOND.get(version.flavor, min(ASSUMED_ROWS_PER_SECOND.values()))
        basis = f"no report of this version has run yet: assumed {rate:g} rows/s for a {version.flavor} model"
    basis += (
        f"; {explainer.method} costs about {rows / max(1, n_texts):,.0f} model rows per text with these "
        "parameters (fidelity included); one worker (divide by the workers on the explanations queue)"
    )
    return {
        "seconds": int(round(rows / rate)),
        "rows_per_second": round(rate, 1),
        "model_rows": rows,
        "texts": n_texts,
        "basis": basis,
    }
