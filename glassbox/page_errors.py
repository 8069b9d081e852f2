"""The pages' side of glassbox/errors.py (api_errors.py is the API's):
selectors and services raise API-style errors, and a page turns a refusal
to read into a 403 page and a missing object into a 404 page."""

import functools

from django.core.exceptions import PermissionDenied
from django.http import Http404

from glassbox.errors import NotFound, NotPermitted


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
