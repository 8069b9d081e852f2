"""`Authorization: Token <key>` against ApiToken rows (stored hashed), and
the fence around scoped tokens.

A scoped token (client applications: `predict`, `feedback` on named models)
is checked here, in authentication, rather than in each view's permissions:
every DRF view authenticates before anything else, whatever permission
classes it declares (AllowAny included), so a route added tomorrow refuses
scoped tokens without anyone remembering to. A view that a scope opens says
so with a `token_scope` class attribute; the model is the route's `name`."""

from __future__ import annotations

import time
from datetime import timedelta

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from governance.accounts import key_hash
from governance.audit import record_refusal
from governance.audit_actions import AuditAction
from governance.models import ApiToken

KEYWORD = "Token"
# last_used_at is written at most this often per token: one UPDATE a minute
# instead of one per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TokenRefused(exceptions.AuthenticationFailed):
    def __init__(self, detail: str, code: str):
        super().__init__(detail)
        self.extra = {"code": code}


class TokenScopeRefused(exceptions.PermissionDenied):
    def __init__(self, detail: str, code: str):
        super().__init__(detail)
        self.extra = {"code": code}


def _route_of(request) -> tuple[str | None, str | None]:
    """The scope the called view opens to scoped tokens, and the model it names."""
    django_request = getattr(request, "_request", request)
    match = getattr(django_request, "resolver_match", None)
    if match is None:
        return None, None
    view_class = getattr(match.func, "view_class", None) or getattr(match.func, "cls", None)
    return getattr(view_class, "token_scope", None), match.kwargs.get("name")


def check_token_reach(request, token: ApiToken) -> None:
    """Refuse (and record) a scoped token outside its scopes or models."""
    if not token.is_scoped:
        return
    scope, model_name = _route_of(request)
    if token.allows(scope, model_name):
        return
    if scope in token.scopes:
        code, detail = "token_model", f"This token may not be used on the model {model_name!r}."
    else:
        code = "token_scope"
        detail = f"This token is limited to {', '.join(token.scopes)} on {', '.join(token.model_names)}."
    record_refusal(
        actor=token.user,
        action=AuditAction.TOKEN_REFUSE,
        reason=code,
        object_type="governance.apitoken",
        object_id=token.pk,
        object_label=token.name,
        model_name=(model_name or "")[:100],
        detail={"method": request.method, "path": request.path[:200], "scope": scope},
    )
    raise TokenScopeRefused(detail, code)


def _key_from(request) -> str | None:
    auth = get_authorization_header(request).split()
    if not auth or auth[0].lower() != KEYWORD.lower().encode():
        return None
    if len(auth) != 2:
        raise exceptions.AuthenticationFailed("Invalid token header: send 'Token <key>'.")
    try:
        return auth[1].decode()
    except UnicodeError:
        raise exceptions.AuthenticationFailed("Invalid token header: the key has invalid characters.") from None


def _lookup(key: str) -> ApiToken | None:
    return ApiToken.objects.select_related("user").filter(key_hash=key_hash(key)).first()


def _touch(token: ApiToken, now) -> None:
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


def _usable(token: ApiToken | None, now) -> ApiToken:
    if token is None:
        raise exceptions.AuthenticationFailed("Invalid token.")
    refusal = token.refusal(now)
    if refusal:
        record_refusal(
            actor=token.user,
            action=AuditAction.TOKEN_REFUSE,
            reason=refusal,
            object_type="governance.apitoken",
            object_id=token.pk,
            object_label=token.name,
        )
        raise TokenRefused(f"This token is {refusal}.", f"token_{refusal}")
    if not token.user.is_active:
        raise exceptions.AuthenticationFailed("User inactive or deleted.")
    return token


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Token <key>`: the token's user, with the token as
    `request.auth`."""

    def authenticate(self, request):
        key = _key_from(request)
        if key is None:
            return None
        now = timezone.now()
        token = _usable(_lookup(key), now)
        _touch(token, now)
        check_token_reach(request, token)
        return token.user, token

    def authenticate_header(self, request):
        return KEYWORD


class CachedApiTokenAuthentication(ApiTokenAuthentication):
    """The same, remembering a key's token row for a second in this process:
    the predict path then costs no query in the steady state. A revoked
    token or deactivated user is refused within that second; expiry and
    scopes are checked on every call against the remembered row."""

    TTL_SECONDS = 1.0
    # Bounded: a client cycling through many tokens cannot grow it forever.
    MAX_ENTRIES = 10_000
    _cache: dict[str, tuple[float, ApiToken]] = {}

    def authenticate(self, request):
        key = _key_from(request)
        if key is None:
            return None
        now, clock = timezone.now(), time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and clock - hit[0] < self.TTL_SECONDS:
            token = _usable(hit[1], now)
        else:
            found = _lookup(key)
            token = _usable(found, now)
            _touch(token, now)
            if len(self._cache) >= self.MAX_ENTRIES:
                self._cache.clear()  # every entry is at most a second from expiring anyway
            self._cache[key] = (clock, token)
        check_token_reach(request, token)
        return token.user, token


def clear_token_cache() -> None:
    CachedApiTokenAuthentication._cache.clear()


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = ApiTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'An API token: "Token <key>" (POST /api/v1/auth/token/ or /api/v1/auth/tokens/).',
        }


class CachedApiTokenScheme(OpenApiAuthenticationExtension):
    """One schema name per class: the same tokens and header as `tokenAuth`."""

    target_class = CachedApiTokenAuthentication
    name = "cachedTokenAuth"
    priority = 1

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'The same API token as tokenAuth: "Token <key>".',
        }
