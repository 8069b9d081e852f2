"""Who may manage which webhook subscriptions, in one function: the
engineers of the model's team (and its maintainers) for that model, admins
for every model (governance/access.py)."""

from registry.models import RegisteredModel


def _may_change_model(user, model: RegisteredModel) -> bool:
    return model.access_of(user).develop


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
