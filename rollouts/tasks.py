"""Rollout and monitoring jobs for the workers: thin, idempotent, keyed by
primary key, run periodically by celery beat (see CELERY_BEAT_SCHEDULE)."""

import logging

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError

logger = logging.getLogger(__name__)

# --- rollout analysis (rollouts/analysis.py) -----------------------------------


class _AnalysisTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # The job crashed, not the candidate: recorded, and the rollout waits
        # (it never advances without a successful analysis).
        rollout_id = args[0] if args else kwargs.get("rollout_id")
        if rollout_id is not None:
            from rollouts.services import rollout_analysis_failed

            rollout_analysis_failed(rollout_id=rollout_id, reason=f"{type(exc).__name__}: {exc}")


@shared_task(ignore_result=True)
def analyse_rollouts() -> int:
    """Celery beat, every GLASSBOX_ROLLOUT_TICK_SECONDS: one analyse_rollout
    per rollout whose interval is up, and retire previous versions whose
    rollback time is over. Cheap and idempotent: re-running it only enqueues
    jobs that re-check they are due."""
    from django.utils import timezone

    from rollouts.selectors import rollouts_due_for_analysis
    from rollouts.services import serving_retire_previous

    due = rollouts_due_for_analysis(now=timezone.now())
    for rollout_id in due:
        analyse_rollout.delay(rollout_id)
    retired = serving_retire_previous()
    if retired:
        logger.info("retired previous versions: %s", ", ".join(map(str, retired)))
    return len(due)


@shared_task(
    base=_AnalysisTask,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=2,
)
def analyse_rollout(rollout_id: int) -> str:
    """Analyse one rollout's latest interval, if it is still due (a
    re-delivered or duplicate message finds it analysed and does nothing)."""
    from django.utils import timezone

    from rollouts.analysis import rollout_analyse
    from rollouts.models import Rollout
    from rollouts.selectors import rollout_is_due

    rollout = Rollout.objects.filter(pk=rollout_id).first()
    now = timezone.now()
    if rollout is None or not rollout_is_due(rollout, now=now):
        return "not due"
    run = rollout_analyse(rollout=rollout, now=now)
    if run is None:
        return "nothing to analyse"
    logger.info("rollout #%s step %s: %s -> %s", rollout_id, run.step_index, run.verdict, run.action)
    return f"{run.verdict}: {run.action}"


# --- monitoring and alerts (rollouts.services.monitor_check) -------------------


@shared_task(acks_late=True, ignore_result=True)
def check_monitors() -> int:
    """Raise and clear alerts of deployed versions (celery beat, every
    GLASSBOX_ROLLOUT_TICK_SECONDS). Idempotent: an open alert is never
    raised twice, so a re-delivered tick changes nothing."""
    from rollouts.services import monitor_check

    changed = monitor_check()
    if changed:
        logger.info("monitoring: %d alert(s) raised or cleared", len(changed))
    return len(changed)


@shared_task(acks_late=True, ignore_result=True)
def check_certifications() -> int:
    """Raise the alerts of deployed versions past their re-certification date
    or refused re-certification, clear those re-certified (celery beat, every
    GLASSBOX_CERTIFICATION_CHECK_SECONDS). Idempotent."""
    from rollouts.services import certification_check

    changed = certification_check()
    if changed:
        logger.info("certification: %d alert(s) raised or cleared", len(changed))
    return len(changed)


# --- feedback summaries (rollouts.services.feedback_summarize) -----------------


@shared_task(acks_late=True, ignore_result=True)
def summarize_feedback() -> int:
    """Audit the feedback stored since the last run, one summary per sender
    and model (celery beat, every GLASSBOX_FEEDBACK_SUMMARY_SECONDS).
    Idempotent: a row is marked in the transaction that audits it, so a
    re-delivered or overlapping run finds nothing left to summarize."""
    from rollouts.services import feedback_summarize

    events = feedback_summarize()
    if events:
        logger.info("feedback: %d summary event(s) recorded", len(events))
    return len(events)


# --- retention of prediction logs (rollouts/retention.py) ------------------------


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    max_retries=2,
)
def apply_prediction_retention() -> int:
    """Archive and delete the prediction logs past their tier's retention
    (celery beat, every GLASSBOX_PREDICTION_RETENTION_SECONDS). Idempotent
    and resumable: a run killed anywhere (or re-delivered after a lost
    worker) continues where it stopped; a second run at once does nothing."""
    from rollouts.retention import retention_apply

    results = retention_apply()
    deleted = 0
    for result in results:
        if result.event is not None:
            deleted += result.event.detail["rows_deleted"]
            logger.info("retention of %s: %s rows deleted", result.model.name, result.event.detail["rows_deleted"])
        if result.failure:
            logger.error("retention of %s: archive failed, nothing deleted: %s", result.model.name, result.failure)
    return deleted
