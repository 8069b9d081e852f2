"""Periodic upkeep of the platform's own rows (Celery beat)."""

from celery import shared_task

from glassbox.idempotency import purge_expired_records


@shared_task
def purge_idempotency_records() -> int:
    """Expired Idempotency-Key records go (their answers may hold report and upload bodies)."""
    return purge_expired_records()
