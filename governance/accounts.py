"""Signing in, in the audit trail: API tokens (created and revoked here, as
services) and the events Django itself sends for logins, failed logins,
logouts and password changes, whichever page or API they come from."""

import hashlib
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from glassbox.errors import InvalidInput, NotFound, NotPermitted
from glassbox.middleware import current_request_context
from governance.audit import record_event, record_refusal
from governance.audit_actions import AuditAction
from governance.models import ApiToken

# The name of the full-access token POST /api/v1/auth/token/ creates.
PASSWORD_TOKEN_NAME = "password sign-in"


def _user_label(user) -> dict:
    # Never the user object itself as `obj`: str() of some auth objects (a
    # Token) is the secret.
    return {"object_type": "auth.user", "object_id": user.pk, "object_label": user.get_username()}


def key_hash(key: str) -> str:
    """What is stored of a key. A key is 256 random bits, so a plain SHA-256
    is enough (no salt or slow hash: nothing to guess by brute force)."""
    return hashlib.sha256(key.encode()).hexdigest()


def can_issue_token_for(user, model) -> bool:
    """Whether `user` may create a token scoped to `model`: whoever runs the
    model's serving (its team's maintainers, and admins) hands out its
    client keys."""
    return user.is_active and model.access_of(user).release


def _token_label(token: ApiToken) -> dict:
    return {"object_type": "governance.apitoken", "object_id": token.pk, "object_label": token.name}


def token_create(
    *,
    actor,
    name: str,
    scopes: list[str] | None = None,
    model_names: list[str] | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """A new token of `actor` and its key (returned here, and never again).
    Without scopes it acts with all of the actor's permissions; with scopes
    it may only do those on the named models."""
    from registry.models import RegisteredModel

    scopes = sorted(set(scopes or []))
    model_names = sorted(set(model_names or []))
    name = (name or "").strip()
    if not name:
        raise InvalidInput("Give the token a name.", code="name_required")
    unknown_scopes = [scope for scope in scopes if scope not in ApiToken.Scope.values]
    if unknown_scopes:
        raise InvalidInput(
            f"Unknown scopes {unknown_scopes}; a token may be limited to {ApiToken.Scope.values}.",
            code="unknown_scope",
        )
    if bool(scopes) != bool(model_names):
        raise InvalidInput(
            "A scoped token names both its scopes and its models (or neither, for a full-access token).",
            code="scope_without_models" if scopes else "models_without_scope",
        )
    now = timezone.now()
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at is in the past.", code="expired")
    max_days = settings.GLASSBOX_TOKEN_MAX_DAYS
    if max_days > 0:
        latest = now + timedelta(days=max_days)
        if expires_at is None:
            # A maximum is set: no token lives longer, whether asked or not.
            expires_at = latest
        elif expires_at > latest:
            raise InvalidInput(
                f"expires_at is more than {max_days} days away (GLASSBOX_TOKEN_MAX_DAYS); choose an earlier date.",
                code="token_expiry_too_far",
                field="expires_at",
            )
    found = {model.name: model for model in RegisteredModel.objects.filter(name__in=model_names)}
    missing = [model_name for model_name in model_names if model_name not in found]
    if missing:
        raise NotFound(f"No model named {missing[0]!r}.", code="unknown_model")
    refused = [model_name for model_name in model_names if not can_issue_token_for(actor, found[model_name])]
    if refused:
        record_refusal(
            actor=actor,
            action=AuditAction.TOKEN_CREATE,
            reason="may not issue tokens for this model",
            object_type="governance.apitoken",
            object_label=name[:100],
            model_name=refused[0],
            detail={"scopes": scopes, "models": model_names},
        )
        raise NotPermitted(
            f"You may not issue tokens for the model {refused[0]!r}: only maintainers of its team (and admins) hand out its client keys.",
            code="token_not_permitted",
        )
    key = "gbx_" + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=actor,
            name=name[:100],
            key_hash=key_hash(key),
            prefix=key[:8],
            scopes=scopes,
            model_names=model_names,
            expires_at=expires_at,
        )
        record_event(
            actor=actor,
            action=AuditAction.TOKEN_CREATE,
            detail={
                "scopes": scopes,
                "models": model_names,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
            **_token_label(token),
        )
    return token, key


def token_revoke(*, actor, token: ApiToken) -> ApiToken:
    """Revoke a token of `actor` (an admin may revoke anyone's). Serving
    processes stop accepting it within their one-second cache."""
    from governance.access import is_admin

    if token.user_id != actor.pk and not is_admin(actor):
        raise NotFound("No such token.")
    with transaction.atomic():
        locked = ApiToken.objects.select_for_update().get(pk=token.pk)
        if locked.revoked_at is None:
            locked.revoked_at = timezone.now()
            locked.save(update_fields=["revoked_at"])
            record_event(
                actor=actor,
                action=AuditAction.TOKEN_REVOKE,
                detail={"owner": locked.user.get_username()},
                **_token_label(locked),
            )
    return locked


def token_issue(*, actor) -> tuple[ApiToken, str]:
    """A full-access token for `actor`, who has just proven their password
    (POST /api/v1/auth/token/). Keys are stored hashed, so the old "your one
    token" cannot be handed out again: each exchange creates a token, listed
    and revocable like any other. The key itself never reaches the trail."""
    with transaction.atomic():
        token, key = token_create(actor=actor, name=PASSWORD_TOKEN_NAME)
        record_event(actor=actor, action=AuditAction.AUTH_TOKEN, detail={"created": True}, **_user_label(actor))
    return token, key


def _path(request) -> str:
    return getattr(request, "path", "")[:200] if request is not None else ""


@receiver(user_logged_in, dispatch_uid="glassbox-audit-login")
def _record_login(sender, request, user, **kwargs) -> None:
    record_event(actor=user, action=AuditAction.AUTH_LOGIN, detail={"path": _path(request)}, **_user_label(user))


@receiver(user_login_failed, dispatch_uid="glassbox-audit-login-failed")
def _record_failed_login(sender, credentials, request=None, **kwargs) -> None:
    # Django has already replaced the password in `credentials` with stars.
    username = str(credentials.get("username", ""))[:150]
    record_refusal(
        actor=None,
        action=AuditAction.AUTH_LOGIN,
        reason="invalid credentials",
        object_type="auth.user",
        object_label=username,
        detail={"username": username, "path": _path(request)},
    )


@receiver(user_logged_out, dispatch_uid="glassbox-audit-logout")
def _record_logout(sender, request, user, **kwargs) -> None:
    if user is not None and user.is_authenticated:
        record_event(actor=user, action=AuditAction.AUTH_LOGOUT, detail={"path": _path(request)}, **_user_label(user))


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="glassbox-audit-password-change")
def _record_password_change(sender, instance, created, **kwargs) -> None:
    # set_password() leaves the raw password on the instance until save()
    # finishes; a new user's first password is part of creating it.
    if created or getattr(instance, "_password", None) is None:
        return
    context = current_request_context()
    actor = context.user() if context else None
    record_event(
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=AuditAction.AUTH_PASSWORD_CHANGE,
        **_user_label(instance),
    )
