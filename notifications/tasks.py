"""Notification and webhook jobs: thin, keyed by primary key, idempotent
(each re-checks its row's status), retried with exponential backoff."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

logger = logging.getLogger(__name__)

_DB_RETRY = {"autoretry_for": (OperationalError, InterfaceError), "retry_backoff": True, "max_retries": 5}


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True, **_DB_RETRY)
def dispatch_audit_event(event_id: int) -> str:
    from notifications.services import audit_event_dispatch

    notes, deliveries = audit_event_dispatch(event_id=event_id)
    for delivery_id in deliveries:
        deliver_webhook.delay(delivery_id)
    for notification_id in notes:
        send_notification.delay(notification_id)
    return f"{len(notes)} notifications, {len(deliveries)} deliveries"


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True, max_retries=None)
def send_notification(self, notification_id: int) -> None:
    from notifications.services import notification_send

    retry_in = notification_send(notification_id=notification_id)
    if retry_in is not None:
        # The service counts attempts and gives up by itself (max_retries=None here).
        raise self.retry(countdown=retry_in)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True, max_retries=None)
def deliver_webhook(self, delivery_id: int) -> None:
    from notifications.services import webhook_deliver

    retry_in = webhook_deliver(delivery_id=delivery_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@shared_task(acks_late=True, ignore_result=True, **_DB_RETRY)
def notify_recertifications_due() -> int:
    """Celery beat, daily: owners of versions due for re-certification within the notice period."""
    from notifications.services import recertifications_notify

    created = recertifications_notify()
    for notification_id in created:
        send_notification.delay(notification_id)
    return len(created)
