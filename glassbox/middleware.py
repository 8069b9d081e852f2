"""Carry who/where/which-request facts to the audit trail without threading
`request` through every service call."""

import contextvars
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        # Accept a caller's request id only when it looks like one; never echo junk.
        request_id = incoming if incoming and len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
        context = RequestContext(
            request_id=request_id,
            ip=request.META.get("REMOTE_ADDR", "")[:64],
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
