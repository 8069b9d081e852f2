"""Every write to explanation reports and their chunks.

Requests and cancels come from people (`actor=`); the rest are the moves the
workers make (actor None: the system). Report status changes go through
report_move, which locks the report row, enforces ALLOWED_TRANSITIONS and
records an AuditEvent in the same transaction. Locks are taken report first,
then chunk, everywhere.
"""

import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Avg, Case, F, FloatField, Q, Value, When
from django.utils import timezone

from explanations import selectors
from explanations.models import ExplanationChunk, ExplanationReport
from glassbox.errors import Conflict, GlassboxError, InvalidInput, NotPermitted
from governance.audit import content_digest, record_event, record_refusal
from governance.audit_actions import AuditAction

logger = logging.getLogger(__name__)

Status = ExplanationReport.Status
ChunkStatus = ExplanationChunk.Status

MAX_INLINE_TEXTS = 1000
MAX_TEXT_CHARS = 20_000
# Chunks report 0..CHUNK_SHARE % of the progress bar; combine + fidelity the rest.
CHUNK_SHARE = 90
# Keys the workers add to the parameters; never accepted from a request.
RESERVED_PARAMS = ("shap_results",)


def json_safe(value: Any) -> Any:
    """What PostgreSQL's jsonb will store: no NaN or infinities (None instead),
    no NUL characters, no numpy scalars or arrays."""
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {str(key).replace("\x00", ""): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_safe(value.tolist())
    return json_safe(str(value))


# --- requests from people ------------------------------------------------------------


def _clean_texts(texts: Any) -> list[str]:
    if not isinstance(texts, (list, tuple)) or not texts:
        raise InvalidInput("texts must be a non-empty list of strings.")
    if len(texts) > MAX_INLINE_TEXTS:
        raise InvalidInput(f"At most {MAX_INLINE_TEXTS} inline texts per report; upload a dataset for more.")
    cleaned = []
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInput(f"texts[{position}] is not a string.")
        if not text.strip():
            raise InvalidInput(f"texts[{position}] is empty.")
        if "\x00" in text:
            raise InvalidInput(f"texts[{position}] contains a NUL character.")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidInput(f"texts[{position}] is longer than {MAX_TEXT_CHARS} characters.")
        cleaned.append(text)
    return cleaned


def _artifact_problem(version) -> str:
    """Why the version's artifact certainly cannot be loaded, or "". Loading
    itself happens in the worker (heavy imports stay out of the web process);
    a load failure there fails the report with its reason."""
    from registry.artifacts import blob_exists

    if not version.labels:
        return f"{version} has no labels recorded; its artifact was never loaded successfully."
    try:
        present = blob_exists(version.artifact_key)
    except Exception:  # a storage outage is the worker's problem, not a verdict
        logger.exception("could not check the artifact of %s", version)
        return ""
    if not present:
        return f"The artifact of {version} ({version.artifact_key}) is missing from the artifact store."
    return ""


@dataclass
class ReportPlan:
    """A checked request: what report_request writes and the estimate API shows."""

    method: str
    explainer: Any
    texts: list[str] | None
    n_texts: int
    params: dict
    specs: list[dict]
    estimate: dict


def _clean_sample(sample: Any, *, dataset, max_texts: int) -> dict | None:
    if sample is None:
        return None
    if not isinstance(sample, dict) or set(sample) - {"n", "seed"} or "n" not in sample:
        raise InvalidInput('sample must be an object {"n": texts to draw, "seed": optional integer}.', field="sample")
    if dataset is None:
        raise InvalidInput("sample draws texts stratified by label: it needs a dataset.", field="sample")
    n, seed = sample["n"], sample.get("seed", 0)
    for name, value in (("n", n), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "n" else 0):
            raise InvalidInput(
                f"sample.{name} must be a whole number of at least {1 if name == 'n' else 0}.", field=f"sample.{name}"
            )
    if n > max_texts:
        raise InvalidInput(f"sample.n must be at most {max_texts:,} (GLASSBOX_MAX_REPORT_TEXTS).", field="sample.n")
    if n > dataset.row_count:
        raise InvalidInput(
            f"sample.n is {n:,} but dataset {dataset} has only {dataset.row_count:,} rows.", field="sample.n"
        )
    return {"n": n, "seed": seed}


def report_plan(
    *,
    actor,
    version,
    method: str,
    dataset=None,
    texts: list[str] | None = None,
    params: dict | None = None,
    sample: dict | None = None,
) -> ReportPlan:
    """Check everything that can be checked without loading the model and
    say how long it would take. Raises InvalidInput naming the field at fault;
    over GLASSBOX_MAX_REPORT_TEXTS, code report_too_large with the estimate
    and the sample to ask for instead."""
    if not version.model.access_of(actor).request_reports:
        record_refusal(actor=actor, action=AuditAction.EXPLANATION_REQUEST, reason="not permitted", obj=version)
        raise NotPermitted("Only engineers and reviewers may request explanation reports.")

    methods = selectors.known_methods()
    if method not in methods:
        raise InvalidInput(f"Unknown method {str(method)[:40]!r}; use one of {', '.join(methods)}.", field="method")
    explainer = selectors.explainer_for(method)
    refusal = explainer.flavor_refusal(version.flavor)
    if refusal is not None:
        raise refusal

    if (dataset is None) == (texts is None):
        raise InvalidInput("Give either a dataset id or a list of texts (one of the two).", field="dataset")
    max_texts = settings.GLASSBOX_MAX_REPORT_TEXTS
    sample = _clean_sample(sample, dataset=dataset, max_texts=max_texts)
    if texts is not None:
        texts = _clean_texts(texts)
        if explainer.is_global:
            raise InvalidInput(
                f"{method} needs a dataset: it measures a drop in accuracy against true labels.", field="dataset"
            )
        n_texts = len(texts)
    else:
        unknown = sorted(set(dataset.labels) - set(version.labels))
        if unknown:
            raise InvalidInput(
                f"Dataset {dataset} has labels the model does not know: {', '.join(unknown)} "
                f"(the model's labels are {', '.join(version.labels) or 'unknown'}).",
                unknown_labels=unknown,
                field="dataset",
            )
        if dataset.row_count == 0:
            raise InvalidInput(f"Dataset {dataset} has no rows.", field="dataset")
        n_texts = sample["n"] if sample else dataset.row_count

    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidInput("params must be a JSON object.", field="params")
    reserved = sorted(set(params) & set(RESERVED_PARAMS))
    if reserved:
        raise InvalidInput(f"{', '.join(reserved)} is not a parameter you can set.", field=f"params.{reserved[0]}")
    params = dict(explainer.validate_params(dict(params)))
    for name in RESERVED_PARAMS:
        params.pop(name, None)  # filled in by the worker, never stored
    params = json_safe(params)
    estimate = selectors.report_estimate(version=version, explainer=explainer, params=params, n_texts=n_texts)
    if n_texts > max_texts:
        suggestion = {"n": min(max_texts, 500), "seed": 0}
        raise InvalidInput(
            f"{n_texts:,} texts is more than the {max_texts:,} a report may explain (about "
            f'{human_duration(estimate["seconds"])} of work); add "sample": {{"n": {suggestion["n"]}, "seed": 0}} '
            "to the request to explain texts drawn at random, stratified by label.",
            code="report_too_large",
            field="dataset",
            max_texts=max_texts,
            estimate=estimate,
            sample=suggestion,
        )
    if sample:
        # Which texts, recorded with the parameters; the worker draws the same rows again.
        params["sample"] = sample
    specs = [json_safe(spec) for spec in explainer.plan_chunks(n_texts, params)]
    if not specs:
        raise InvalidInput("Nothing to explain: the explainer planned no work for these texts.")
    return ReportPlan(
        method=method, explainer=explainer, texts=texts, n_texts=n_texts, params=params, specs=specs, estimate=estimate
    )


def human_duration(seconds: float) -> str:
    """A rough human duration: 40 s, 12 min, 3.5 h, 2.1 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def report_request(
    *,
    actor,
    version,
    method: str,
    dataset=None,
    texts: list[str] | None = None,
    params: dict | None = None,
    sample: dict | None = None,
) -> ExplanationReport:
    """Check the request (report_plan), then write the report, its estimate
    and its chunks and enqueue it after commit. A version whose artifact is
    known to be unloadable gets a failed report saying why."""
    plan = report_plan(
        actor=actor, version=version, method=method, dataset=dataset, texts=texts, params=params, sample=sample
    )
    problem = _artifact_problem(version)

    with transaction.atomic():
        report = ExplanationReport.objects.create(
            version=version,
            method=method,
            dataset=dataset,
            texts=plan.texts or [],
            text_count=plan.n_texts,
            params=plan.params,
            estimate=plan.estimate,
            requested_by=actor,
        )
        ExplanationChunk.objects.bulk_create(
            ExplanationChunk(report=report, index=index, spec=spec) for index, spec in enumerate(plan.specs)
        )
        record_event(
            actor=actor,
            action=AuditAction.EXPLANATION_REQUEST,
            obj=report,
            changes={"after": {"status": report.status, "method": method}},
            detail={
                "dataset": dataset.pk if dataset is not None else None,
                "texts": plan.n_texts,
                "chunks": len(plan.specs),
                "params": plan.params,
                "estimate_seconds": plan.estimate["seconds"],
            },
        )
        if problem:
            report = report_move(
                actor=None, report=report, to_status=Status.FAILED, action=AuditAction.EXPLANATION_FAIL, error=problem
            )
        else:
            report_id = report.pk
            transaction.on_commit(lambda: _enqueue("run_report", report_id))
    return report


def report_cancel(*, actor, report: ExplanationReport) -> ExplanationReport:
    refusal = report.cancel_refusal(actor)
    if isinstance(refusal, NotPermitted):
        record_refusal(actor=actor, action=AuditAction.EXPLANATION_CANCEL, reason=refusal.message, obj=report)
    if refusal is not None:
        raise refusal
    # Chunks still queued see the status and skip; running ones stop at their
    # next progress report.
    return report_move(actor=actor, report=report, to_status=Status.CANCELLED, action=AuditAction.EXPLANATION_CANCEL)


# --- the one transition service --------------------------------------------------------


def report_move(
    *,
    actor,
    report: ExplanationReport,
    to_status: str,
    action: AuditAction,
    error: str = "",
    fields: dict[str, Any] | None = None,
    detail: dict | None = None,
) -> ExplanationReport:
    """The one way a report's status changes: under the row lock, within
    ALLOWED_TRANSITIONS, with the timestamps that go with it and an event."""
    fields = dict(fields or {})
    with transaction.atomic():
        locked = (
            ExplanationReport.objects.select_for_update(of=("self",)).select_related("version__model").get(pk=report.pk)
        )
        if not locked.can_move_to(to_status):
            raise Conflict(f"{locked} is {locked.status}; it cannot become {to_status}.", current_status=locked.status)
        before = locked.status
        now = timezone.now()
        fields["status"] = to_status
        if to_status == Status.RUNNING:
            fields.update(started_at=now, heartbeat_at=now)
        if to_status in ExplanationReport.FINISHED:
            fields["finished_at"] = now
            timings = {**locked.timings, **fields.get("timings", {})}
            if locked.started_at:
                timings["wall_seconds"] = round((now - locked.started_at).total_seconds(), 3)
            fields["timings"] = timings
        if to_status == Status.SUCCEEDED:
            fields["progress"] = 100
        if error:
            fields["error"] = error[:4000]
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.save(update_fields=list(fields))
        record_event(
            actor=actor,
            action=action,
            obj=locked,
            changes={"before": {"status": before}, "after": {"status": to_status}},
            detail={**(detail or {}), **({"reason": error[:500]} if error else {})},
        )
    for name in ("status", "started_at", "finished_at", "heartbeat_at", "progress", "error", "timings"):
        setattr(report, name, getattr(locked, name))
    return locked


def report_fail(*, report_id: int, reason: str) -> bool:
    """Fail a report for a reason found by a worker. Finished reports stay as
    they are (a late failure of a duplicate chunk changes nothing)."""
    report = ExplanationReport.objects.filter(pk=report_id).first()
    if report is None:
        return False
    try:
        report_move(
            actor=None, report=report, to_status=Status.FAILED, action=AuditAction.EXPLANATION_FAIL, error=reason
        )
    except Conflict:
        return False
    return True


# --- what the workers do -------------------------------------------------------------


def report_start(*, report_id: int) -> ExplanationReport | None:
    """queued -> running. None when there is nothing to start (cancelled,
    already running or finished: a redelivered message)."""
    report = ExplanationReport.objects.filter(pk=report_id).first()
    if report is None or report.status != Status.QUEUED:
        return None
    try:
        return report_move(
            actor=None,
            report=report,
            to_status=Status.RUNNING,
            action=AuditAction.EXPLANATION_START,
            fields={
                "timings": {
                    **report.timings,
                    "queued_seconds": round((timezone.now() - report.created_at).total_seconds(), 3),
                }
            },
        )
    except Conflict:
        return None


@transaction.atomic
def report_fan_out(*, report_id: int) -> list[int]:
    """Send every chunk of a running report that was never sent. Idempotent:
    a redelivered run_report sends nothing twice."""
    report = ExplanationReport.objects.select_for_update().filter(pk=report_id, status=Status.RUNNING).first()
    if report is None:
        return []
    chunk_ids = list(
        report.chunks.select_for_update()
        .filter(status=ChunkStatus.PENDING, enqueued_at__isnull=True)
        .order_by("index")
        .values_list("pk", flat=True)
    )
    if chunk_ids:
        ExplanationChunk.objects.filter(pk__in=chunk_ids).update(enqueued_at=timezone.now())
        transaction.on_commit(lambda: _enqueue_chunks(chunk_ids))
    return chunk_ids


def _lock_report_and_chunk(chunk_id: int) -> tuple[ExplanationReport, ExplanationChunk] | None:
    """Lock a chunk's report, then the chunk (the order every lock here
    follows). None when the chunk is gone."""
    report_id = ExplanationChunk.objects.filter(pk=chunk_id).values_list("report_id", flat=True).first()
    if report_id is None:
        return None
    report = (
        ExplanationReport.objects.select_for_update(of=("self",)).select_related("version__model").get(pk=report_id)
    )
    chunk = ExplanationChunk.objects.select_for_update().get(pk=chunk_id)
    return report, chunk


@transaction.atomic
def chunk_start(*, chunk_id: int, worker: str) -> ExplanationChunk | None:
    """Claim a chunk for this worker. None when it must not run: its report
    is no longer running (cancelled, failed) or it is already done."""
    locked = _lock_report_and_chunk(chunk_id)
    if locked is None:
        return None
    report, chunk = locked
    if report.status != Status.RUNNING or chunk.status == ChunkStatus.DONE:
        return None
    max_attempts = settings.GLASSBOX_EXPLANATION_MAX_ATTEMPTS
    if chunk.attempts >= max_attempts:
        report_move(
            actor=None,
            report=report,
            to_status=Status.FAILED,
            action=AuditAction.EXPLANATION_FAIL,
            error=f"Chunk {chunk.index} was started {chunk.attempts} times without finishing "
            f"(last worker: {chunk.worker or 'unknown'}); giving up.",
        )
        return None
    now = timezone.now()
    chunk.status = ChunkStatus.RUNNING
    chunk.attempts += 1
    chunk.worker = worker[:200]
    chunk.started_at = now
    chunk.heartbeat_at = now
    chunk.progress = 0.0
    chunk.save(update_fields=["status", "attempts", "worker", "started_at", "heartbeat_at", "progress"])
    ExplanationReport.objects.filter(pk=report.pk).update(heartbeat_at=now)
    chunk.report = report
    return chunk


def chunk_heartbeat(*, chunk_id: int, worker: str) -> None:
    now = timezone.now()
    updated = ExplanationChunk.objects.filter(pk=chunk_id, status=ChunkStatus.RUNNING, worker=worker[:200]).update(
        heartbeat_at=now
    )
    if updated:
        ExplanationReport.objects.filter(chunks__pk=chunk_id, status=Status.RUNNING).update(heartbeat_at=now)


def chunk_progress(*, chunk_id: int, report_id: int, worker: str, fraction: float) -> str:
    """Store a chunk's progress and the report's aggregate; returns the
    report's status so that a running chunk notices a cancel. Plain updates
    in autocommit: progress is advisory and must never wait on a lock."""
    now = timezone.now()
    fraction = min(max(float(fraction), 0.0), 1.0) if math.isfinite(float(fraction)) else 0.0
    ExplanationChunk.objects.filter(pk=chunk_id, status=ChunkStatus.RUNNING, worker=worker[:200]).update(
        progress=fraction, heartbeat_at=now
    )
    _update_report_progress(report_id, now)
    return ExplanationReport.objects.filter(pk=report_id).values_list("status", flat=True).first() or ""


def _update_report_progress(report_id: int, now) -> None:
    done_as_one = Case(When(status=ChunkStatus.DONE, then=Value(1.0)), default=F("progress"), output_field=FloatField())
    mean = ExplanationChunk.objects.filter(report_id=report_id).aggregate(mean=Avg(done_as_one))["mean"] or 0.0
    ExplanationReport.objects.filter(pk=report_id, status=Status.RUNNING).update(
        progress=int(CHUNK_SHARE * mean), heartbeat_at=now
    )


@transaction.atomic
def chunk_finish(*, chunk_id: int, result: dict) -> bool:
    """Store a chunk's result. Returns True when this was the last chunk of
    the report: finalize_report is then enqueued (exactly once: every finish
    holds the report's row lock and a chunk is finished only once)."""
    locked = _lock_report_and_chunk(chunk_id)
    if locked is None:
        return False
    report, chunk = locked
    if report.status != Status.RUNNING or chunk.status == ChunkStatus.DONE:
        return False  # cancelled meanwhile, or a duplicate run that came second
    now = timezone.now()
    chunk.status = ChunkStatus.DONE
    chunk.result = json_safe(result)
    chunk.progress = 1.0
    chunk.finished_at = now
    chunk.heartbeat_at = now
    chunk.save(update_fields=["status", "result", "progress", "finished_at", "heartbeat_at"])
    _update_report_progress(report.pk, now)
    if selectors.unfinished_chunks(report.pk).exists():
        return False
    transaction.on_commit(lambda: _enqueue("finalize_report", report.pk))
    return True


@transaction.atomic
def report_finalize_start(*, report_id: int) -> ExplanationReport | None:
    """Claim finalisation. None when the report is not running or still has
    unfinished chunks (a duplicate or premature message)."""
    report = (
        ExplanationReport.objects.select_for_update(of=("self",))
        .select_related("version__model", "dataset")
        .filter(pk=report_id)
        .first()
    )
    if report is None or report.status != Status.RUNNING or selectors.unfinished_chunks(report_id).exists():
        return None
    if report.finalize_attempts >= settings.GLASSBOX_EXPLANATION_MAX_ATTEMPTS:
        report_move(
            actor=None,
            report=report,
            to_status=Status.FAILED,
            action=AuditAction.EXPLANATION_FAIL,
            error=f"Combining the results was started {report.finalize_attempts} times without finishing; giving up.",
        )
        return None
    report.finalize_attempts += 1
    report.heartbeat_at = timezone.now()
    report.progress = CHUNK_SHARE
    report.save(update_fields=["finalize_attempts", "heartbeat_at", "progress"])
    return report


def report_heartbeat(*, report_id: int) -> None:
    ExplanationReport.objects.filter(pk=report_id, status=Status.RUNNING).update(heartbeat_at=timezone.now())


def report_succeed(*, report_id: int, results: dict, fidelity: dict, timings: dict) -> bool:
    report = ExplanationReport.objects.filter(pk=report_id).first()
    if report is None:
        return False
    results, fidelity = json_safe(results), json_safe(fidelity)
    # Digests of what is stored, recorded on the row and in the chained event:
    # a later change to either shows in `audit_verify --deep`.
    digests = {"results_sha256": content_digest(results), "fidelity_sha256": content_digest(fidelity)}
    try:
        report_move(
            actor=None,
            report=report,
            to_status=Status.SUCCEEDED,
            action=AuditAction.EXPLANATION_SUCCEED,
            fields={"results": results, "fidelity": fidelity, "timings": json_safe(timings), **digests},
            detail={"timings": json_safe(timings), **digests},
        )
    except Conflict:
        return False  # cancelled or failed while we combined
    return True


# --- the reaper -----------------------------------------------------------------------


def reap_stale_work(*, now=None) -> dict[str, int]:
    """Finish what dead workers left behind. Run periodically (Celery beat):
    - a running chunk whose heartbeat stopped is sent again (or, past the
      attempt limit, its report fails with the reason);
    - a pending chunk whose message was never sent, or sent long ago, is sent again;
    - a report whose chunks are all done but whose finalisation went quiet is finalised again;
    - a queued report whose message was lost is started again.
    Every task is idempotent, so sending one twice costs time, never correctness."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.GLASSBOX_EXPLANATION_STALE_SECONDS)
    lost_before = now - timedelta(seconds=settings.GLASSBOX_EXPLANATION_LOST_MESSAGE_SECONDS)
    counts = {"chunks_requeued": 0, "reports_failed": 0, "finalize_requeued": 0, "reports_restarted": 0}

    running = Q(report__status=Status.RUNNING)
    stale_chunks = ExplanationChunk.objects.filter(running, status=ChunkStatus.RUNNING, heartbeat_at__lt=stale_before)
    lost_chunks = ExplanationChunk.objects.filter(running, status=ChunkStatus.PENDING).filter(
        Q(enqueued_at__isnull=True, report__started_at__lt=stale_before) | Q(enqueued_at__lt=lost_before)
    )
    for chunk_id in list(stale_chunks.values_list("pk", flat=True)) + list(lost_chunks.values_list("pk", flat=True)):
        outcome = _requeue_chunk(chunk_id=chunk_id, stale_before=stale_before, lost_before=lost_before)
        if outcome == "requeued":
            counts["chunks_requeued"] += 1
        elif outcome == "failed":
            counts["reports_failed"] += 1

    quiet = ExplanationReport.objects.filter(status=Status.RUNNING, heartbeat_at__lt=stale_before).exclude(
        chunks__status__in=[ChunkStatus.PENDING, ChunkStatus.RUNNING]
    )
    for report_id in quiet.values_list("pk", flat=True):
        # Bump the heartbeat so that one quiet period sends one message.
        if ExplanationReport.objects.filter(pk=report_id, status=Status.RUNNING, heartbeat_at__lt=stale_before).update(
            heartbeat_at=now
        ):
            _enqueue("finalize_report", report_id)
            counts["finalize_requeued"] += 1

    for report_id in ExplanationReport.objects.filter(status=Status.QUEUED, created_at__lt=lost_before).values_list(
        "pk", flat=True
    ):
        _enqueue("run_report", report_id)
        counts["reports_restarted"] += 1
    if any(counts.values()):
        logger.warning("reaper: %s", counts)
    return counts


@transaction.atomic
def _requeue_chunk(*, chunk_id: int, stale_before, lost_before) -> str:
    locked = _lock_report_and_chunk(chunk_id)
    if locked is None:
        return ""
    report, chunk = locked
    if report.status != Status.RUNNING:
        return ""
    # Check again under the locks: the chunk may have moved on meanwhile.
    stale = chunk.status == ChunkStatus.RUNNING and chunk.heartbeat_at and chunk.heartbeat_at < stale_before
    lost = chunk.status == ChunkStatus.PENDING and (
        (chunk.enqueued_at is None and report.started_at and report.started_at < stale_before)
        or (chunk.enqueued_at is not None and chunk.enqueued_at < lost_before)
    )
    if not (stale or lost):
        return ""
    max_attempts = settings.GLASSBOX_EXPLANATION_MAX_ATTEMPTS
    if chunk.attempts >= max_attempts:
        report_move(
            actor=None,
            report=report,
            to_status=Status.FAILED,
            action=AuditAction.EXPLANATION_FAIL,
            error=f"Chunk {chunk.index} was lost {chunk.attempts} times (last worker: "
            f"{chunk.worker or 'unknown'}, silent since {chunk.heartbeat_at:%H:%M:%S} UTC); giving up.",
        )
        return "failed"
    previous_worker = chunk.worker
    chunk.status = ChunkStatus.PENDING
    chunk.worker = ""
    chunk.progress = 0.0
    chunk.heartbeat_at = None
    chunk.enqueued_at = timezone.now()
    chunk.save(update_fields=["status", "worker", "progress", "heartbeat_at", "enqueued_at"])
    record_event(
        actor=None,
        action=AuditAction.EXPLANATION_REQUEUE,
        obj=report,
        detail={
            "chunk": chunk.index,
            "attempts": chunk.attempts,
            "worker": previous_worker,
            "reason": "worker silent" if stale else "message lost",
        },
    )
    transaction.on_commit(lambda: _enqueue_chunks([chunk_id]))
    return "requeued"


# --- enqueueing ------------------------------------------------------------------------


GPU_QUEUE = "explanations-gpu"


def explanation_queue(method: str) -> str:
    """The queue of a method's report tasks: `explanations-gpu` for the methods
    in GLASSBOX_GPU_METHODS (workers on GPU machines consume it), else `explanations`."""
    from django.conf import settings

    return GPU_QUEUE if method in settings.GLASSBOX_GPU_METHODS else "explanations"


def _report_queue(report_id: int) -> str:
    method = ExplanationReport.objects.filter(pk=report_id).values_list("method", flat=True).first()
    return explanation_queue(method or "")


def _enqueue(task_name: str, report_id: int) -> None:
    from explanations import tasks

    try:
        getattr(tasks, task_name).apply_async(args=[report_id], queue=_report_queue(report_id))
    except Exception:  # a broker outage must not undo a commit; the reaper sends it later
        logger.exception("could not enqueue %s(%s)", task_name, report_id)


def _enqueue_chunks(chunk_ids: list[int]) -> None:
    from celery import group

    from explanations.tasks import run_chunk

    try:
        report_id = ExplanationChunk.objects.filter(pk=chunk_ids[0]).values_list("report_id", flat=True).first()
        queue = _report_queue(report_id) if report_id is not None else "explanations"
        group(run_chunk.s(chunk_id).set(queue=queue) for chunk_id in chunk_ids).apply_async()
    except Exception:
        logger.exception("could not enqueue chunks %s", chunk_ids)


def failure_reason(exc: BaseException) -> str:
    """An exception as a report's error: one line, its type and first message line."""
    if isinstance(exc, GlassboxError):
        return exc.message
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:1000] if text else type(exc).__name__
