"""Signing in, rate-limited: the login page and the token API refuse a
client that keeps guessing passwords.

Failed attempts are counted in the cache in fixed windows of
GLASSBOX_SIGNIN_WINDOW_SECONDS, under three keys, each with its ceiling:

- per (username, client address), GLASSBOX_SIGNIN_MAX_FAILURES (10): one
  guesser at one account, or one person who forgot their password;
- per client address, GLASSBOX_SIGNIN_MAX_FAILURES_PER_ADDRESS (30): one
  address trying many usernames (password spraying); higher than the pair
  ceiling so that colleagues behind one office NAT don't lock each other out;
- per username, GLASSBOX_SIGNIN_MAX_FAILURES_PER_USERNAME (100): many
  addresses guessing at one account.

Past a ceiling, attempts under that key are refused (HTTP 429) without
checking the password, until the window ends; refused attempts are not
counted. The username ceiling is far above the address ones on purpose: a
stranger who knows a reviewer's username can only spend the pair and address
budgets from their own address, 10 failures, which never reach it, so the
reviewer still signs in from anywhere else; it takes guessing spread over ten
or more addresses to close an account for the window, and that guessing is
still capped at 100 tries. A successful sign-in does not reset the counters
(otherwise a guesser holding one valid account could clear them).

The client address is glassbox.middleware.client_address: behind
GLASSBOX_TRUSTED_PROXIES reverse proxies, the address the outermost one saw.
The counters live in Django's cache: with several server processes, point
CACHE_URL at Redis so they share one count.
"""

import hashlib
import time

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.http import Http404
from django.urls import reverse_lazy

from glassbox.errors import GlassboxError
from glassbox.middleware import client_address
from governance.audit import record_refusal
from governance.audit_actions import AuditAction


class TooManyAttempts(GlassboxError):
    status_code = 429
    default_code = "rate_limited"


def _window() -> tuple[int, int]:
    length = max(1, settings.GLASSBOX_SIGNIN_WINDOW_SECONDS)
    now = int(time.time())
    return now // length, length - now % length


def _hashed(text: str) -> str:
    # A username is any text a client sends, and cache keys must stay short
    # and plain for every backend (memcached refuses spaces and controls).
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _budgets(request, username: str) -> dict[str, int]:
    """The cache key of each counter an attempt falls under, with its ceiling."""
    number, _ = _window()
    user = _hashed(username.lower()[:150])
    address = _hashed(client_address(request))
    return {
        f"signin-failures:{number}:pair:{user}:{address}": settings.GLASSBOX_SIGNIN_MAX_FAILURES,
        f"signin-failures:{number}:ip:{address}": settings.GLASSBOX_SIGNIN_MAX_FAILURES_PER_ADDRESS,
        f"signin-failures:{number}:user:{user}": settings.GLASSBOX_SIGNIN_MAX_FAILURES_PER_USERNAME,
    }


def signin_check(request, username: str) -> None:
    """Refuse (and record) an attempt from a client over its failure budget."""
    budgets = _budgets(request, username)
    counts = cache.get_many(list(budgets))
    if all(counts.get(key, 0) < ceiling for key, ceiling in budgets.items()):
        return
    _, retry_after = _window()
    record_refusal(
        actor=None,
        action=AuditAction.AUTH_LOGIN,
        reason="too many failed sign-ins",
        object_type="auth.user",
        object_label=username[:150],
        detail={"username": username[:150], "path": request.path[:200], "retry_after": retry_after},
    )
    raise TooManyAttempts(f"Too many failed sign-ins; try again in {retry_after} seconds.", retry_after=retry_after)


def signin_failed(request, username: str) -> None:
    _, remaining = _window()
    for key in _budgets(request, username):
        # add() starts the count for a new window; incr() is atomic on Redis.
        if not cache.add(key, 1, timeout=remaining + 1):
            try:
                cache.incr(key)
            except ValueError:  # expired between add() and incr()
                cache.add(key, 1, timeout=remaining + 1)


class LocalSigninDisabled(GlassboxError):
    status_code = 403
    default_code = "local_signin_disabled"


def local_signin_check() -> None:
    """Refuse a password sign-in where only the identity provider signs people in."""
    if not settings.GLASSBOX_LOCAL_SIGNIN:
        raise LocalSigninDisabled(
            "Passwords are switched off here: sign in through the identity provider.", code="local_signin_disabled"
        )


class LoginView(auth_views.LoginView):
    """Django's login page with the sign-in budget in front of it, and the
    identity provider's button where one is configured."""

    template_name = "governance/login.html"

    def get_context_data(self, **kwargs):
        return {
            **super().get_context_data(**kwargs),
            "local_signin": settings.GLASSBOX_LOCAL_SIGNIN,
            "oidc_enabled": settings.GLASSBOX_OIDC_ENABLED,
            "oidc_provider_name": settings.GLASSBOX_OIDC_PROVIDER_NAME,
            "oidc_failed": self.request.GET.get("oidc") == "failed",
        }

    def post(self, request, *args, **kwargs):
        if not settings.GLASSBOX_LOCAL_SIGNIN:
            response = self.render_to_response(self.get_context_data())
            response.status_code = 403
            return response
        username = str(request.POST.get("username", ""))
        try:
            signin_check(request, username)
        except TooManyAttempts as exc:
            # An unbound form: binding would validate it, i.e. check the password.
            form = self.get_form_class()(request, initial={"username": username[:150]})
            form.cleaned_data = {}  # add_error() expects a cleaned form
            form.add_error(None, exc.message)
            response = self.render_to_response(self.get_context_data(form=form))
            response.status_code = 429
            response["Retry-After"] = str(exc.extra["retry_after"])
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        signin_failed(self.request, str(self.request.POST.get("username", "")))
        return super().form_invalid(form)


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change page, for local accounts. The current
    password is a password check like signing in: it spends the same budget,
    so a stolen session cannot be used to guess it."""

    template_name = "governance/password_change.html"
    success_url = reverse_lazy("password_change_done")

    def dispatch(self, request, *args, **kwargs):
        # Accounts of the identity provider have no password here to change.
        if not settings.GLASSBOX_LOCAL_SIGNIN or (
            request.user.is_authenticated and not request.user.has_usable_password()
        ):
            raise Http404("Passwords are managed by the identity provider.")
        return super().dispatch(request, *args, **kwargs)

    def post(self, request, *args, **kwargs):
        username = request.user.get_username()
        try:
            signin_check(request, username)
        except TooManyAttempts as exc:
            form = self.get_form_class()(request.user)
            form.cleaned_data = {}
            form.add_error(None, exc.message)
            response = self.render_to_response(self.get_context_data(form=form))
            response.status_code = 429
            response["Retry-After"] = str(exc.extra["retry_after"])
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        # A wrong current password is a guess; an empty one is not.
        if "old_password" in form.errors and self.request.POST.get("old_password"):
            signin_failed(self.request, self.request.user.get_username())
            record_refusal(
                actor=self.request.user,
                action=AuditAction.AUTH_PASSWORD_CHANGE,
                reason="wrong current password",
                object_type="auth.user",
                object_id=self.request.user.pk,
                object_label=self.request.user.get_username(),
            )
        return super().form_invalid(form)


class PasswordChangeDoneView(auth_views.PasswordChangeDoneView):
    template_name = "governance/password_change_done.html"
