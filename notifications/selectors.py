"""Reads of webhook subscriptions and their delivery logs."""

from django.db.models import QuerySet

from notifications.models import WebhookDelivery, WebhookSubscription
from notifications.permissions import webhook_manage_refusal


def webhook_list(*, user) -> QuerySet[WebhookSubscription]:
    """The subscriptions `user` may manage (the API pages them by cursor)."""
    if not (user.is_authenticated and user.has_perm("notifications.add_webhooksubscription")):
        return WebhookSubscription.objects.none()
    # Filtered with the one permission function, so a per-model rule (teams)
    # applies to the list exactly as to each row. Subscriptions are few (a
    # handful per model), so reading them all once per page is cheap.
    rows = WebhookSubscription.objects.select_related("model")
    allowed = [sub.pk for sub in rows.iterator(chunk_size=500) if webhook_manage_refusal(user, sub.model) is None]
    return WebhookSubscription.objects.select_related("model", "created_by").filter(pk__in=allowed)


def delivery_list(*, subscription: WebhookSubscription) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(subscription=subscription)
