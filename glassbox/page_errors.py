"""The pages' side of glassbox/errors.py (api_errors.py is the API's):
selectors and services raise API-style errors, and a page turns a refusal
to read into a 403 page and a missing object into a 404 page; any other
refusal of a service is shown on the page (`service_call`)."""

import functools
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404

from glassbox.errors import GlassboxError, NotFound, NotPermitted


def page_errors(view):
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from exc
        except NotPermitted as exc:
            raise PermissionDenied(exc.message) from exc

    return wrapper


def service_call(
    request,
    service: Callable[..., Any],
    /,
    *,
    success: Callable[[Any], str],
    refusal_as_message: bool = False,
    **arguments,
) -> tuple[Any, GlassboxError | None]:
    """Call a service for a page: `(result, None)` after the `success(result)`
    message, or `(None, refusal)` for the page to show (as a message when
    `refusal_as_message`, else the page's own way). NotPermitted goes on up,
    for page_errors to answer 403."""
    try:
        result = service(**arguments)
    except NotPermitted:
        raise
    except GlassboxError as exc:
        if refusal_as_message:
            messages.error(request, exc.message)
        return None, exc
    messages.success(request, success(result))
    return result, None
