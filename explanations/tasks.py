"""Explanation jobs for the workers: thin, idempotent, keyed by primary key.

run_report starts a report and fans its chunks out as a Celery group (there
is no result backend, so no chord); the run_chunk that finishes the last
chunk enqueues finalize_report (combine + fidelity). Every task acks late and
is re-queued when its worker is lost; a worker killed outright is covered by
reap_stale_work, which Celery beat runs every GLASSBOX_REAPER_INTERVAL_SECONDS
(15 by default).
"""

import logging
import os
import threading
import time
from collections.abc import Callable

from celery import Task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

from explanations import selectors, services
from explanations.models import ExplanationChunk, ExplanationReport

logger = logging.getLogger(__name__)

# Transient trouble (storage, database connection) is retried; anything else
# fails the report with its reason.
_RETRY = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OSError, OperationalError, InterfaceError),
    "retry_backoff": True,
    "max_retries": 2,
}


class ReportStopped(Exception):
    """The report was cancelled (or failed elsewhere) while a chunk ran."""


class ReportTask(Task):
    def report_id_for(self, args, kwargs) -> int | None:
        return args[0] if args else kwargs.get("report_id")

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        report_id = self.report_id_for(args, kwargs)
        if report_id is not None:
            reason = f"{self.name.rsplit('.', 1)[-1]} failed: {services.failure_reason(exc)}"
            services.report_fail(report_id=report_id, reason=reason)


class ChunkTask(ReportTask):
    def report_id_for(self, args, kwargs) -> int | None:
        chunk_id = args[0] if args else kwargs.get("chunk_id")
        return ExplanationChunk.objects.filter(pk=chunk_id).values_list("report_id", flat=True).first()


class Heartbeat:
    """Calls `beat` every `interval` seconds in a thread while a block runs,
    so a long model computation still shows its worker is alive."""

    def __init__(self, beat: Callable[[], None], interval: float | None = None):
        self.beat = beat
        self.interval = interval or settings.GLASSBOX_EXPLANATION_HEARTBEAT_SECONDS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="explanation-heartbeat", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.beat()
                except Exception:
                    logger.exception("heartbeat failed")
        finally:
            connection.close()  # this thread's own connection


def _worker_name(task: Task) -> str:
    return f"{task.request.hostname or 'local'}:{os.getpid()}"


@shared_task(bind=True, base=ReportTask, **_RETRY)
def run_report(self, report_id: int) -> dict:
    """queued -> running, prove the model loads, then send every chunk."""
    report = services.report_start(report_id=report_id)
    if report is None:
        # A redelivered message: just make sure no chunk was left unsent.
        return {"started": False, "sent": len(services.report_fan_out(report_id=report_id))}
    started = time.perf_counter()
    try:
        selectors.report_predictor(report)
    except OSError:
        raise  # retried, then on_failure
    except Exception as exc:
        services.report_fail(
            report_id=report_id, reason=f"The model could not be loaded: {services.failure_reason(exc)}"
        )
        return {"started": False, "load_error": str(exc)[:200]}
    logger.info("report %s: model loaded in %.2fs", report_id, time.perf_counter() - started)
    return {"started": True, "sent": len(services.report_fan_out(report_id=report_id))}


@shared_task(bind=True, base=ChunkTask, **_RETRY)
def run_chunk(self, chunk_id: int) -> dict:
    worker = _worker_name(self)
    chunk = services.chunk_start(chunk_id=chunk_id, worker=worker)
    if chunk is None:
        return {"ran": False}
    report = chunk.report
    explainer = selectors.explainer_for(report.method)
    predictor = selectors.report_predictor(report)
    texts, labels = selectors.report_inputs(report)
    params = selectors.run_params(report)
    last = {"at": 0.0}

    def progress(fraction: float) -> None:
        # At most one database round trip a second, whatever the explainer's pace.
        now = time.monotonic()
        if now - last["at"] < 1.0:
            return
        last["at"] = now
        status = services.chunk_progress(chunk_id=chunk_id, report_id=report.pk, worker=worker, fraction=fraction)
        if status != ExplanationReport.Status.RUNNING:
            raise ReportStopped(status)

    started = time.perf_counter()
    try:
        with Heartbeat(lambda: services.chunk_heartbeat(chunk_id=chunk_id, worker=worker)):
            result = explainer.run_chunk(predictor, texts, labels, chunk.spec, params, progress=progress)
    except ReportStopped as stopped:
        logger.info("chunk %s of report %s stopped: report is %s", chunk.index, report.pk, stopped)
        return {"ran": False, "stopped": str(stopped)}
    last_chunk = services.chunk_finish(chunk_id=chunk_id, result=result)
    seconds = time.perf_counter() - started
    logger.info(
        "chunk %s of report %s done in %.2fs%s", chunk.index, report.pk, seconds, " (last)" if last_chunk else ""
    )
    return {"ran": True, "seconds": round(seconds, 3), "last": last_chunk}


@shared_task(bind=True, base=ReportTask, **_RETRY)
def finalize_report(self, report_id: int) -> dict:
    """Combine the chunk results, measure fidelity, succeed."""
    report = services.report_finalize_start(report_id=report_id)
    if report is None:
        return {"finalized": False}
    explainer = selectors.explainer_for(report.method)
    clock = time.perf_counter()
    predictor = selectors.report_predictor(report)
    texts, labels = selectors.report_inputs(report)
    params = selectors.run_params(report)
    load_seconds = time.perf_counter() - clock
    with Heartbeat(lambda: services.report_heartbeat(report_id=report_id)):
        clock = time.perf_counter()
        results = explainer.combine(predictor, texts, labels, selectors.chunk_results(report), params)
        combine_seconds = time.perf_counter() - clock
        clock = time.perf_counter()
        try:
            fidelity = explainer.fidelity(predictor, texts, labels, results, params)
        except Exception as exc:
            # The attributions stand without their fidelity; the page says why it is missing.
            logger.exception("fidelity of report %s failed", report_id)
            fidelity = {"error": services.failure_reason(exc)}
        fidelity_seconds = time.perf_counter() - clock
    chunk_seconds = selectors.chunk_timings(report)
    timings = {
        "chunks": len(chunk_seconds),
        "chunk_seconds": chunk_seconds,
        "chunk_seconds_total": round(sum(s for s in chunk_seconds if s), 3),
        "model_load_seconds": round(load_seconds, 3),
        "combine_seconds": round(combine_seconds, 3),
        "fidelity_seconds": round(fidelity_seconds, 3),
    }
    succeeded = services.report_succeed(report_id=report_id, results=results, fidelity=fidelity, timings=timings)
    logger.info("report %s %s", report_id, "succeeded" if succeeded else "was finished elsewhere")
    return {"finalized": succeeded}


@shared_task(acks_late=True)
def reap_stale_work() -> dict:
    return services.reap_stale_work()
