"""Carry who/where/which-request facts to the audit trail without threading
`request` through every service call."""

import contextvars
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from ipware import get_client_ip

_request_context: contextvars.ContextVar["RequestContext | None"] = contextvars.ContextVar(
    "glassbox_request_context", default=None
)


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    ip: str
    user_agent: str
    # Who is signed in, asked for only when needed: authentication runs after
    # this middleware, and signal receivers (password changes) have no request.
    user: Callable[[], Any] = lambda: None


def current_request_context() -> "RequestContext | None":
    return _request_context.get()


def client_address(request) -> str:
    """The client's address, as the audit trail and the sign-in limits see it.

    X-Forwarded-For is any text a client chooses to send, except the entries
    our own proxies appended on the right. With GLASSBOX_TRUSTED_PROXIES = N
    the client is the Nth entry from the right (the one the outermost trusted
    proxy saw); with 0 the header is ignored and the peer address is the
    client. A chain shorter than N (a request that skipped a proxy) falls back
    to the peer address rather than to an entry nobody vouches for."""
    peer = request.META.get("REMOTE_ADDR", "")
    proxies = settings.GLASSBOX_TRUSTED_PROXIES
    if proxies > 0:
        # ipware counts the proxies inside the header; the nearest one is the peer.
        forwarded, _ = get_client_ip(
            request, proxy_count=proxies - 1, request_header_order=["HTTP_X_FORWARDED_FOR"], strict=False
        )
        if forwarded:
            return forwarded[:64]
    return peer[:64]


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        # Accept a caller's request id only when it looks like one; never echo junk.
        request_id = incoming if incoming and len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        context = RequestContext(
            request_id=request_id,
            ip=client_address(request),
            user_agent=request.headers.get("User-Agent", "")[:400],
            user=lambda: getattr(request, "user", None),
        )
        token = _request_context.set(context)
        try:
            response = self.get_response(request)
        finally:
            _request_context.reset(token)
        response["X-Request-ID"] = request_id
        return response
