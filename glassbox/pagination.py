"""Cursor pagination for every API list: `?cursor=` (opaque, from a `next` or
`previous` link) and `?page_size=` (default 50, at most 200: a larger value
is clamped to 200), answering `{"next": url|null, "previous": url|null,
"results": [...]}`.

A cursor is DRF's: a position on the list's first ordering field plus an
offset for ties, so a page costs one indexed query however deep it is, and
rows added meanwhile never shift the pages a client is walking. A cursor
that does not decode, or whose position does not fit the ordering field, is
the caller's mistake: 400 with code `invalid_cursor` (DRF answers 404)."""

import base64
from urllib import parse

from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from glassbox.errors import InvalidInput

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


class CursorPage(CursorPagination):
    page_size = DEFAULT_PAGE_SIZE
    max_page_size = MAX_PAGE_SIZE
    page_size_query_param = "page_size"
    page_size_query_description = (
        f"results per page, 1 or more (default {DEFAULT_PAGE_SIZE}; above {MAX_PAGE_SIZE} counts as {MAX_PAGE_SIZE})"
    )
    cursor_query_description = "where to start: the cursor of a `next` or `previous` link (opaque)"
    ordering = "-id"
    # The browsable API is off; no HTML page controls.
    template = None

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        text = raw.strip()
        if not text.isdigit() or len(text) > 9 or int(text) < 1:
            raise InvalidInput("page_size must be a whole number of 1 or more.", code="invalid_page_size")
        return min(int(text), self.max_page_size)

    def decode_cursor(self, request):
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        # DRF's decoding skips characters outside base64 (so "%%%" would read
        # as "the first page"): check the cursor is one we could have written.
        try:
            text = base64.b64decode(encoded.encode("ascii"), validate=True).decode("ascii")
        except (ValueError, UnicodeError):
            raise _invalid_cursor() from None
        fields = parse.parse_qs(text, keep_blank_values=True)
        if not fields or set(fields) - {"o", "r", "p"} or any(len(values) > 1 for values in fields.values()):
            raise _invalid_cursor()
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            raise _invalid_cursor() from None

    def paginate_queryset(self, queryset, request, view=None):
        self._check_position(queryset, request)
        return super().paginate_queryset(queryset, request, view)

    def _check_position(self, queryset, request) -> None:
        """A cursor's position must parse as a value of the ordering field
        (else the database query itself would fail)."""
        cursor = self.decode_cursor(request)
        if cursor is None or cursor.position is None:
            return
        if "\x00" in cursor.position:  # PostgreSQL text cannot hold NUL
            raise _invalid_cursor()
        ordering = self.get_ordering(request, queryset, None)
        name = ordering[0].lstrip("-")
        try:
            field = queryset.model._meta.get_field(name)
        except FieldDoesNotExist:
            # An annotation (e.g. a username copied onto the row): text compares as text.
            return
        try:
            value = field.to_python(cursor.position)
        except (DjangoValidationError, ValueError, TypeError, OverflowError):
            raise _invalid_cursor() from None
        if isinstance(value, int) and not -(2**63) < value < 2**63:
            raise _invalid_cursor()

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "default": self.page_size}
        return parameters


def _invalid_cursor() -> InvalidInput:
    return InvalidInput("Invalid cursor: pass the one a `next` or `previous` link gave.", code="invalid_cursor")


def paginated_response(request, queryset, serializer_class, *, ordering, view=None, context=None) -> Response:
    """One page of `queryset` in `ordering` (a unique or nearly unique first
    field, no `__` lookups), serialized, with its links."""
    paginator = CursorPage()
    paginator.ordering = ordering
    page = paginator.paginate_queryset(queryset, request, view)
    data = serializer_class(page, many=True, context=context or {}).data
    return paginator.get_paginated_response(data)
