"""The public vocabulary of events that leave the platform (webhooks and
e-mail), mapped from the audit trail's actions in ONE table.

The audit trail's action names are internal and may be refined; webhook
receivers need names that stay put. EVENT_FOR_ACTION is the only place that
knows both. governance.audit hands every committed event whose action is a
key here to the dispatcher; no other module decides what is published.
"""

from governance.audit_actions import AuditAction

# The webhook event types, as subscribers name them.
VERSION_REGISTERED = "version.registered"
REVIEW_OPENED = "review.opened"
REVIEW_DECIDED = "review.decided"
VERSION_APPROVED = "version.approved"
VERSION_REJECTED = "version.rejected"
ROLLOUT_STARTED = "rollout.started"
ROLLOUT_STEP = "rollout.step"
ROLLOUT_PAUSED = "rollout.paused"
ROLLOUT_ABORTED = "rollout.aborted"
ROLLOUT_PROMOTED = "rollout.promoted"
ROLLOUT_ROLLED_BACK = "rollout.rolled_back"
ALERT_RAISED = "alert.raised"
ALERT_CLEARED = "alert.cleared"

# The audit action a rollback records (kept under this name for the mail's table).
ROLLBACK_ACTION = AuditAction.ROLLOUT_ROLLBACK

# audit action -> public event type. Several actions may map to one type
# (both verdicts are "review.decided").
EVENT_FOR_ACTION: dict[str, str] = {
    AuditAction.VERSION_CREATE: VERSION_REGISTERED,
    AuditAction.REVIEW_OPEN: REVIEW_OPENED,
    AuditAction.REVIEW_APPROVE: REVIEW_DECIDED,
    AuditAction.REVIEW_REJECT: REVIEW_DECIDED,
    AuditAction.VERSION_APPROVE: VERSION_APPROVED,
    AuditAction.VERSION_REJECT: VERSION_REJECTED,
    AuditAction.ROLLOUT_START: ROLLOUT_STARTED,
    AuditAction.ROLLOUT_ADVANCE: ROLLOUT_STEP,
    AuditAction.ROLLOUT_PAUSE: ROLLOUT_PAUSED,
    AuditAction.ROLLOUT_ABORT: ROLLOUT_ABORTED,
    AuditAction.ROLLOUT_PROMOTE: ROLLOUT_PROMOTED,
    ROLLBACK_ACTION: ROLLOUT_ROLLED_BACK,
    AuditAction.MONITOR_ALERT_RAISED: ALERT_RAISED,
    AuditAction.MONITOR_ALERT_CLEARED: ALERT_CLEARED,
}

EVENT_TYPES: tuple[str, ...] = tuple(dict.fromkeys(EVENT_FOR_ACTION.values()))


def event_type_of(action: str) -> str | None:
    return EVENT_FOR_ACTION.get(str(action))
