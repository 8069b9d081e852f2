"""Appending to, and checking, the hash-chained audit trail.

Each event's hash is SHA-256 over a canonical JSON of its content plus the
previous event's hash. Appends are serialized (an advisory lock on
PostgreSQL; SQLite serializes writers by itself) so the chain stays linear.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from governance.middleware import current_request_context
from governance.models import AuditEvent

GENESIS_HASH = "0" * 64
# An arbitrary constant naming "the audit chain" among PostgreSQL advisory locks.
_AUDIT_CHAIN_LOCK_KEY = 0x61756469  # "audi"

HASHED_FIELDS = (
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


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def compute_event_hash(fields: dict[str, Any], prev_hash: str) -> str:
    content = {name: fields[name] for name in HASHED_FIELDS}
    content["created_at"] = _timestamp(content["created_at"])
    content["prev_hash"] = prev_hash
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_AUDIT_CHAIN_LOCK_KEY])


def _json_roundtrip(value: Any) -> Any:
    # Hash exactly what the database will hand back later (tuples become
    # lists, non-JSON types their str()), so verification agrees with us.
    return json.loads(canonical_json(value or {}))


def record_event(
    *,
    actor,
    action: str,
    obj: Any = None,
    object_type: str = "",
    object_id: str | int = "",
    object_label: str = "",
    model_name: str = "",
    version_number: int | None = None,
    changes: dict | None = None,
    detail: dict | None = None,
    outcome: str = AuditEvent.Outcome.OK,
) -> AuditEvent:
    """Append one event. Call it inside the transaction of the change it records."""
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or obj.pk
        object_label = object_label or str(obj)
        audit_scope = getattr(obj, "audit_scope", None)
        if audit_scope is not None:
            scope_model, scope_version = audit_scope()
            model_name = model_name or scope_model
            version_number = version_number if version_number is not None else scope_version
    context = current_request_context()
    is_user = actor is not None and getattr(actor, "is_authenticated", False)
    fields = {
        "created_at": timezone.now(),
        "actor_id": actor.pk if is_user else None,
        "actor_username": actor.get_username() if is_user else "",
        "action": action,
        "outcome": outcome,
        "object_type": object_type,
        "object_id": str(object_id or ""),
        "object_label": object_label[:300],
        "model_name": model_name,
        "version_number": version_number,
        "changes": _json_roundtrip(changes),
        "detail": _json_roundtrip(detail),
        "request_id": context.request_id if context else "",
        "ip": context.ip if context else "",
        "user_agent": context.user_agent if context else "",
    }
    with transaction.atomic():
        _lock_chain()
        prev_hash = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS_HASH
        return AuditEvent.objects.create(**fields, prev_hash=prev_hash, hash=compute_event_hash(fields, prev_hash))


def record_refusal(*, actor, action: str, reason: str, **kwargs) -> AuditEvent:
    """Record a refused attempt in its own transaction: the attempt itself was
    rolled back, but that it was tried (and why it was refused) must stay."""
    detail = {**kwargs.pop("detail", {}), "reason": reason}
    with transaction.atomic():
        return record_event(actor=actor, action=action, outcome=AuditEvent.Outcome.DENIED, detail=detail, **kwargs)


@dataclass(frozen=True)
class ChainBreak:
    event_id: int
    reason: str


def verify_chain(*, batch_size: int = 5000) -> tuple[int, ChainBreak | None]:
    """Recompute the chain from the first event. Returns (events checked, first break)."""
    names = ("id", *HASHED_FIELDS, "prev_hash", "hash")
    checked = 0
    expected_prev = GENESIS_HASH
    last_id = 0
    while True:
        rows = list(AuditEvent.objects.filter(id__gt=last_id).order_by("id").values_list(*names)[:batch_size])
        if not rows:
            return checked, None
        for row in rows:
            fields = dict(zip(names, row))
            if fields["prev_hash"] != expected_prev:
                return checked, ChainBreak(fields["id"], "prev_hash does not match the previous event's hash")
            if compute_event_hash(fields, fields["prev_hash"]) != fields["hash"]:
                return checked, ChainBreak(fields["id"], "content does not match its hash")
            expected_prev = fields["hash"]
            checked += 1
        last_id = rows[-1][0]
