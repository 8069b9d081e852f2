"""Appending to, and checking, the hash-chained audit trail.

Each event's hash is SHA-256 over a canonical JSON of its content plus the
previous event's hash (`_event_hash`, the one definition). Appends are serialized (an
advisory lock on PostgreSQL; SQLite serializes writers by itself) so the chain
stays linear. A checkpoint is the chain's head signed with an HMAC key kept
outside the database: a database owner who rewrites the table and recomputes
every hash still cannot make an old checkpoint match.
"""

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from glassbox.errors import GlassboxError
from glassbox.middleware import current_request_context
from governance.models import AuditCheckpoint, AuditEvent

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


def _event_hash(
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
    return _event_hash(
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


def _lock_chain() -> None:
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


def _text(value: Any, limit: int) -> str:
    return str(value or "").replace("\x00", "\ufffd")[:limit]


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
    """Append one event. Call it inside the transaction of the change it
    records, as its last step: the chain's lock is held from here until that
    transaction ends, so every other append in the platform waits for it."""
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
        _lock_chain()
        head = AuditEvent.objects.order_by("-id").values_list("hash", "created_at").first()
        prev_hash, prev_time = head if head else (GENESIS_HASH, None)
        # Stamped under the lock and never earlier than the previous event, so
        # time order is chain order (the trail's date filters rely on it).
        now = timezone.now()
        fields["created_at"] = max(now, prev_time) if prev_time else now
        return AuditEvent.objects.create(**fields, prev_hash=prev_hash, hash=compute_event_hash(fields, prev_hash))


def chained_events(events: Iterable[dict[str, Any]], *, prev_hash: str) -> Iterator[AuditEvent]:
    """Unsaved events with prev_hash and hash filled in, each linked to the
    one before, starting after `prev_hash` - for bulk loads (the benchmark,
    tests) that must produce exactly the chain record_event would. Each dict
    holds HASHED_FIELDS; JSON fields and times as record_event stores them.
    The caller saves them in order, holding the chain (nothing else may
    append meanwhile)."""
    for fields in events:
        fields = {**fields, "changes": _json_roundtrip(fields["changes"]), "detail": _json_roundtrip(fields["detail"])}
        event_hash = compute_event_hash(fields, prev_hash)
        yield AuditEvent(**fields, prev_hash=prev_hash, hash=event_hash)
        prev_hash = event_hash


def chain_head() -> str:
    return AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS_HASH


def record_refusal(*, actor, action: str, reason: str, **kwargs) -> AuditEvent:
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
        action="audit.export",
        object_type="governance.auditevent",
        object_label=f"audit trail ({fmt})",
        detail={"format": fmt, "filters": filters},
    )


# --- verification ------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    event_id: int
    reason: str


# Rendered by PostgreSQL exactly as event_timestamp() renders it in Python (the
# chain tests fail at once if the two ever disagree); this saves a datetime
# object per row, and verification spends its time where the cores are.
_TIMESTAMP_SQL = """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
_VERIFY_SELECT = (
    f"SELECT id, {_TIMESTAMP_SQL}, actor_id, actor_username, action, outcome, object_type, object_id, "
    "object_label, model_name, version_number, changes::text, detail::text, request_id, ip, user_agent, "
    "prev_hash, hash FROM governance_auditevent WHERE id > %s AND id <= %s ORDER BY id"
)
# C-level JSON parse and canonical encode, reused: json.loads()/JSONEncoder.encode()
# rebuild these per call, which was most of the cost of a row. Only ever fed
# what the parser just produced, so the encoder needs no cycle check.
_scan_json = json.JSONDecoder().scan_once
_encode_parsed = (
    c_make_encoder(None, str, encode_basestring, None, ":", ",", True, False, True) if c_make_encoder else None
)


# The same changes and details recur all along a trail (status moves, refusal
# reasons, login paths): each distinct text is canonicalized once per process.
_canonical_cache: dict[str, str] = {}
_CANONICAL_CACHE_SIZE = 20_000


def _canonical_from_text(text: str) -> str:
    if text == "{}":
        return text
    canonical = _canonical_cache.get(text)
    if canonical is None:
        value = _scan_json(text, 0)[0]
        canonical = "".join(_encode_parsed(value, 0)) if _encode_parsed else canonical_json(value)
        if len(_canonical_cache) < _CANONICAL_CACHE_SIZE:
            _canonical_cache[text] = canonical
    return canonical


def _check_rows(rows: Iterable[tuple], expected_prev: str) -> tuple[int, ChainBreak | None, str]:
    """The hot loop: rows as (id, created_at text, hashed fields..., changes
    text, detail text, ..., prev_hash, hash). Returns (events checked, first
    break, hash of the last good event)."""
    checked = 0
    for (
        event_id,
        created_at,
        actor_id,
        actor_username,
        action,
        outcome,
        object_type,
        object_id,
        object_label,
        model_name,
        version_number,
        changes,
        detail,
        request_id,
        ip,
        user_agent,
        prev_hash,
        stored_hash,
    ) in rows:
        if prev_hash != expected_prev:
            return checked, ChainBreak(event_id, "prev_hash does not match the previous event's hash"), expected_prev
        try:
            changes = _canonical_from_text(changes)
            detail = _canonical_from_text(detail)
        except (StopIteration, ValueError):
            return checked, ChainBreak(event_id, "changes or detail is not valid JSON"), expected_prev
        computed = _event_hash(
            created_at,
            actor_id,
            actor_username,
            action,
            outcome,
            object_type,
            object_id,
            object_label,
            model_name,
            version_number,
            changes,
            detail,
            request_id,
            ip,
            user_agent,
            prev_hash,
        )
        if computed != stored_hash:
            return checked, ChainBreak(event_id, "content does not match its hash"), expected_prev
        expected_prev = stored_hash
        checked += 1
    return checked, None, expected_prev


@dataclass(frozen=True)
class _RangeResult:
    checked: int
    first_id: int | None
    first_prev_hash: str
    last_hash: str
    chain_break: ChainBreak | None


def _check_range(bounds: tuple[int, int]) -> _RangeResult:
    """Check the events with lo < id <= hi on their own: each one's content
    against its hash, and each link inside the range. The link into the range
    (its first prev_hash) is for the caller to check against the range before."""
    lo, hi = bounds
    with connection.cursor() as cursor:
        cursor.execute(_VERIFY_SELECT, [lo, hi])
        rows = cursor.fetchall()
    if not rows:
        return _RangeResult(0, None, "", "", None)
    checked, chain_break, last_hash = _check_rows(rows, rows[0][16])
    return _RangeResult(checked, rows[0][0], rows[0][16], last_hash, chain_break)


def _close_connections_at_exit() -> None:
    from multiprocessing import util

    util.Finalize(None, connections.close_all, exitpriority=10)


def _range_results(bounds: list[tuple[int, int]], workers: int) -> Iterator[_RangeResult]:
    if workers <= 1 or len(bounds) < 2 or connection.in_atomic_block:
        # In-process: also the only way to see rows of an uncommitted transaction (tests).
        yield from map(_check_range, bounds)
        return
    import multiprocessing

    # Children open their own connections; they must not inherit this one's socket.
    connections.close_all()
    pool = multiprocessing.get_context("fork").Pool(workers, initializer=_close_connections_at_exit)
    try:
        yield from pool.imap(_check_range, bounds)
        pool.close()
        pool.join()
    finally:
        pool.terminate()


def _verify_generic() -> tuple[int, ChainBreak | None]:
    """SQLite (the embedded demo): the same checks through the ORM."""
    names = ("id", *HASHED_FIELDS, "prev_hash", "hash")
    checked = 0
    expected_prev = GENESIS_HASH
    last_id = 0
    while True:
        batch = list(AuditEvent.objects.filter(id__gt=last_id).order_by("id").values_list(*names)[:5000])
        if not batch:
            return checked, None
        rows = [
            (row[0], event_timestamp(row[1]), *row[2:11], json.dumps(row[11]), json.dumps(row[12]), *row[13:])
            for row in batch
        ]
        done, chain_break, expected_prev = _check_rows(rows, expected_prev)
        checked += done
        if chain_break is not None:
            return checked, chain_break
        last_id = batch[-1][0]


def verify_chain(*, batch_size: int = 10_000, workers: int = 1) -> tuple[int, ChainBreak | None]:
    """Recompute the chain from the first event. Returns (events checked, first break).

    A changed event fails its own hash; a deleted one breaks the next event's
    prev_hash; a rewrite with every hash recomputed passes here and is caught
    by verify_checkpoint. On PostgreSQL the trail is checked in id ranges,
    by `workers` processes when more than one (each event's own check needs
    only its stored prev_hash; the ranges are linked here, in order), so the
    first break reported is the same as a single pass would find."""
    if connection.vendor != "postgresql":
        return _verify_generic()
    with connection.cursor() as cursor:
        # Appends are serialized and commit in id order, so every event up to
        # this head is committed now; later appends are not part of this check.
        cursor.execute("SELECT min(id), max(id) FROM governance_auditevent")
        first, last = cursor.fetchone()
    if first is None:
        return 0, None
    bounds = [(lo, min(lo + batch_size, last)) for lo in range(first - 1, last, batch_size)]
    checked = 0
    expected_prev = GENESIS_HASH
    for result in _range_results(bounds, workers):
        if result.first_id is None:
            continue
        if result.first_prev_hash != expected_prev:
            return checked, ChainBreak(result.first_id, "prev_hash does not match the previous event's hash")
        checked += result.checked
        if result.chain_break is not None:
            return checked, result.chain_break
        expected_prev = result.last_hash
    return checked, None


# --- checkpoints -------------------------------------------------------------------


class CheckpointKeyMissing(GlassboxError):
    pass


MIN_CHECKPOINT_KEY_LENGTH = 32
_SIGNED_FIELDS = ("event_id", "hash", "created_at")


def checkpoint_key() -> bytes:
    """The HMAC key, from the environment (settings.AUDIT_CHECKPOINT_KEY). It
    must never be stored in the database it protects."""
    key = settings.AUDIT_CHECKPOINT_KEY
    if not key:
        raise CheckpointKeyMissing(
            "AUDIT_CHECKPOINT_KEY is not set: checkpoints are signed with a key kept outside the database. "
            'Generate one with `python -c "import secrets; print(secrets.token_hex(32))"` '
            "and keep it in a secret store."
        )
    if len(key) < MIN_CHECKPOINT_KEY_LENGTH:
        raise CheckpointKeyMissing(
            f"AUDIT_CHECKPOINT_KEY must be at least {MIN_CHECKPOINT_KEY_LENGTH} characters long."
        )
    return key.encode()


def checkpoint_signature(checkpoint: dict[str, Any], *, key: bytes) -> str:
    message = canonical_json({name: checkpoint[name] for name in _SIGNED_FIELDS})
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def checkpoint_create(*, actor=None, detail: dict | None = None) -> dict[str, Any]:
    """Sign the current head, keep a copy as an AuditCheckpoint row and record
    that a checkpoint was made. Returns the signed statement, to be stored
    outside the database (the copy in the database proves nothing by itself)."""
    key = checkpoint_key()
    with transaction.atomic():
        # Nothing is appended between reading the head and recording the checkpoint.
        _lock_chain()
        head = AuditEvent.objects.order_by("-id").values_list("id", "hash").first()
        if head is None:
            raise GlassboxError("The audit trail is empty: there is no head to sign yet.")
        now = timezone.now()
        statement = {
            "event_id": head[0],
            "hash": head[1],
            "created_at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        statement["signature"] = checkpoint_signature(statement, key=key)
        row = AuditCheckpoint.objects.create(
            event_id=head[0], event_hash=head[1], created_at=now, signature=statement["signature"]
        )
        record_event(
            actor=actor,
            action="audit.checkpoint",
            obj=row,
            detail={**(detail or {}), "event_id": head[0], "hash": head[1]},
        )
    return statement


def verify_checkpoint(checkpoint: dict[str, Any], *, key: bytes) -> ChainBreak | None:
    """Check one signed statement against the trail: the signature must be
    ours, and the event it names must still exist with the hash it had then.
    Together with an intact chain this proves nothing up to that event was
    rewritten, even by someone who recomputed every hash."""
    try:
        event_id = int(checkpoint["event_id"])
        signature = str(checkpoint["signature"])
        expected = checkpoint_signature(checkpoint, key=key)
    except (KeyError, TypeError, ValueError) as exc:
        raise GlassboxError(f"Not a Glassbox audit checkpoint ({type(exc).__name__}: {exc}).") from exc
    if not hmac.compare_digest(signature, expected):
        return ChainBreak(event_id, "checkpoint signature is invalid (wrong key, or the checkpoint was altered)")
    stored = AuditEvent.objects.filter(id=event_id).values_list("hash", flat=True).first()
    if stored is None:
        return ChainBreak(event_id, "the event this checkpoint names is missing (deleted from the trail)")
    if stored != checkpoint["hash"]:
        return ChainBreak(
            event_id,
            "hash differs from the checkpoint: the trail up to this event was rewritten and its chain recomputed",
        )
    return None
