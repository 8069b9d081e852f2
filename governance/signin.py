"""Signing in, rate-limited: the login page and the token API refuse a
client that keeps guessing passwords.

Failed attempts are counted in the cache per client address and per
username, in fixed windows: past GLASSBOX_SIGNIN_MAX_FAILURES failures in
GLASSBOX_SIGNIN_WINDOW_SECONDS, further attempts are refused (HTTP 429)
without checking the password, until the window ends. Counting per username
too stops a guesser that rotates addresses; counting per address stops one
that rotates usernames. A successful sign-in does not reset the counters
(otherwise a guesser holding one valid account could clear them).

The counters live in Django's cache: with several server processes, point
CACHE_URL at Redis so they share one count.
"""

import hashlib
import time

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache

from glassbox.errors import GlassboxError
from governance.audit import record_refusal
from governance.audit_actions import AuditAction


class TooManyAttempts(GlassboxError):
    status_code = 429


def _window() -> tuple[int, int]:
    length = max(1, settings.GLASSBOX_SIGNIN_WINDOW_SECONDS)
    now = int(time.time())
    return now // length, length - now % length


def _keys(ip: str, username: str) -> list[str]:
    number, _ = _window()
    # Hashed: a username is any text a client sends, and cache keys must stay
    # short and plain for every backend (memcached refuses spaces and controls).
    user = hashlib.sha256(username.lower()[:150].encode()).hexdigest()[:32]
    address = hashlib.sha256(ip.encode()).hexdigest()[:32]
    return [f"signin-failures:{number}:ip:{address}", f"signin-failures:{number}:user:{user}"]


def _client_ip(request) -> str:
    return request.META.get("REMOTE_ADDR", "")[:64]


def signin_check(request, username: str) -> None:
    """Refuse (and record) an attempt from a client over its failure budget."""
    counts = cache.get_many(_keys(_client_ip(request), username))
    if max(counts.values(), default=0) < settings.GLASSBOX_SIGNIN_MAX_FAILURES:
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
    for key in _keys(_client_ip(request), username):
        # add() starts the count for a new window; incr() is atomic on Redis.
        if not cache.add(key, 1, timeout=remaining + 1):
            try:
                cache.incr(key)
            except ValueError:  # expired between add() and incr()
                cache.add(key, 1, timeout=remaining + 1)


class LoginView(auth_views.LoginView):
    """Django's login page with the sign-in budget in front of it."""

    template_name = "governance/login.html"

    def post(self, request, *args, **kwargs):
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
