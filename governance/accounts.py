"""Signing in, in the audit trail: API tokens (issued here, as a service) and
the events Django itself sends for logins, failed logins, logouts and
password changes, whichever page or API they come from."""

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from glassbox.middleware import current_request_context
from governance.audit import record_event, record_refusal
from governance.audit_actions import AuditAction


def _user_label(user) -> dict:
    # Never the user object itself as `obj`: str() of some auth objects (a
    # Token) is the secret.
    return {"object_type": "auth.user", "object_id": user.pk, "object_label": user.get_username()}


def token_issue(*, actor) -> Token:
    """The caller's API token (created on first use); `actor` has just proven
    their password. The key itself never reaches the trail."""
    with transaction.atomic():
        token, created = Token.objects.get_or_create(user=actor)
        record_event(actor=actor, action=AuditAction.AUTH_TOKEN, detail={"created": created}, **_user_label(actor))
    return token


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
