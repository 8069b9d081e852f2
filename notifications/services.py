"""Writes of notifications and webhooks, and the dispatcher that turns a
committed audit event into e-mails and webhook deliveries.

The flow: governance.audit.record_event registers `enqueue_dispatch` with
transaction.on_commit for every event whose action is in
notifications.events.EVENT_FOR_ACTION; a worker runs `audit_event_dispatch`,
which writes one Notification row per recipient and one WebhookDelivery row
per matching subscription (unique keys: a re-delivered task adds nothing)
and queues the sending of each. Nothing here runs on the request path.
"""

import json
import logging
import secrets
from datetime import date, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import IntegrityError, transaction
from django.utils import timezone

from glassbox.errors import GlassboxError, InvalidInput, NotFound, NotPermitted
from governance import roles
from governance.audit import event_timestamp, record_event, record_refusal
from governance.audit_actions import AuditAction
from governance.models import AuditEvent
from notifications import events, messages
from notifications.models import (
    Notification,
    NotificationKind,
    NotificationPreference,
    WebhookDelivery,
    WebhookSubscription,
)
from notifications.permissions import webhook_manage_refusal, webhooks_refusal
from notifications.webhook_http import UnsafeTarget, post_signed, resolve_target
from registry.models import ModelVersion, RegisteredModel

logger = logging.getLogger(__name__)

# --- from the audit trail to the queue ------------------------------------------------


def enqueue_dispatch(event_id: int) -> None:
    """After commit: hand one audit event to the workers. A broker outage
    must not fail the write that already committed; it is logged."""
    from notifications.tasks import dispatch_audit_event

    try:
        dispatch_audit_event.delay(event_id)
    except Exception:
        logger.exception("could not enqueue dispatch_audit_event(%s)", event_id)


def audit_event_dispatch(*, event_id: int) -> tuple[list[int], list[int]]:
    """Write the notifications and webhook deliveries one audit event calls
    for. Returns the ids of the rows it created (none when it already ran for
    this event), for the task to queue."""
    event = AuditEvent.objects.filter(pk=event_id).first()
    if event is None or event.outcome != AuditEvent.Outcome.OK:
        return [], []
    event_type = events.event_type_of(event.action)
    if event_type is None:
        return [], []
    deliveries = _deliveries_create(event, event_type)
    notes = _notifications_for_event(event)
    return notes, deliveries


def event_payload(event: AuditEvent, event_type: str) -> dict:
    """What a subscriber receives: the public type, where it happened, and
    the audit row's own fields (its id and hash let a receiver match it to
    the trail)."""
    return {
        "type": event_type,
        "id": f"evt_{event.pk}",
        "created_at": event_timestamp(event.created_at),
        "model": event.model_name or None,
        "version": event.version_number,
        "actor": event.actor_username or None,
        "object": {"type": event.object_type, "id": event.object_id, "label": event.object_label},
        "changes": event.changes,
        "detail": event.detail,
        "audit": {"id": event.pk, "action": event.action, "hash": event.hash},
    }


def _deliveries_create(event: AuditEvent, event_type: str) -> list[int]:
    subscriptions = [
        sub for sub in WebhookSubscription.objects.select_related("model") if sub.wants(event_type, event.model_name)
    ]
    if not subscriptions:
        return []
    body = json.dumps(event_payload(event, event_type), sort_keys=True, ensure_ascii=False, default=str)
    created = []
    for sub in subscriptions:
        delivery, is_new = WebhookDelivery.objects.get_or_create(
            subscription=sub, audit_event_id=event.pk, defaults={"event_type": event_type, "body": body}
        )
        if is_new:
            created.append(delivery.pk)
    return created


# --- e-mail notifications ---------------------------------------------------------


def _users_in(role: str):
    return get_user_model().objects.filter(groups__name=role, is_active=True).exclude(email="").distinct()


