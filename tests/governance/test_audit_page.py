"""The audit trail page and its streamed exports."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from governance import audit_selectors
from governance.audit import compute_event_hash
from governance.models import AuditEvent
from tests.conftest import UserFactory, page_client_for
from tests.governance.auditing import append_events

pytestmark = pytest.mark.django_db


def body(response) -> str:
    return b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()


@pytest.fixture
def trail():
    return append_events(
        30,
        created_at=lambda i: datetime(2026, 5, 1, tzinfo=UTC) + timedelta(hours=i),
        actor_username=lambda i: "erin" if i % 2 else "eli",
        object_label=lambda i: '=HYPERLINK("http://evil")' if i == 3 else f"label {i}",
    )


def test_manager_sees_the_newest_events_and_the_filter_form(manager, trail):
    response = page_client_for(manager).get("/audit/?limit=10")
    assert response.status_code == 200
    page = body(response)
    assert 'name="actor"' in page and 'name="from"' in page and 'name="outcome"' in page
    events = list(response.context["events"])
    assert events[0].action == "auth.login" and events[0].actor_username == "max"  # this very login
    assert [e.id for e in events[1:]] == [e.id for e in reversed(trail)][:9]
    assert "Older ›" in page and "‹ Newer" not in page
    assert "<code>{&quot;after&quot;:{&quot;sha256&quot;:" in page  # JSON as hashed, not a Python repr


def test_older_and_newer_links_page_through(manager, trail):
    client = page_client_for(manager)
    first = client.get("/audit/?actor=erin&limit=10")
    assert [e.actor_username for e in first.context["events"]] == ["erin"] * 10
    second = client.get(f"/audit/?{first.context['older_query']}")
    assert [e.id for e in second.context["events"]] == [e.id for e in reversed(trail) if e.actor_username == "erin"][
        10:15
    ]
    back = client.get(f"/audit/?{second.context['newer_query']}&limit=10")
    assert [e.id for e in back.context["events"]] == [e.id for e in first.context["events"]]
    assert "actor=erin" in second.context["newer_query"] and second.context["older_query"] is None


def test_oldest_page(manager, trail):
    response = page_client_for(manager).get("/audit/?after=0&limit=5")
    assert [e.id for e in response.context["events"]] == [e.id for e in reversed(trail[:5])]
    assert response.context["older_query"] is None and response.context["newer_query"]


def test_bad_filter_is_a_400_page_with_the_reason(manager):
    response = page_client_for(manager).get("/audit/?version=3")
    assert response.status_code == 400
    assert "version needs model" in body(response)


@pytest.mark.parametrize("persona", ["engineer", "reviewer", "outsider"])
def test_only_managers_and_admins_open_the_page(request, persona):
    user = request.getfixturevalue(persona)
    for url in ("/audit/", "/audit/export.csv", "/audit/export.json"):
        assert page_client_for(user).get(url).status_code == 403
    admin = UserFactory(username="ada", role="admin")
    assert page_client_for(admin).get("/audit/").status_code == 200


def test_anonymous_is_sent_to_login(client, db):
    response = client.get("/audit/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_nav_shows_the_trail_to_managers_only(manager, engineer):
    assert 'href="/audit/"' in body(page_client_for(manager).get("/models/"))
    assert 'href="/audit/"' not in body(page_client_for(engineer).get("/models/"))


def test_page_and_exports_refuse_writes(manager):
    client = page_client_for(manager)
    for url in ("/audit/", "/audit/export.csv", "/audit/export.json"):
        assert client.post(url).status_code == 405


def test_csv_export_streams_the_filtered_trail_oldest_first(manager, trail):
    response = page_client_for(manager).get("/audit/export.csv?actor=erin")

    assert response.streaming and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="glassbox-audit-')
    rows = list(csv.DictReader(io.StringIO(body(response))))
    assert [int(r["id"]) for r in rows] == [e.id for e in trail if e.actor_username == "erin"]
    assert list(rows[0]) == list(audit_selectors.EVENT_FIELDS)
    forged = next(r for r in rows if r["id"] == str(trail[3].id))
    assert forged["object_label"] == '\'=HYPERLINK("http://evil")'  # not a formula in a spreadsheet
    assert json.loads(rows[0]["changes"]) == trail[1].changes


def test_json_export_lets_anyone_recompute_every_hash(manager, trail):
    response = page_client_for(manager).get("/audit/export.json")

    assert response.streaming and response["Content-Type"] == "application/json"
    events = json.loads(body(response))
    stored = AuditEvent.objects.filter(id__lte=events[-1]["id"]).order_by("id").values_list("id", flat=True)
    assert [e["id"] for e in events] == list(stored)
    for event in events:
        fields = {**event, "created_at": datetime.fromisoformat(event["created_at"])}
        assert compute_event_hash(fields, event["prev_hash"]) == event["hash"]
    assert all(later["prev_hash"] == earlier["hash"] for earlier, later in zip(events, events[1:]))


def test_export_is_recorded(manager, trail):
    page_client_for(manager).get("/audit/export.json?model=zh-sentiment&outcome=ok")
    event = AuditEvent.objects.filter(action="audit.export").get()
    assert event.actor_username == "max"
    assert event.detail == {"format": "json", "filters": {"model": "zh-sentiment", "outcome": "ok"}}


def test_export_reads_in_chunks_and_stops_at_the_head_it_started_from(manager, trail):
    rows = audit_selectors.audit_event_rows(user=manager, query=audit_selectors.audit_query_parse({}), chunk_size=7)
    first = next(rows)
    append_events(5)  # appended while the export runs
    remaining = list(rows)
    assert [first["id"], *[r["id"] for r in remaining]] == [e.id for e in trail]
    assert first["created_at"] == trail[0].created_at.isoformat(timespec="microseconds")


def test_export_with_bad_filter_is_400_and_not_recorded(manager):
    response = page_client_for(manager).get("/audit/export.csv?outcome=perhaps")
    assert response.status_code == 400
    assert not AuditEvent.objects.filter(action="audit.export").exists()
