"""Reads of the audit trail: who may read it, its filters, keyset pages and
export rows.

Who reads: managers and admins (`governance.view_auditevent`), nobody
else. Reviewers read what they decide on - a version's review history and
dossier - but not the whole trail, which holds everyone's logins, IPs, user
agents and refused attempts (the same permission opens the manager
dashboard and the dossier's audit section). Engineers get 403 too, even for
events about models they registered: the first line does not read the
second line's record; their versions' pages show them where a review stands.

Pages are keyset-paginated by id (newest first, `?before=<id>` for older,
`?after=<id>` for newer), never OFFSET: every page, the first or the
millionth, is one index range scan of `limit + 1` rows. Each filter has a
(column, id) index (AuditEvent.Meta). Dates become id bounds: events are
stamped under the chain lock and never earlier than the event before them,
so time order is id order.
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_date, parse_datetime

from glassbox.errors import InvalidInput, NotPermitted
from governance.access import VIEW_ALL_MODELS, model_read_filter
from governance.audit import HASHED_FIELDS, event_timestamp
from governance.models import AuditEvent

AUDIT_READ_PERMISSION = "governance.view_auditevent"
FILTER_PARAMS = ("actor", "action", "model", "version", "outcome", "from", "to")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
EXPORT_CHUNK_SIZE = 2000
# What the API and the exports show of an event: its stored fields, under
# their own names, so that anyone can recompute a hash from an export.
EVENT_FIELDS = ("id", *HASHED_FIELDS, "prev_hash", "hash")


def can_read_audit(user) -> bool:
    return user.is_authenticated and user.has_perm(AUDIT_READ_PERMISSION)


def require_audit_read(user) -> None:
    if not can_read_audit(user):
        raise NotPermitted("Only managers and admins may read the audit trail.")


@dataclass(frozen=True)
class AuditQuery:
    actor: str = ""
    action: str = ""
    model: str = ""
    version: int | None = None
    outcome: str = ""
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    # The filters as given, for links to other pages and for the export's record.
    given: dict[str, str] = field(default_factory=dict)


def _moment(text: str, *, name: str, end_of_day: bool) -> datetime:
    # A bare date first: parse_datetime() would read "2026-03-01" as midnight.
    day = parse_date(text)
    if day is not None:
        return datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min, tzinfo=UTC)
    moment = parse_datetime(text)
    if moment is None:
        raise InvalidInput(f"{name} must be a date (YYYY-MM-DD) or an ISO 8601 date and time, not {text!r}.")
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    # `to` is inclusive: an event at exactly that microsecond is in.
    return moment + timedelta(microseconds=1) if end_of_day else moment


def audit_query_parse(params: Mapping[str, str]) -> AuditQuery:
    """The filters of a page, an export or an API call, checked. `from` and
    `to` take a date (the whole day) or a date and time (UTC unless given)."""
    given = {name: params[name].strip() for name in FILTER_PARAMS if params.get(name, "").strip()}
    limits = {"actor": 150, "action": 64, "model": 100}
    for name, limit in limits.items():
        if len(given.get(name, "")) > limit:
            raise InvalidInput(f"{name} is at most {limit} characters.")
    outcome = given.get("outcome", "")
    if outcome and outcome not in AuditEvent.Outcome.values:
        raise InvalidInput(f"outcome must be one of {', '.join(AuditEvent.Outcome.values)}.")
    version = None
    if "version" in given:
        if not given["version"].isdigit() or int(given["version"]) < 1 or len(given["version"]) > 9:
            raise InvalidInput("version must be a version number (1, 2, ...).")
        if "model" not in given:
            raise InvalidInput("version needs model: version numbers are per model.")
        version = int(given["version"])
    since = _moment(given["from"], name="from", end_of_day=False) if "from" in given else None
    until = _moment(given["to"], name="to", end_of_day=True) if "to" in given else None
    if since and until and since >= until:
        raise InvalidInput("from must be before to.")
    return AuditQuery(
        actor=given.get("actor", ""),
        action=given.get("action", ""),
        model=given.get("model", ""),
        version=version,
        outcome=outcome,
        since=since,
        until=until,
        given=given,
    )


@dataclass(frozen=True)
class AuditCursor:
    before: int | None = None
    after: int | None = None
    limit: int = DEFAULT_PAGE_SIZE


def audit_cursor_parse(params: Mapping[str, str], *, max_limit: int = MAX_PAGE_SIZE) -> AuditCursor:
    values: dict[str, int] = {}
    for name in ("before", "after", "limit"):
        text = params.get(name, "").strip()
        if text:
            if not text.isdigit() or len(text) > 19:
                raise InvalidInput(f"{name} must be a non-negative whole number.")
            values[name] = int(text)
    if "before" in values and "after" in values:
        raise InvalidInput("Give before or after, not both.")
    limit = values.get("limit", DEFAULT_PAGE_SIZE)
    if not 1 <= limit <= max_limit:
        raise InvalidInput(f"limit must be between 1 and {max_limit}.")
    return AuditCursor(before=values.get("before"), after=values.get("after"), limit=limit)


def _id_bounds(query: AuditQuery) -> tuple[int | None, int | None] | None:
    """The id range of the date range, from the created_at index (two index
    probes). None when no event falls in it."""
    low = high = None
    if query.since is not None:
        low = (
            AuditEvent.objects.filter(created_at__gte=query.since)
            .order_by("created_at", "id")
            .values_list("id", flat=True)
            .first()
        )
        if low is None:
            return None
    if query.until is not None:
        high = (
            AuditEvent.objects.filter(created_at__lt=query.until)
            .order_by("-created_at", "-id")
            .values_list("id", flat=True)
            .first()
        )
        if high is None or (low is not None and high < low):
            return None
    return low, high


def audit_event_queryset(*, user, query: AuditQuery) -> QuerySet[AuditEvent]:
    """The events matching the filters, unordered (callers order by id)."""
    require_audit_read(user)
    events = AuditEvent.objects.all()
    if not user.has_perm(VIEW_ALL_MODELS):
        # A reader who may not see every model sees the platform's own events
        # and those of the models they may read (today every audit reader, a
        # manager or an admin, sees every model: this holds for a new role).
        from registry.models import RegisteredModel

        readable = RegisteredModel.objects.filter(model_read_filter(user)).values("name")
        events = events.filter(Q(model_name="") | Q(model_name__in=readable))
    if query.actor:
        events = events.filter(actor_username=query.actor)
    if query.action:
        events = events.filter(action=query.action)
    if query.model:
        events = events.filter(model_name=query.model)
    if query.version is not None:
        events = events.filter(version_number=query.version)
    if query.outcome:
        events = events.filter(outcome=query.outcome)
    if query.since is not None or query.until is not None:
        bounds = _id_bounds(query)
        if bounds is None:
            return events.none()
        low, high = bounds
        # Only the id bounds: time order is id order, and a created_at
        # condition next to them would tempt the planner into a bitmap scan
        # and a sort of the whole range.
        if low is not None:
            events = events.filter(id__gte=low)
        if high is not None:
            events = events.filter(id__lte=high)
    return events


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    # Cursors for the neighbouring pages, None at either end of the trail.
    newer: int | None
    older: int | None


def audit_event_page(*, user, query: AuditQuery, cursor: AuditCursor) -> AuditPage:
    """One page, newest first. Each neighbour is known by fetching one row
    more than the page in the direction of travel and by one indexed
    existence probe in the other."""
    events = audit_event_queryset(user=user, query=query)
    limit = cursor.limit
    if cursor.after is not None:
        rows = list(events.filter(id__gt=cursor.after).order_by("id")[: limit + 1])
        more_newer = len(rows) > limit
        rows = rows[:limit][::-1]
        if not rows:
            older = cursor.after + 1 if events.filter(id__lte=cursor.after).exists() else None
            return AuditPage([], None, older)
        older = rows[-1].id if events.filter(id__lt=rows[-1].id).exists() else None
        return AuditPage(rows, rows[0].id if more_newer else None, older)
    page = events.filter(id__lt=cursor.before) if cursor.before is not None else events
    rows = list(page.order_by("-id")[: limit + 1])
    more_older = len(rows) > limit
    rows = rows[:limit]
    if cursor.before is None:
        newer = None
    elif not rows:
        newer = cursor.before - 1 if events.filter(id__gte=cursor.before).exists() else None
    else:
        newer = rows[0].id if events.filter(id__gt=rows[0].id).exists() else None
    return AuditPage(rows, newer, rows[-1].id if more_older and rows else None)


def audit_event_rows(*, user, query: AuditQuery, chunk_size: int = EXPORT_CHUNK_SIZE) -> Iterator[dict]:
    """Every matching event, oldest first, as plain dicts (EVENT_FIELDS, the
    time as hashed), read in keyset chunks so that memory stays constant
    however long the trail. Bounded by the head at the start: the export is
    one consistent prefix of the chain even while events are appended."""
    events = audit_event_queryset(user=user, query=query)  # checks permission now, not when first iterated
    head = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def chunks() -> Iterator[dict]:
        last = 0
        while True:
            chunk = list(events.filter(id__gt=last, id__lte=head).order_by("id").values(*EVENT_FIELDS)[:chunk_size])
            for row in chunk:
                row["created_at"] = event_timestamp(row["created_at"])
                yield row
            if len(chunk) < chunk_size:
                return
            last = chunk[-1]["id"]

    return chunks()
