"""Tampering with the trail, against the real PostgreSQL: the database
refuses it; a superuser who switches the triggers off is caught by
audit_verify at the exact event; one who also recomputes the whole chain is
caught by a checkpoint kept outside the database."""

import json

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, transaction

from governance.audit import GENESIS_HASH, compute_event_hash
from governance.models import AuditCheckpoint, AuditEvent
from tests.governance.auditing import CHECKPOINT_KEY, append_events, raw, triggers_disabled

pytestmark = pytest.mark.django_db

HASHED = (
    "created_at",
    "actor_id",
    "actor_username",
    "action",
    "outcome",
    "object_type",
    "object_id",
    "object_label",
    "model_name",
    "version_number",
    "changes",
    "detail",
    "request_id",
    "ip",
    "user_agent",
)


@pytest.fixture
def key(settings):
    settings.AUDIT_CHECKPOINT_KEY = CHECKPOINT_KEY
    return CHECKPOINT_KEY


def verify_fails(*args) -> str:
    with pytest.raises(CommandError) as failure:
        call_command("audit_verify", *args)
    assert failure.value.returncode == 1
    return str(failure.value)


def checkpoint_file(tmp_path, name: str = "checkpoint.json") -> str:
    path = tmp_path / name
    call_command("audit_checkpoint", "--output", str(path))
    return str(path)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE governance_auditevent SET object_label = 'forged'",
        "DELETE FROM governance_auditevent",
        "TRUNCATE governance_auditevent",
        "TRUNCATE governance_auditevent CASCADE",
    ],
)
def test_database_refuses_to_rewrite_the_trail(statement):
    events = append_events(3)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        raw(statement)
    assert list(AuditEvent.objects.order_by("id").values_list("hash", flat=True)) == [e.hash for e in events]


def test_modified_row_is_found_at_that_exact_event():
    events = append_events(10)
    with triggers_disabled():
        raw("UPDATE governance_auditevent SET object_label = 'approved by nobody' WHERE id = %s", [events[6].id])

    message = verify_fails()

    assert f"at event #{events[6].id}: content does not match its hash" in message


def test_modified_json_field_is_found():
    events = append_events(5)
    with triggers_disabled():
        raw(
            "UPDATE governance_auditevent SET changes = %s WHERE id = %s",
            ['{"after": {"status": "approved"}}', events[2].id],
        )
    assert f"at event #{events[2].id}: content does not match" in verify_fails()


def test_deleted_row_is_found_at_the_event_after_it():
    events = append_events(10)
    with triggers_disabled():
        raw("DELETE FROM governance_auditevent WHERE id = %s", [events[4].id])

    assert f"at event #{events[5].id}: prev_hash does not match the previous event's hash" in verify_fails()


def test_deleted_first_row_is_found():
    events = append_events(4)
    with triggers_disabled():
        raw("DELETE FROM governance_auditevent WHERE id = %s", [events[0].id])
    assert f"at event #{events[1].id}: prev_hash" in verify_fails()


def rewrite_chain_from(event_id: int) -> None:
    """What a careful database owner would do: recompute every hash from the
    changed event on, so that the chain alone looks intact."""
    rows = list(AuditEvent.objects.filter(id__gte=event_id).order_by("id").values("id", *HASHED))
    prev = AuditEvent.objects.filter(id__lt=event_id).order_by("-id").values_list("hash", flat=True).first()
    prev = prev or GENESIS_HASH
    for row in rows:
        new_hash = compute_event_hash(row, prev)
        raw("UPDATE governance_auditevent SET prev_hash = %s, hash = %s WHERE id = %s", [prev, new_hash, row["id"]])
        prev = new_hash


def test_fully_recomputed_chain_passes_plain_verify_but_not_a_checkpoint(key, tmp_path, capsys):
    events = append_events(12)
    checkpoint = checkpoint_file(tmp_path)
    later = append_events(3)

    with triggers_disabled():
        raw("UPDATE governance_auditevent SET actor_username = 'someone-else' WHERE id = %s", [events[3].id])
        rewrite_chain_from(events[3].id)

    call_command("audit_verify")  # the chain alone is consistent again
    assert "intact" in capsys.readouterr().out
    message = verify_fails("--checkpoint", checkpoint)
    head = json.loads(open(checkpoint).read())["event_id"]
    assert f"at event #{head}: hash differs from the checkpoint" in message
    assert head == events[-1].id and head < later[0].id


