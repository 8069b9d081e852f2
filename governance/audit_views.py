"""The audit trail page and its streamed CSV / JSON exports (same filters
and selectors as GET /api/v1/audit/events/)."""

import csv
import json
from collections.abc import Iterable, Iterator
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from glassbox.errors import InvalidInput, NotPermitted
from governance import audit_selectors as selectors
from governance.audit import canonical_json, record_export
from governance.models import AuditEvent


def _require_read(request) -> None:
    try:
        selectors.require_audit_read(request.user)
    except NotPermitted as exc:
        raise PermissionDenied(exc.message) from exc


@require_safe
@login_required
def audit_trail(request):
    _require_read(request)
    context = {
        "filters": {name: request.GET.get(name, "") for name in selectors.FILTER_PARAMS},
        "outcomes": AuditEvent.Outcome.values,
        "events": [],
        "error": None,
    }
    try:
        query = selectors.audit_query_parse(request.GET)
        cursor = selectors.audit_cursor_parse(request.GET, max_limit=selectors.MAX_PAGE_SIZE)
    except InvalidInput as exc:
        context["error"] = exc.message
        return render(request, "governance/audit_trail.html", context, status=400)
    page = selectors.audit_event_page(user=request.user, query=query, cursor=cursor)
    for event in page.events:
        # Shown as the JSON that was hashed, not as Python's repr of a dict.
        event.changes_json = canonical_json(event.changes) if event.changes else ""
        event.detail_json = canonical_json(event.detail) if event.detail else ""
    filters = urlencode(query.given)
    context.update(
        events=page.events,
        filter_query=filters,
        newer_query=urlencode({**query.given, "after": page.newer}) if page.newer is not None else None,
        older_query=urlencode({**query.given, "before": page.older}) if page.older is not None else None,
        oldest_query=urlencode({**query.given, "after": 0}),
        at_newest=cursor.before is None and cursor.after is None,
    )
    return render(request, "governance/audit_trail.html", context)


# Spreadsheets run cells that start like a formula; user agents and labels
# come from outside, so such cells get a leading quote in the CSV (the JSON
# export keeps every value exactly as hashed).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = canonical_json(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


class _Echo:
    """A file-like csv.writer target that hands back each line."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(rows: Iterable[dict]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(selectors.EVENT_FIELDS)
    for row in rows:
        yield writer.writerow([_csv_cell(row[name]) for name in selectors.EVENT_FIELDS])


def _json_chunks(rows: Iterable[dict]) -> Iterator[str]:
    # One JSON array, written an event at a time.
    yield "["
    separator = "\n"
    for row in rows:
        yield separator + json.dumps(row, ensure_ascii=False, separators=(",", ":"))
        separator = ",\n"
    yield "\n]\n"


def _export(request, fmt: str) -> StreamingHttpResponse:
    _require_read(request)
    try:
        query = selectors.audit_query_parse(request.GET)
    except InvalidInput as exc:
        return render(
            request,
            "governance/audit_trail.html",
            {"error": exc.message, "filters": {n: request.GET.get(n, "") for n in selectors.FILTER_PARAMS}},
            status=400,
        )
    rows = selectors.audit_event_rows(user=request.user, query=query)
    record_export(actor=request.user, fmt=fmt, filters=query.given)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "csv":
        response = StreamingHttpResponse(_csv_lines(rows), content_type="text/csv; charset=utf-8")
    else:
        response = StreamingHttpResponse(_json_chunks(rows), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="glassbox-audit-{stamp}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response


@require_safe
@login_required
def audit_export_csv(request):
    return _export(request, "csv")


@require_safe
@login_required
def audit_export_json(request):
    return _export(request, "json")
