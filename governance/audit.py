"""Appending to the hash-chained audit trail.

Each event's hash is SHA-256 over a canonical JSON of its content plus the
previous event's hash (`event_hash`, the one definition). Appends are serialized
(`lock_chain`: an advisory lock on PostgreSQL; SQLite serializes writers by
itself) so the chain stays linear. Checking the chain and signing checkpoints
of its head live in governance.audit_integrity.
"""

import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from json.encoder import encode_basestring
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from glassbox.middleware import current_request_context
from governance.audit_actions import AuditAction
from governance.models import AuditEvent
from notifications.events import event_type_of

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

# One encoder built once: json.dumps() with arguments builds a new one per call.
_JSON_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical_json(value: Any) -> str:
    return _JSON_ENCODER.encode(value)


def event_timestamp(value: datetime) -> str:
    """The one text form of an event's time (UTC, microseconds): hashed, and
    shown as such by the API and the exports so anyone can recompute a hash."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


# The canonical JSON of an event is json.dumps(sort_keys=True, separators=(",", ":"),
# ensure_ascii=False) of {hashed fields..., "prev_hash"}. It is spelled out here
# as a template over the sorted keys so that checking a million events costs
# string formatting rather than a json.dumps of a dict per row;
# tests/governance/test_audit_chain.py proves the two agree byte for byte.
_CANONICAL_TEMPLATE = (
    '{"action":%s,"actor_id":%s,"actor_username":%s,"changes":%s,"created_at":"%s","detail":%s,'
    '"ip":%s,"model_name":%s,"object_id":%s,"object_label":%s,"object_type":%s,"outcome":%s,'
    '"prev_hash":"%s","request_id":%s,"user_agent":%s,"version_number":%s}'
)


def _json_field(value: Any) -> str:
    return "{}" if value == {} else canonical_json(value)


def event_hash(
    created_at: str,
    actor_id: int | None,
    actor_username: str,
    action: str,
    outcome: str,
    object_type: str,
    object_id: str,
    object_label: str,
    model_name: str,
    version_number: int | None,
    changes_json: str,
    detail_json: str,
    request_id: str,
    ip: str,
    user_agent: str,
    prev_hash: str,
) -> str:
    """The one definition of an event's hash. Positional, in HASHED_FIELDS
    order, with the timestamp and the two JSON fields already rendered, so
    that record_event, verify_chain and the bulk loader of the benchmark all
    call exactly this."""
    content = _CANONICAL_TEMPLATE % (
        encode_basestring(action),
        "null" if actor_id is None else actor_id,
        encode_basestring(actor_username),
        changes_json,
        created_at,
        detail_json,
        encode_basestring(ip),
        encode_basestring(model_name),
        encode_basestring(object_id),
        encode_basestring(object_label),
        encode_basestring(object_type),
        encode_basestring(outcome),
        prev_hash,
        encode_basestring(request_id),
        encode_basestring(user_agent),
        "null" if version_number is None else version_number,
    )
    return hashlib.sha256(content.encode()).hexdigest()


def compute_event_hash(fields: dict[str, Any], prev_hash: str) -> str:
    return event_hash(
        event_timestamp(fields["created_at"]),
        fields["actor_id"],
        fields["actor_username"],
        fields["action"],
        fields["outcome"],
        fields["object_type"],
        fields["object_id"],
        fields["object_label"],
        fields["model_name"],
        fields["version_number"],
        _json_field(fields["changes"]),
        _json_field(fields["detail"]),
        fields["request_id"],
        fields["ip"],
        fields["user_agent"],
        prev_hash,
    )


def lock_chain() -> None:
    """Hold the chain until the transaction ends: nothing else appends meanwhile."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_AUDIT_CHAIN_LOCK_KEY])


def _storable_float(text: str) -> float | int:
    # PostgreSQL's jsonb keeps numbers as numerics and prints them without an
    # exponent, so 1e16 comes back as the integer 10000000000000000 and -0.0
    # as 0.0. Store what will come back, or verification would disagree.
    value = float(text)
    if abs(value) >= 1e16:
        return int(value)
    return 0.0 if value == 0 else value


def _without_nul(value: Any) -> Any:
    # Neither jsonb nor text columns hold NUL characters.
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def _json_roundtrip(value: Any) -> Any:
    """Hash exactly what the database will hand back later: tuples become
    lists, non-JSON types their str(), NaN and infinities strings, numbers what
    jsonb makes of them."""
    text = canonical_json(value or {})
    loaded = json.loads(text, parse_float=_storable_float, parse_constant=str)
    return _without_nul(loaded) if "\\u0000" in text else loaded


