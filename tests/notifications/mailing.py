"""Running the dispatcher and the sender in the test's own process (the
worker test runs them through Celery): what a worker would do with one
audit event."""

from governance.models import AuditEvent
from notifications.services import audit_event_dispatch, notification_send


def send_for(action: str) -> list[int]:
    """Dispatch the newest event of `action` and send its e-mails (one attempt each)."""
    event = AuditEvent.objects.filter(action=action).order_by("-id").first()
    assert event is not None, f"no {action} event"
    notes, _ = audit_event_dispatch(event_id=event.pk)
    for notification_id in notes:
        notification_send(notification_id=notification_id)
    return notes
