"""Checking the hash-chained audit trail, and signed checkpoints of its head.

verify_chain recomputes every event's hash (governance.audit.event_hash, the one
definition) and follows the links. A checkpoint is the chain's head signed with
an HMAC key kept outside the database: a database owner who rewrites the table
and recomputes every hash still cannot make an old checkpoint match.
`manage.py audit_verify` and `manage.py audit_checkpoint` are the way in.
"""

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from glassbox.errors import GlassboxError
from governance.audit import (
    GENESIS_HASH,
    HASHED_FIELDS,
    canonical_json,
    event_hash,
    event_timestamp,
    lock_chain,
    record_event,
)
from governance.audit_actions import AuditAction
from governance.models import AuditCheckpoint, AuditEvent

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
        computed = event_hash(
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
        lock_chain()
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
            action=AuditAction.AUDIT_CHECKPOINT,
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
