"""The hash chain: its canonical form, what record_event stores, linear
appends under concurrency, and verification (in one process or several)."""

import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.core.management import call_command
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.audit import (
    GENESIS_HASH,
    HASHED_FIELDS,
    _json_roundtrip,
    compute_event_hash,
    record_event,
)
from governance.audit_integrity import verify_chain
from governance.models import AuditEvent
from tests.governance.auditing import append_events, raw, triggers_disabled

pytestmark = pytest.mark.django_db

# Text that is hard to escape: quotes, backslashes, control characters, DEL,
# line separators, CJK, astral-plane emoji.
nasty_text = st.text(alphabet=st.sampled_from('ab"\\\n\r\t\b\f\x01\x1f\x7f\u2028é中😀 /<>'), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False) | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)


def reference_hash(fields: dict, prev_hash: str) -> str:
    """The definition in words: SHA-256 of json.dumps(sort_keys=True,
    compact, ensure_ascii=False) of the hashed fields and prev_hash."""
    content = {name: fields[name] for name in HASHED_FIELDS}
    content["created_at"] = content["created_at"].astimezone(UTC).isoformat(timespec="microseconds")
    content["prev_hash"] = prev_hash
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=nasty_text,
    actor_id=st.none() | st.integers(1, 10**9),
    version=st.none() | st.integers(0, 10**6),
    changes=st.dictionaries(nasty_text, json_values, max_size=4),
    moment=st.datetimes(timezones=st.sampled_from([UTC, datetime.now().astimezone().tzinfo])),
)
def test_fast_canonical_form_is_json_dumps_byte_for_byte(text, actor_id, version, changes, moment):
    fields = {
        "created_at": moment,
        "actor_id": actor_id,
        "actor_username": text,
        "action": text,
        "outcome": "ok",
        "object_type": text,
        "object_id": text,
        "object_label": text,
        "model_name": text,
        "version_number": version,
        "changes": _json_roundtrip(changes),
        "detail": {},
        "request_id": text,
        "ip": text,
        "user_agent": text,
    }
    assert compute_event_hash(fields, GENESIS_HASH) == reference_hash(fields, GENESIS_HASH)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(detail=st.dictionaries(nasty_text, json_values | st.tuples(st.integers()), max_size=5), label=nasty_text)
def test_whatever_an_event_holds_the_stored_chain_verifies(detail, label):
    record_event(actor=None, action="test.anything", object_label=label, detail=detail, changes={"x": detail})
    checked, broken = verify_chain()
    assert broken is None
    assert checked == AuditEvent.objects.count()


def test_values_postgres_would_change_are_stored_as_they_come_back(engineer):
    odd = {
        "big": 1e16,
        "tiny": 1e-7,
        "negative_zero": -0.0,
        "nan": float("nan"),
        "inf": float("-inf"),
        "nul": "a\x00b",
        "when": datetime(2026, 1, 1, tzinfo=UTC),
        "tuple": (1, 2),
    }
    event = record_event(actor=engineer, action="test.odd", object_label="nul\x00here", detail=odd)
    event.refresh_from_db()

    assert event.detail == {
        "big": 10**16,
        "tiny": 1e-7,
        "negative_zero": 0.0,
        "nan": "NaN",
        "inf": "-Infinity",
        "nul": "a\ufffdb",
        "when": "2026-01-01 00:00:00+00:00",
        "tuple": [1, 2],
    }
    assert event.object_label == "nul\ufffdhere"
    assert verify_chain() == (1, None)


def test_events_link_from_genesis_and_carry_who_where_when(client, engineer):
    client.force_login(engineer)  # records auth.login with the request's context
    client.post(
        "/api/v1/models/", {"name": "linked", "risk_tier": "low"}, HTTP_USER_AGENT="curl/8", REMOTE_ADDR="10.1.2.3"
    )

    events = list(AuditEvent.objects.order_by("id"))
    assert events[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(events, events[1:]))
    created = AuditEvent.objects.get(action="model.create")
    assert (created.actor_username, created.ip, created.user_agent) == ("erin", "10.1.2.3", "curl/8")
    assert len(created.request_id) == 32 and created.created_at.tzinfo is not None


def test_time_never_goes_backwards_along_the_chain():
    first = record_event(actor=None, action="test.first")
    with mock.patch("governance.audit.timezone.now", return_value=first.created_at - timedelta(hours=1)):
        second = record_event(actor=None, action="test.clock-stepped-back")
    assert second.created_at == first.created_at
    assert verify_chain() == (2, None)


def test_verify_command_reports_count_and_rate(capsys):
    append_events(25)
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert "Checked 25 events" in out and "events/s" in out and "intact" in out


def test_verify_names_the_first_of_several_broken_events():
    events = append_events(30)
    with triggers_disabled():
        raw("UPDATE governance_auditevent SET ip = '6.6.6.6' WHERE id IN (%s, %s)", [events[20].id, events[7].id])
    assert verify_chain(batch_size=4) == (7, mock.ANY)
    assert verify_chain(batch_size=4)[1].event_id == events[7].id


@pytest.fixture
def threads_done():
    """Threads open their own connections; close them so the test database can go."""
    yield
    connection.close()


def test_appends_stay_linear_under_concurrency(committed_db, threads_done):
    workers, per_worker = 8, 25
    barrier = threading.Barrier(workers)
    errors = []

    def append(n: int) -> None:
        from django.db import connection as thread_connection

        try:
            barrier.wait()
            for i in range(per_worker):
                record_event(actor=None, action="test.concurrent", object_label=f"w{n}-{i}")
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=append, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    rows = list(AuditEvent.objects.order_by("id").values_list("prev_hash", "hash", "created_at"))
    assert len(rows) == workers * per_worker
    prev_hashes = [prev for prev, _, _ in rows]
    assert len(set(prev_hashes)) == len(rows), "a fork: two events claim the same predecessor"
    assert prev_hashes[0] == GENESIS_HASH
    assert [prev for prev, _, _ in rows[1:]] == [h for _, h, _ in rows[:-1]]
    assert [when for _, _, when in rows] == sorted(when for _, _, when in rows)
    assert verify_chain() == (workers * per_worker, None)


def test_parallel_verify_finds_what_a_single_pass_finds(committed_db):
    events = append_events(400)
    assert verify_chain(batch_size=37, workers=3) == (400, None)

    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("UPDATE governance_auditevent SET object_label = 'forged' WHERE id = %s", [events[250].id])
        cursor.execute("COMMIT")

    single = verify_chain(batch_size=37, workers=1)
    assert single[1].event_id == events[250].id and single[0] == 250
    assert verify_chain(batch_size=37, workers=3) == single