def _recipients(event: AuditEvent) -> tuple[str, list, dict] | None:
    """(kind, users, context for the message) for one audit event, or None
    when the event tells nobody anything by e-mail."""
    from governance.models import Decision, ReviewRequest
    from rollouts.models import Alert, Rollout

    action = event.action
    if action == AuditAction.REVIEW_OPEN:
        review = ReviewRequest.objects.select_related("version__model").filter(pk=event.object_id).first()
        if review is None:
            return None
        # Those who may not decide on it (its uploader, its submitter) are not asked to.
        users = _users_in(roles.REVIEWER).exclude(pk__in=[review.opened_by_id, review.version.created_by_id])
        return NotificationKind.REVIEW_OPENED, list(users), {"review": review, "version": review.version}
    if action in (AuditAction.REVIEW_APPROVE, AuditAction.REVIEW_REJECT):
        decision = (
            Decision.objects.select_related("review__opened_by", "review__version__model", "reviewer")
            .filter(pk=event.object_id)
            .first()
        )
        if decision is None:
            return None
        context = {"decision": decision, "review": decision.review, "version": decision.review.version}
        return NotificationKind.REVIEW_DECIDED, [decision.review.opened_by], context
    kind = {
        AuditAction.ROLLOUT_PAUSE: NotificationKind.ROLLOUT_PAUSED,
        AuditAction.ROLLOUT_ABORT: NotificationKind.ROLLOUT_ABORTED,
        events.ROLLBACK_ACTION: NotificationKind.ROLLOUT_ROLLED_BACK,
    }.get(action)
    if kind is not None:
        rollouts = Rollout.objects.select_related("created_by", "model", "candidate")
        rollout = None
        named = (event.detail or {}).get("rollout_id")
        if event.object_type == "rollouts.rollout":
            rollout = rollouts.filter(pk=event.object_id).first()
        elif isinstance(named, int):
            rollout = rollouts.filter(pk=named).first()
        elif event.model_name and event.version_number is not None:
            # A rollback names the model or the version; the rollout is the one that deployed that version.
            rollout = rollouts.filter(model__name=event.model_name, candidate__number=event.version_number).first()
        users = list(_users_in(roles.MANAGER))
        if rollout is not None:
            users.append(rollout.created_by)
        return kind, users, {"rollout": rollout}
    if action == AuditAction.MONITOR_ALERT_RAISED:
        alert = Alert.objects.select_related("model", "version").filter(pk=event.object_id).first()
        if alert is None:
            return None
        return NotificationKind.ALERT_RAISED, list(_users_in(roles.MANAGER)), {"alert": alert}
    return None


def _notifications_for_event(event: AuditEvent) -> list[int]:
    found = _recipients(event)
    if found is None:
        return []
    kind, users, context = found
    # Whoever did it knows already.
    users = [user for user in users if user.pk != event.actor_id]
    subject, body = messages.render(kind, event=event, **context)
    return notifications_create(kind=kind, users=users, key=f"event:{event.pk}", subject=subject, body=body)


def notifications_create(*, kind: str, users, key: str, subject: str, body: str) -> list[int]:
    """One pending Notification per user who has an address and has not
    turned `kind` off; none twice for one `key`. Returns the new rows' ids."""
    users = {user.pk: user for user in users if user is not None and user.is_active and user.email}
    if not users:
        return []
    opted_out = {
        pref.user_id for pref in NotificationPreference.objects.filter(user_id__in=users) if not pref.wants(kind)
    }
    created = []
    for user in users.values():
        if user.pk in opted_out:
            continue
        try:
            with transaction.atomic():
                note = Notification.objects.create(
                    user=user, kind=kind, key=key[:100], to_address=user.email, subject=subject[:300], body=body
                )
        except IntegrityError:
            continue  # sent (or being sent) for this reason already
        created.append(note.pk)
    return created


