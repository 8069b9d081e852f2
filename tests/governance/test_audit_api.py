"""GET /api/v1/audit/events/: who may read, the filters, keyset pages in
both directions, and query plans that stay on the (filter, id) indexes."""

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection

from governance import audit_selectors
from tests.conftest import UserFactory
from tests.governance.auditing import append_events

URL = "/api/v1/audit/events/"
pytestmark = pytest.mark.django_db


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [event["id"] for event in response.json()["results"]]


def walk(client, url: str, link: str) -> list[list[int]]:
    pages = []
    while url:
        response = client.get(url)
        pages.append(ids(response))
        url = response.json()[link]
    return pages


@pytest.fixture
def trail():
    """60 events over three days: two actors, two models, some refusals."""
    return append_events(
        60,
        created_at=lambda i: datetime(2026, 3, 1, tzinfo=UTC) + timedelta(hours=i),
        actor_username=lambda i: "erin" if i % 2 else "eli",
        model_name=lambda i: "zh-sentiment" if i % 3 else "spam-filter",
        version_number=lambda i: 1 + i % 2,
        outcome=lambda i: "denied" if i % 10 == 0 else "ok",
        action=lambda i: "model.create" if i % 5 == 0 else "version.create",
    )


def test_manager_reads_newest_first_with_every_field(api, manager, trail):
    response = api(manager).get(URL)
    body = response.json()
    assert ids(response) == [e.id for e in reversed(trail)][:50]
    newest = body["results"][0]
    assert set(newest) == set(audit_selectors.EVENT_FIELDS)
    assert newest["hash"] == trail[-1].hash and newest["created_at"].endswith("+00:00")
    assert body["previous"] is None and "before=" in body["next"]


def test_next_links_walk_the_whole_trail_once(api, manager, trail):
    pages = walk(api(manager), f"{URL}?limit=7", "next")
    walked = [event_id for page in pages for event_id in page]
    assert walked == [e.id for e in reversed(trail)]
    assert [len(page) for page in pages] == [7] * 8 + [4]


def test_previous_links_walk_back_from_the_oldest_page(api, manager, trail):
    pages = walk(api(manager), f"{URL}?after=0&limit=25", "previous")
    assert pages[0] == [e.id for e in reversed(trail[:25])]
    assert [event_id for page in reversed(pages) for event_id in page] == [e.id for e in reversed(trail)]
    oldest = api(manager).get(f"{URL}?after=0&limit=25").json()
    assert oldest["next"] is None


def test_links_keep_the_filters_and_the_page_size(api, manager, trail):
    body = api(manager).get(f"{URL}?actor=erin&limit=5").json()
    query = parse_qs(urlparse(body["next"]).query)
    assert query["actor"] == ["erin"] and query["limit"] == ["5"] and "before" in query


@pytest.mark.parametrize(
    "query, expected",
    [
        ("actor=erin", lambda e: e.actor_username == "erin"),
        ("action=model.create", lambda e: e.action == "model.create"),
        ("model=spam-filter", lambda e: e.model_name == "spam-filter"),
        ("model=zh-sentiment&version=2", lambda e: e.model_name == "zh-sentiment" and e.version_number == 2),
        ("outcome=denied", lambda e: e.outcome == "denied"),
        ("from=2026-03-02", lambda e: e.created_at >= datetime(2026, 3, 2, tzinfo=UTC)),
        ("to=2026-03-01", lambda e: e.created_at < datetime(2026, 3, 2, tzinfo=UTC)),
        (
            "from=2026-03-02T05:00:00&to=2026-03-02T07:00:00",
            lambda e: datetime(2026, 3, 2, 5, tzinfo=UTC) <= e.created_at <= datetime(2026, 3, 2, 7, tzinfo=UTC),
        ),
        (
            "from=2026-03-02T06:00:00%2B01:00&to=2026-03-02",
            lambda e: datetime(2026, 3, 2, 5, tzinfo=UTC) <= e.created_at < datetime(2026, 3, 3, tzinfo=UTC),
        ),
        (
            "actor=eli&action=model.create&outcome=denied",
            lambda e: (e.actor_username, e.action, e.outcome) == ("eli", "model.create", "denied"),
        ),
        ("from=2030-01-01", lambda e: False),
        ("actor=nobody", lambda e: False),
    ],
)
def test_filters(api, manager, trail, query, expected):
    pages = walk(api(manager), f"{URL}?{query}&limit=10", "next")
    assert [event_id for page in pages for event_id in page] == [e.id for e in reversed(trail) if expected(e)]