def content_digest(value: Any) -> str:
    """SHA-256 of a JSON value's canonical form, as the database will hand it
    back: the digest that binds a report's results (and the like) into the
    trail. Recomputing it from the stored value later gives the same hex
    unless the value changed (audit_verify --deep)."""
    if value is None:
        return hashlib.sha256(b"null").hexdigest()
    return hashlib.sha256(canonical_json(_json_roundtrip(value)).encode()).hexdigest()


def _text(value: Any, limit: int) -> str:
    return str(value or "").replace("\x00", "\ufffd")[:limit]


def record_event(
    *,
    actor,
    action: AuditAction | str,
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
    """Append one event. Call it inside the transaction of the change it
    records, as its last step: the chain's lock is held from here until that
    transaction ends, so every other append in the platform waits for it.
    `action` is an AuditAction member; the trail stores its text (plain text
    is taken too, for bulk loads and tests that make up their own events)."""
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
        "actor_id": actor.pk if is_user else None,
        "actor_username": actor.get_username() if is_user else "",
        "action": _text(action, 64),
        "outcome": outcome,
        "object_type": _text(object_type, 64),
        "object_id": _text(object_id, 64),
        "object_label": _text(object_label, 300),
        "model_name": _text(model_name, 100),
        "version_number": version_number,
        "changes": _json_roundtrip(changes),
        "detail": _json_roundtrip(detail),
        "request_id": context.request_id if context else "",
        "ip": context.ip if context else "",
        "user_agent": _text(context.user_agent, 400) if context else "",
    }
    with transaction.atomic():
        lock_chain()
        head = AuditEvent.objects.order_by("-id").values_list("hash", "created_at").first()
        prev_hash, prev_time = head if head else (GENESIS_HASH, None)
        # Stamped under the lock and never earlier than the previous event, so
        # time order is chain order (the trail's date filters rely on it).
        now = timezone.now()
        fields["created_at"] = max(now, prev_time) if prev_time else now
        event = AuditEvent.objects.create(**fields, prev_hash=prev_hash, hash=compute_event_hash(fields, prev_hash))
    if outcome == AuditEvent.Outcome.OK and event_type_of(fields["action"]) is not None:
        # The one place that feeds e-mail notifications and webhooks: only
        # once the change is committed, and never on the request path (a
        # worker does the rest; see notifications.services).
        transaction.on_commit(partial(_enqueue_dispatch, event.pk))
    return event


def _enqueue_dispatch(event_id: int) -> None:
    from notifications.services import enqueue_dispatch

    enqueue_dispatch(event_id)


def chained_events(events: Iterable[dict[str, Any]], *, prev_hash: str) -> Iterator[AuditEvent]:
    """Unsaved events with prev_hash and hash filled in, each linked to the
    one before, starting after `prev_hash` - for bulk loads (the benchmark,
    tests) that must produce exactly the chain record_event would. Each dict
    holds HASHED_FIELDS; JSON fields and times as record_event stores them.
    The caller saves them in order, holding the chain (nothing else may
    append meanwhile)."""
    for fields in events:
        fields = {**fields, "changes": _json_roundtrip(fields["changes"]), "detail": _json_roundtrip(fields["detail"])}
        digest = compute_event_hash(fields, prev_hash)
        yield AuditEvent(**fields, prev_hash=prev_hash, hash=digest)
        prev_hash = digest


def chain_head() -> str:
    return AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS_HASH


def record_refusal(*, actor, action: AuditAction | str, reason: str, **kwargs) -> AuditEvent:
    """Record a refused attempt in its own transaction: the attempt itself was
    rolled back, but that it was tried (and why it was refused) must stay."""
    detail = {**kwargs.pop("detail", {}), "reason": reason}
    with transaction.atomic():
        return record_event(actor=actor, action=action, outcome=AuditEvent.Outcome.DENIED, detail=detail, **kwargs)


def record_export(*, actor, fmt: str, filters: dict[str, str]) -> AuditEvent:
    """Reading the trail is not a change, but taking a copy of it out of the
    platform is worth knowing about: who exported what, and when."""
    return record_event(
        actor=actor,
        action=AuditAction.AUDIT_EXPORT,
        object_type="governance.auditevent",
        object_label=f"audit trail ({fmt})",
        detail={"format": fmt, "filters": filters},
    )
