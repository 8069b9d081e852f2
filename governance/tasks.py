"""Scheduled checks of the audit trail, for celery beat (CELERY_BEAT_SCHEDULE)."""

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def deep_verify() -> int:
    """Check the chain and recompute every bound digest (reports, datasets,
    artifacts); raise an integrity alert for each mismatch. Returns how many
    alerts were raised. Idempotent: a subject already alerted on is left be."""
    from governance.audit_deep import Mismatch, integrity_alerts_raise, verify_deep
    from governance.audit_integrity import verify_chain

    _, chain_break = verify_chain()
    result = verify_deep()
    mismatches = list(result.mismatches)
    if chain_break is not None:
        mismatches.insert(0, Mismatch(f"audit event #{chain_break.event_id}", chain_break.reason))
    for mismatch in mismatches:
        logger.error("audit deep verification: %s", mismatch)
    return len(integrity_alerts_raise(mismatches=mismatches))