@pytest.mark.parametrize(
    "query, message",
    [
        ("version=2", "version needs model"),
        ("model=x&version=two", "version must be"),
        ("outcome=maybe", "outcome must be one of ok, denied"),
        ("from=yesterday", "from must be a date"),
        ("from=2026-03-02&to=2026-03-01", "from must be before to"),
        ("before=5&after=3", "not both"),
        ("before=-1", "before must be"),
        ("limit=0", "limit must be between 1 and 500"),
        ("limit=501", "limit must be between"),
        ("actor=" + "x" * 151, "actor is at most 150"),
    ],
)
def test_bad_filters_are_400_with_detail(api, manager, query, message):
    response = api(manager).get(f"{URL}?{query}")
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_who_may_read(api, engineer, reviewer, outsider, manager):
    admin = UserFactory(username="ada", role="admin")
    assert api(None).get(URL).status_code == 401
    for user in (engineer, reviewer, outsider):
        response = api(user).get(URL)
        assert response.status_code == 403
        assert response.json() == {
            "detail": "Only managers and admins may read the audit trail.",
            "code": "permission_denied",
        }
    assert api(manager).get(URL).status_code == 200
    assert api(admin).get(URL).status_code == 200


def test_engineers_do_not_read_events_of_their_own_models(api, engineer, sentiment_model):
    append_events(3, model_name=sentiment_model.name)
    response = api(engineer).get(f"{URL}?model={sentiment_model.name}")
    assert response.status_code == 403


def test_cursor_beyond_either_end(api, manager, trail):
    newest = api(manager).get(f"{URL}?after={trail[-1].id}").json()
    assert newest["results"] == [] and "before=" in newest["next"]
    oldest = api(manager).get(f"{URL}?before={trail[0].id}").json()
    assert oldest["results"] == [] and oldest["next"] is None and "after=" in oldest["previous"]


def test_listed_in_the_openapi_schema(client, db):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    import yaml

    paths = yaml.safe_load(response.content)["paths"]
    parameters = {p["name"] for p in paths["/api/v1/audit/events/"]["get"]["parameters"]}
    assert {"actor", "action", "model", "version", "outcome", "from", "to", "before", "after", "limit"} <= parameters


# --- query plans ---------------------------------------------------------------------


def plan_of(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.fixture
def big_trail():
    """Enough rows (and fresh statistics) for the planner to mean it."""
    events = append_events(
        20_000,
        actor_username=lambda i: f"user{i % 50}",
        action=lambda i: f"action.{i % 20}",
        model_name=lambda i: f"model-{i % 10}",
        version_number=lambda i: i % 3,
        outcome=lambda i: "denied" if i % 97 == 0 else "ok",
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE governance_auditevent")
    return events


# Which index a page may walk: the filter's own, or the primary key when the
# filter matches so many rows that walking ids and skipping is as cheap.
PAGE_PLANS = [
    ({}, {"governance_auditevent_pkey"}),
    ({"actor": "user7"}, {"audit_actor_username_id"}),
    ({"action": "action.3"}, {"audit_action_id", "governance_auditevent_pkey"}),
    ({"model": "model-9"}, {"audit_model_id", "governance_auditevent_pkey"}),
    ({"model": "model-9", "version": "2"}, {"audit_model_version_id", "governance_auditevent_pkey"}),
    ({"outcome": "denied"}, {"audit_outcome_id"}),
]
# (Two filters together may intersect their two indexes and sort what both
# match - a sort of the intersection, not of the trail.)


def test_every_page_is_an_index_scan_in_id_order_without_sort(manager, big_trail):
    middle = big_trail[len(big_trail) // 2].id
    for params, indexes in PAGE_PLANS:
        events = audit_selectors.audit_event_queryset(user=manager, query=audit_selectors.audit_query_parse(params))
        pages = {
            "first": events.order_by("-id"),
            "middle": events.filter(id__lt=middle).order_by("-id"),
            "last": events.filter(id__gt=0).order_by("id"),
        }
        for position, page in pages.items():
            plan = plan_of(page[:51])
            assert "Index Scan" in plan and any(index in plan for index in indexes), (params, position, plan)
            for slow in ("Sort", "Seq Scan", "Bitmap"):
                assert slow not in plan, (params, position, plan)


def test_date_range_becomes_an_id_range(manager, big_trail):
    since = big_trail[100].created_at
    until = big_trail[200].created_at
    query = audit_selectors.audit_query_parse({"from": since.isoformat(), "to": until.isoformat()})
    events = audit_selectors.audit_event_queryset(user=manager, query=query)

    plan = plan_of(events.order_by("-id")[:51])

    assert "governance_auditevent_pkey" in plan and "Sort" not in plan, plan
    assert f"id >= {big_trail[100].id}" in plan and f"id <= {big_trail[200].id}" in plan, plan
    assert "created_at" not in plan, plan
    assert list(events.order_by("id").values_list("id", flat=True)) == [e.id for e in big_trail[100:201]]