def notification_send(*, notification_id: int) -> float | None:
    """Send one pending e-mail through Django's backend. Returns the seconds
    to wait before retrying, or None when done (sent, or failed for good)."""
    note = Notification.objects.filter(pk=notification_id).first()
    if note is None or note.status != Notification.Status.PENDING:
        return None
    attempts = note.attempts + 1
    try:
        message = EmailMessage(
            subject=note.subject,
            body=note.body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[note.to_address],
            connection=get_connection(fail_silently=False),
        )
        message.send()
    except Exception as exc:  # SMTP refusals, connection errors: logged and retried
        error = f"{type(exc).__name__}: {exc}"[:500]
        final = attempts >= settings.GLASSBOX_NOTIFICATION_MAX_ATTEMPTS
        status = Notification.Status.FAILED if final else Notification.Status.PENDING
        Notification.objects.filter(pk=note.pk).update(attempts=attempts, error=error, status=status)
        logger.warning("notification #%s attempt %s failed: %s", note.pk, attempts, error)
        return None if final else settings.GLASSBOX_NOTIFICATION_BACKOFF_SECONDS * 2 ** (attempts - 1)
    Notification.objects.filter(pk=note.pk).update(
        attempts=attempts, error="", status=Notification.Status.SENT, sent_at=timezone.now()
    )
    return None


def recertifications_notify(*, today: date | None = None) -> list[int]:
    """Tell the owners (uploader and model owner) of each approved or
    deployed version whose re-certification falls due within the notice
    period. Keyed by version and due date: once per due date, however often
    the daily task runs, and a missed day still sends it."""
    today = today or timezone.now().date()
    horizon = today + timedelta(days=settings.GLASSBOX_RECERTIFICATION_NOTICE_DAYS)
    due = ModelVersion.objects.select_related("model__created_by", "created_by").filter(
        status__in=[ModelVersion.Status.APPROVED, ModelVersion.Status.DEPLOYED],
        recertify_by__isnull=False,
        recertify_by__gte=today,
        recertify_by__lte=horizon,
    )
    created = []
    for version in due:
        subject, body = messages.render(NotificationKind.RECERTIFICATION_DUE, event=None, version=version)
        created += notifications_create(
            kind=NotificationKind.RECERTIFICATION_DUE,
            users=[version.created_by, version.model.created_by],
            key=f"recertify:{version.pk}:{version.recertify_by.isoformat()}",
            subject=subject,
            body=body,
        )
    return created


@transaction.atomic
def preferences_update(*, actor, disabled_kinds: list[str]) -> NotificationPreference:
    unknown = sorted(set(disabled_kinds) - set(NotificationKind.values))
    if unknown:
        raise InvalidInput(f"Unknown notification kinds: {', '.join(unknown)}.")
    pref, _ = NotificationPreference.objects.select_for_update().get_or_create(user=actor)
    before = sorted(pref.disabled_kinds)
    pref.disabled_kinds = sorted(set(disabled_kinds))
    pref.save(update_fields=["disabled_kinds", "updated_at"])
    record_event(
        actor=actor,
        action=AuditAction.NOTIFICATION_PREFERENCES,
        object_type="auth.user",
        object_id=actor.pk,
        object_label=actor.get_username(),
        changes={"before": {"disabled": before}, "after": {"disabled": pref.disabled_kinds}},
    )
    return pref


# --- webhook subscriptions ---------------------------------------------------------


