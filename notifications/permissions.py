"""Who may manage which webhook subscriptions, in one function.

Today's rule: changing a model is a global permission (engineers may change
every model they can see), so "the models one may change" is that. When
per-model permissions land (teams), swap `_may_change_model` for the
per-model check; nothing else here needs to change."""

from registry.models import RegisteredModel


def _may_change_model(user, model: RegisteredModel) -> bool:
    return model.can_be_viewed_by(user) and model.can_receive_version_from(user)


def webhooks_refusal(user) -> str | None:
    """Why `user` may not manage any webhooks at all (their role), or None."""
    if not (user.is_authenticated and user.has_perm("notifications.add_webhooksubscription")):
        return "Only engineers and admins may manage webhooks."
    return None


def webhook_manage_refusal(user, model: RegisteredModel | None) -> str | None:
    """Why `user` may not create, read or delete subscriptions for `model`
    (None: every model), or None when they may."""
    refusal = webhooks_refusal(user)
    if refusal is not None:
        return refusal
    if user.has_perm("notifications.manage_global_webhooks"):
        return None
    if model is None:
        return "Only admins may subscribe to every model's events (model: null); name a model."
    if not _may_change_model(user, model):
        return f"You may not change {model.name}, so you may not manage its webhooks."
    return None
