"""Reads of webhook subscriptions and their delivery logs."""

from notifications.models import WebhookDelivery, WebhookSubscription
from notifications.permissions import webhook_manage_refusal


def webhook_list(*, user, before_id: int | None, limit: int) -> list[WebhookSubscription]:
    """The subscriptions `user` may manage, newest first (keyset by id)."""
    if not (user.is_authenticated and user.has_perm("notifications.add_webhooksubscription")):
        return []
    rows = WebhookSubscription.objects.select_related("model", "created_by").order_by("-id")
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    found = []
    # Filtered here with the one permission function, so a per-model rule
    # (teams) applies to the list exactly as to each row.
    for sub in rows.iterator(chunk_size=500):
        if webhook_manage_refusal(user, sub.model) is None:
            found.append(sub)
            if len(found) >= limit:
                break
    return found


def delivery_list(*, subscription: WebhookSubscription, before_id: int | None, limit: int) -> list[WebhookDelivery]:
    rows = WebhookDelivery.objects.filter(subscription=subscription).order_by("-id")
    if before_id is not None:
        rows = rows.filter(id__lt=before_id)
    return list(rows[:limit])
