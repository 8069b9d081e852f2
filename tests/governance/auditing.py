"""Helpers the audit-trail tests share: bulk chains, switching the append-only
triggers off the way a database superuser could, and checkpoint keys."""

from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from django.db import connection

from governance.audit import chain_head, chained_events
from governance.models import AuditEvent

CHECKPOINT_KEY = "k" * 16 + "test-checkpoint-key-0123456789abcdef"


def event_fields(i: int, *, start: datetime | None = None, **overrides) -> dict:
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    fields = {
        "created_at": start + timedelta(minutes=i),
        "actor_id": None,
        "actor_username": "erin",
        "action": "version.create",
        "outcome": "ok",
        "object_type": "registry.modelversion",
        "object_id": str(i),
        "object_label": f"zh-sentiment v{i}",
        "model_name": "zh-sentiment",
        "version_number": i,
        "changes": {"after": {"status": "registered", "sha256": f"{i:064x}"}},
        "detail": {"size": i * 1000, "labels": ["负面", "正面"]},
        "request_id": f"req-{i}",
        "ip": "10.0.0.1",
        "user_agent": "pytest",
    }
    fields.update(overrides)
    return fields


def append_events(count: int, **overrides) -> list[AuditEvent]:
    """`count` chained events after the current head, bulk-inserted (the
    same hashes record_event would give them). Overrides may be callables of i."""
    head = chain_head()
    base = AuditEvent.objects.order_by("-id").values_list("created_at", flat=True).first()
    start = (base + timedelta(seconds=1)) if base else None
    rows = []
    for i in range(count):
        values = {name: value(i) if callable(value) else value for name, value in overrides.items()}
        rows.append(event_fields(i, start=start, **values))
    return AuditEvent.objects.bulk_create(list(chained_events(rows, prev_hash=head)))


@contextmanager
def triggers_disabled():
    """What a superuser can do: switch user triggers off, here only until
    the end of the test's transaction (SET LOCAL)."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = origin")


def raw(sql: str, params=None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
