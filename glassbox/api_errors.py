"""Every API error is JSON with a `detail` string and a machine-readable
`code` (stable snake_case, listed in the README's "Error codes" table),
whatever raised it."""

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

from glassbox.errors import GlassboxError

logger = logging.getLogger(__name__)


def _flatten(detail) -> str:
    if isinstance(detail, dict):
        parts = []
        for field, value in detail.items():
            text = _flatten(value)
            parts.append(text if field in ("non_field_errors", "detail") else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(detail, (list, tuple)):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


# DRF's own exceptions, by their default code, in the words of our table.
_DRF_CODES = {
    "invalid": "validation_error",
    "parse_error": "parse_error",
    "authentication_failed": "authentication_failed",
    "not_authenticated": "not_authenticated",
    "permission_denied": "permission_denied",
    "not_found": "not_found",
    "method_not_allowed": "method_not_allowed",
    "not_acceptable": "not_acceptable",
    "unsupported_media_type": "unsupported_media_type",
    "throttled": "rate_limited",
}


def _code_of(exc) -> str:
    extra_code = getattr(exc, "extra", {}).get("code")
    if extra_code:
        return str(extra_code)
    if isinstance(exc, exceptions.ValidationError):
        return "validation_error"
    return _DRF_CODES.get(getattr(exc, "default_code", ""), "error")


def json_exception_handler(exc, context):
    if isinstance(exc, GlassboxError):
        body = {"detail": exc.message, "code": exc.code, **exc.extra}
        response = Response(body, status=exc.status_code)
        _retry_after_header(response, exc)
        return response
    if isinstance(exc, RequestDataTooBig):
        # DRF reads JSON and form bodies through request.body, which refuses a
        # body over DATA_UPLOAD_MAX_MEMORY_SIZE by its Content-Length before
        # reading it; unhandled, that refusal would be a 500.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"The request body is larger than the limit of {limit} bytes.", "code": "request_too_large"},
            status=413,
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=exc.messages)
    response = exception_handler(exc, context)
    if response is None:
        return None
    code = _code_of(exc)
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"detail": _flatten(exc.detail), "code": code, "errors": exc.detail}
    elif isinstance(response.data, dict) and "detail" in response.data:
        # A refusal may carry its own `code` (a scoped token's, say).
        response.data = {"detail": str(response.data["detail"]), **getattr(exc, "extra", {}), "code": code}
    else:
        response.data = {"detail": _flatten(response.data), "code": code}
    return response


def _retry_after_header(response: Response, exc: GlassboxError) -> None:
    if "retry_after" in exc.extra:
        response["Retry-After"] = str(exc.extra["retry_after"])


def not_found(request, exception):
    """The URL configuration's 404: a path under /api/ that matches no route
    (say /api/v1/rollouts/abc/) answers JSON like every other API error; pages
    keep Django's own 404 page."""
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return page_not_found(request, exception)


class ServiceUnavailableMiddleware:
    """When the database is gone (restarted, connections dropped, failed
    over) a request cannot be served: answer 503 with Retry-After instead of
    a 500, as JSON under /api/ (and for the health probes and /metrics), so clients back
    off and retry. Django opens a fresh connection for the next request, so
    service resumes by itself once the database is back. Any other unhandled
    error under /api/ still answers JSON: `detail` and the request id to quote."""

    RETRY_AFTER_SECONDS = 5

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        from django.db import close_old_connections
        from django.db.utils import InterfaceError, OperationalError
        from django.http import HttpResponse, JsonResponse

        from glassbox.middleware import current_request_context

        is_api = request.path.startswith(("/api/", "/livez", "/readyz", "/healthz", "/metrics"))
        context = current_request_context()
        request_id = context.request_id if context else ""
        if isinstance(exception, (OperationalError, InterfaceError)):
            logger.warning("database unavailable on %s: %s", request.path, exception)
            # Drop broken connections now rather than at the end of the request.
            close_old_connections()
            if is_api:
                response = JsonResponse(
                    {
                        "detail": "The database is unavailable; retry shortly.",
                        "code": "database_unavailable",
                        "request_id": request_id,
                    },
                    status=503,
                )
            else:
                response = HttpResponse(
                    "<!doctype html><title>Unavailable</title><h1>Glassbox is briefly unavailable</h1>"
                    "<p>The database cannot be reached. Try again in a few seconds.</p>",
                    status=503,
                )
            response["Retry-After"] = str(self.RETRY_AFTER_SECONDS)
            return response
        if is_api:
            logger.exception("unhandled error on %s (request %s)", request.path, request_id)
            return JsonResponse(
                {"detail": "Internal server error.", "code": "server_error", "request_id": request_id}, status=500
            )
        return None