def test_checkpoint_catches_events_cut_off_the_end(key, tmp_path):
    append_events(5)
    checkpoint = checkpoint_file(tmp_path)
    head = json.loads(open(checkpoint).read())["event_id"]
    with triggers_disabled():
        raw("DELETE FROM governance_auditevent WHERE id >= %s", [head - 1])

    call_command("audit_verify")  # what is left is a valid, shorter chain
    assert f"at event #{head}: the event this checkpoint names is missing" in verify_fails("--checkpoint", checkpoint)


def test_intact_trail_matches_every_checkpoint(key, tmp_path, capsys):
    append_events(4)
    first = checkpoint_file(tmp_path, "one.json")
    append_events(4)
    second = checkpoint_file(tmp_path, "two.json")

    call_command("audit_verify", "--checkpoint", first, "--checkpoint", second)

    out = capsys.readouterr().out
    assert out.count(" matches (") == 2 and "intact" in out


@pytest.mark.parametrize("field", ["signature", "hash", "event_id", "created_at"])
def test_altered_checkpoint_fails_its_signature(key, tmp_path, field):
    events = append_events(6)
    path = checkpoint_file(tmp_path)
    statement = json.loads(open(path).read())
    statement[field] = {
        "signature": "0" * 64,
        "hash": events[2].hash,
        "event_id": events[2].id,
        "created_at": "2020-01-01T00:00:00.000000Z",
    }[field]
    open(path, "w").write(json.dumps(statement))

    assert "checkpoint signature is invalid" in verify_fails("--checkpoint", path)


def test_checkpoint_signed_with_another_key_is_reported(key, tmp_path, settings):
    append_events(3)
    path = checkpoint_file(tmp_path)
    settings.AUDIT_CHECKPOINT_KEY = "another-key-" + "x" * 40
    assert "checkpoint signature is invalid" in verify_fails("--checkpoint", path)


def test_checkpoint_records_itself_and_never_overwrites(key, tmp_path):
    append_events(2)
    path = checkpoint_file(tmp_path)
    statement = json.loads(open(path).read())

    assert set(statement) == {"event_id", "hash", "created_at", "signature"}
    assert statement["created_at"].endswith("Z")
    row = AuditCheckpoint.objects.get()
    assert (row.event_id, row.event_hash) == (statement["event_id"], statement["hash"])
    assert row.signature == statement["signature"]
    event = AuditEvent.objects.order_by("-id").first()
    assert event.action == "audit.checkpoint" and event.detail["event_id"] == statement["event_id"]
    with pytest.raises(CommandError, match="exists"):
        call_command("audit_checkpoint", "--output", path)


def test_checkpoint_to_stdout(key, capsys):
    append_events(1)
    call_command("audit_checkpoint")
    assert json.loads(capsys.readouterr().out)["signature"]


@pytest.mark.parametrize("value, message", [("", "AUDIT_CHECKPOINT_KEY is not set"), ("short", "at least 32")])
def test_no_signing_without_a_proper_key(settings, tmp_path, value, message):
    settings.AUDIT_CHECKPOINT_KEY = value
    append_events(1)
    with pytest.raises(CommandError, match=message):
        call_command("audit_checkpoint", "--output", str(tmp_path / "c.json"))
    assert not (tmp_path / "c.json").exists()
    assert not AuditCheckpoint.objects.exists()


def test_verifying_a_checkpoint_needs_the_key(settings, key, tmp_path):
    append_events(1)
    path = checkpoint_file(tmp_path)
    settings.AUDIT_CHECKPOINT_KEY = ""
    with pytest.raises(CommandError, match="AUDIT_CHECKPOINT_KEY is not set"):
        call_command("audit_verify", "--checkpoint", path)


def test_no_checkpoint_of_an_empty_trail(key):
    with pytest.raises(CommandError, match="empty"):
        call_command("audit_checkpoint")


def test_unreadable_checkpoint_file_is_a_clear_error(key, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(CommandError, match="Cannot read checkpoint"):
        call_command("audit_verify", "--checkpoint", str(bad))
    bad.write_text("[]")
    with pytest.raises(CommandError, match="not a checkpoint"):
        call_command("audit_verify", "--checkpoint", str(bad))