def webhook_create(*, actor, url: str, event_types: list[str], model: RegisteredModel | None) -> WebhookSubscription:
    """Subscribe `url` to `event_types` of `model` (None: every model). The
    returned row's `secret` is the only time anyone sees it."""
    try:
        refusal = webhook_manage_refusal(actor, model)
        if refusal is not None:
            raise NotPermitted(refusal)
        unknown = [e for e in event_types if e not in events.EVENT_TYPES]
        if unknown:
            raise InvalidInput(
                f"Unknown event types: {', '.join(map(str, unknown))[:500]}. Known: {', '.join(events.EVENT_TYPES)}.",
                code="unknown_event_type",
            )
        if not event_types:
            raise InvalidInput("events: name at least one event type.")
        try:
            resolve_target(url)
        except UnsafeTarget as exc:
            raise InvalidInput(f"url: {exc}", code="unsafe_target") from None
        with transaction.atomic():
            sub = WebhookSubscription.objects.create(
                url=url,
                events=list(dict.fromkeys(event_types)),
                model=model,
                secret="whsec_" + secrets.token_urlsafe(32),
                created_by=actor,
            )
            record_event(
                actor=actor,
                action=AuditAction.WEBHOOK_CREATE,
                obj=sub,
                changes={"after": {"url": url, "events": sub.events, "model": model.name if model else None}},
            )
        return sub
    except GlassboxError as exc:
        if isinstance(exc, NotPermitted):
            record_refusal(
                actor=actor,
                action=AuditAction.WEBHOOK_CREATE,
                reason=exc.message,
                object_type="notifications.webhooksubscription",
                model_name=model.name if model else "",
                detail={"url": url[:500]},
            )
        raise


def webhooks_access(*, actor, action: AuditAction | None = None) -> None:
    """The door of the webhook API: a caller whose role manages no webhooks
    is refused before anything else (a refused write is on the trail)."""
    refusal = webhooks_refusal(actor)
    if refusal is None:
        return
    if action is not None:
        record_refusal(actor=actor, action=action, reason=refusal, object_type="notifications.webhooksubscription")
    raise NotPermitted(refusal)


def webhook_get(*, user, pk: int) -> WebhookSubscription:
    """A subscription the user may manage; others' are 404 (not even their existence shows)."""
    webhooks_access(actor=user)
    sub = WebhookSubscription.objects.select_related("model", "created_by").filter(pk=pk).first()
    if sub is None or webhook_manage_refusal(user, sub.model) is not None:
        raise NotFound("No such webhook subscription.")
    return sub


def webhook_delete(*, actor, subscription: WebhookSubscription) -> None:
    with transaction.atomic():
        label = str(subscription)
        record_event(
            actor=actor,
            action=AuditAction.WEBHOOK_DELETE,
            obj=subscription,
            object_label=label,
            changes={"before": {"url": subscription.url, "events": subscription.events}},
        )
        subscription.delete()


def webhook_deliver(*, delivery_id: int) -> float | None:
    """One attempt of one delivery. Returns the seconds to wait before the
    next attempt, or None when it is done (delivered, or failed for good:
    out of attempts, or a target that is refused now)."""
    delivery = WebhookDelivery.objects.select_related("subscription").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return None
    sub = delivery.subscription
    result = post_signed(
        sub.url, delivery.body.encode(), secret=sub.secret, event_type=delivery.event_type, delivery_id=delivery.pk
    )
    attempts = delivery.attempts + 1
    now = timezone.now()
    fields = {
        "attempts": attempts,
        "response_code": result.response_code,
        "latency_ms": result.latency_ms,
        "error": result.error,
        "last_attempt_at": now,
        "next_attempt_at": None,
    }
    retry_in = None
    if result.ok:
        fields.update(status=WebhookDelivery.Status.SUCCEEDED, delivered_at=now)
    elif not result.retryable or attempts >= settings.GLASSBOX_WEBHOOK_MAX_ATTEMPTS:
        fields.update(status=WebhookDelivery.Status.FAILED)
    else:
        retry_in = settings.GLASSBOX_WEBHOOK_BACKOFF_SECONDS * 2 ** (attempts - 1)
        fields.update(next_attempt_at=now + timedelta(seconds=retry_in))
    # Only a pending row moves: a duplicate task that raced this one cannot undo its outcome.
    WebhookDelivery.objects.filter(pk=delivery.pk, status=WebhookDelivery.Status.PENDING).update(**fields)
    return retry_in
