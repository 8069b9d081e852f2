"""How long prediction logs are kept: expired rows are archived, then deleted
in small batches (README "How long prediction data is kept").

A model's rows expire by its risk tier (GLASSBOX_PREDICTION_RETENTION_DAYS):
whole UTC days, so a row is kept at least that many days and each day's
archive is written once and never changes. Per model, per expired day:

1. Held: a day with a row of a rollout that is still active is left whole
   until the rollout ends (its analysis may still read it).
2. Archive (GLASSBOX_PREDICTION_ARCHIVE): the day's rows, sorted by id, each
   with its feedback embedded, as gzip JSON lines with a fixed header (same
   rows, same bytes), stored under prediction-archive/<model>/<day>.jsonl.gz
   in the artifact storage and read back; its SHA-256 must match.
   Any storage error: nothing of the model is deleted and an alert is raised.
3. A RetentionDay row records the file (key, digest, rows) before anything is
   deleted; each batch (GLASSBOX_PREDICTION_RETENTION_BATCH rows, one short
   transaction) deletes exactly rows and feedback the archive holds and moves
   that row's counters in the same transaction. A run killed anywhere
   resumes: a stored file without its RetentionDay row is recognised by its
   digest (or replaced: nothing was deleted from it yet); an unfinished part
   continues after its last committed batch, from the stored file, whose
   digest is checked again first.
4. One `prediction.retention` audit event per model and run reports the
   finished parts not reported yet (rows, period, tier, files and digests),
   written with the mark that they are reported.

A prediction whose feedback arrived after its day was archived is kept back
(never deleted without its feedback in an archive): the next run archives it
as part 2 of that day (<day>.part2.jsonl.gz).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files import File
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from governance.audit import record_event
from governance.audit_actions import AuditAction
from governance.models import AuditEvent
from registry.artifacts import artifact_storage
from registry.models import RegisteredModel
from rollouts.models import Feedback, PredictionLog, RetentionDay, Rollout

logger = logging.getLogger(__name__)

ARCHIVE_PREFIX = "prediction-archive"
# An arbitrary constant naming "the retention run" among PostgreSQL advisory locks.
_RUN_LOCK_KEY = 0x72657465  # "rete"
# (prediction id, feedback id or 0) per row, in the local list a part deletes from.
_ID_PAIR = struct.Struct("<qq")
_READ_CHUNK = 1024 * 1024
_ARCHIVE_NAME, _IDS_NAME = "archive.jsonl.gz", "ids.bin"


class ArchiveUnavailable(Exception):
    """The archive could not be written, read back or verified: delete nothing."""


@dataclass
class ModelRetention:
    model: RegisteredModel
    tier: str
    days: int
    cutoff: datetime
    event: AuditEvent | None = None
    failure: str = ""


def retention_days_of(tier: str) -> int:
    """Days a row of a model of `tier` is kept. Checked again here (not only
    at start-up): nothing may delete a high-risk log younger than the floor."""
    days = settings.GLASSBOX_PREDICTION_RETENTION_DAYS[tier]
    if tier == "high" and days < settings.GLASSBOX_HIGH_RISK_MIN_RETENTION_DAYS:
        raise ImproperlyConfigured(
            f"retention of high-risk prediction logs is {days} days, below the "
            f"{settings.GLASSBOX_HIGH_RISK_MIN_RETENTION_DAYS}-day floor (EU AI Act Art. 19)"
        )
    return days


def cutoff_for(days: int, now: datetime) -> datetime:
    """Rows created before this instant are expired: the start of the UTC day
    `days` days ago, so that only whole days expire."""
    return datetime.combine((now.astimezone(UTC) - timedelta(days=days)).date(), day_time.min, tzinfo=UTC)


def archive_key(model_name: str, day: date, part: int) -> str:
    suffix = "" if part == 1 else f".part{part}"
    return f"{ARCHIVE_PREFIX}/{model_name}/{day:%Y-%m-%d}{suffix}.jsonl.gz"


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, day_time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


# --- the run ---------------------------------------------------------------------------------


def retention_apply(*, now: datetime | None = None) -> list[ModelRetention]:
    """One retention run over every model (the beat task). Returns what was
    done per model that had expired rows; [] when another run holds the lock."""
    now = now or timezone.now()
    results = []
    with _single_run() as acquired:
        if not acquired:
            logger.info("prediction retention: another run is in progress")
            return []
        for model in RegisteredModel.objects.order_by("pk"):
            result = model_retention_apply(model=model, now=now)
            if result is not None:
                results.append(result)
    return results


@contextlib.contextmanager
def _single_run():
    """Two runs at once (a re-delivered task next to a beat tick) would
    archive the same day twice; a session lock lets one of them do the work.
    It dies with the connection, so a killed worker never leaves it held."""
    if connection.vendor != "postgresql":
        yield True  # SQLite (the demo) serializes writers by itself
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_RUN_LOCK_KEY])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_RUN_LOCK_KEY])


def model_retention_apply(*, model: RegisteredModel, now: datetime) -> ModelRetention | None:
    from rollouts.services import prediction_archive_alert_clear, prediction_archive_alert_raise

    days = retention_days_of(model.risk_tier)
    result = ModelRetention(model=model, tier=model.risk_tier, days=days, cutoff=cutoff_for(days, now))
    touched = False
    try:
        # Parts a killed run left unfinished first, from their stored archives (even
        # one whose rows are all gone already: it still has to be finished and reported).
        for part in RetentionDay.objects.filter(model=model, finished_at__isnull=True).order_by("day", "part"):
            touched = True
            _delete_part(part)
        for day in _expired_days(model, result.cutoff):
            touched = True
            with tempfile.TemporaryDirectory(prefix="glassbox-retention-") as folder:
                part = _new_part(model, day, result, folder=folder)
                if part is not None:
                    _delete_part(part, ids_path=os.path.join(folder, _IDS_NAME))
    except ArchiveUnavailable as exc:
        result.failure = str(exc)
        logger.error("prediction retention of %s: %s; nothing more deleted", model.name, exc)
    result.event = _audit_finished_parts(result, now=now)
    if result.failure:
        oldest = _oldest_expired(model, result.cutoff)
        waiting = (result.cutoff - oldest).days + 1 if oldest else 0
        prediction_archive_alert_raise(model=model, reason=result.failure, days_waiting=waiting, now=now)
    elif touched:
        prediction_archive_alert_clear(model=model, now=now)
    return result if touched or result.event is not None else None


def _oldest_expired(model: RegisteredModel, cutoff: datetime, *, since: datetime | None = None) -> datetime | None:
    rows = PredictionLog.objects.filter(model=model, created_at__lt=cutoff)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    return rows.order_by("created_at").values_list("created_at", flat=True).first()


def _expired_days(model: RegisteredModel, cutoff: datetime) -> Iterator[date]:
    """The UTC days before `cutoff` that still hold rows of `model`, oldest
    first: one probe of the (model, created_at) index per day."""
    since = None
    while True:
        oldest = _oldest_expired(model, cutoff, since=since)
        if oldest is None:
            return
        day = oldest.astimezone(UTC).date()
        yield day
        since = _day_bounds(day)[1]


def _held_by_active_rollout(model: RegisteredModel, day: date) -> bool:
    active = list(Rollout.objects.filter(model=model, status__in=Rollout.ACTIVE_STATUSES).values_list("pk", flat=True))
    if not active:
        return False
    start, end = _day_bounds(day)
    return PredictionLog.objects.filter(
        model=model, created_at__gte=start, created_at__lt=end, rollout_id__in=active
    ).exists()


def _new_part(model: RegisteredModel, day: date, result: ModelRetention, *, folder: str) -> RetentionDay | None:
    """Archive what is left of `day` and record it, leaving the list of its
    ids in `folder`; None when the day is held."""
    if _held_by_active_rollout(model, day):
        logger.info("prediction retention: %s %s held by an active rollout", model.name, day)
        return None
    last = RetentionDay.objects.filter(model=model, day=day).aggregate(last=Max("part"))["last"] or 0
    part = RetentionDay(model=model, day=day, part=last + 1, tier=result.tier, retention_days=result.days)
    archive_path = os.path.join(folder, _ARCHIVE_NAME) if settings.GLASSBOX_PREDICTION_ARCHIVE else None
    stats = _write_day(model, day, archive_path=archive_path, ids_path=os.path.join(folder, _IDS_NAME))
    if stats["rows"] == 0:
        return None
    part.rows, part.feedback_rows = stats["rows"], stats["feedback"]
    part.first_id, part.last_id = stats["first_id"], stats["last_id"]
    if archive_path is not None:
        part.archive_key = archive_key(model.name, day, part.part)
        part.sha256 = _file_sha256(archive_path)
        part.size_bytes = os.path.getsize(archive_path)
        _store_verified(archive_path, part.archive_key, part.sha256)
    # Recorded before the first row goes: from here on a run resumes this part.
    part.save()
    return part


# --- archive files ----------------------------------------------------------------------------

_ARCHIVE_QUERY = """
SELECT p.id, {uuid_prediction}, p.version_id, v.number, p.rollout_id, p.shadow, {uuid_mirror}, p.route,
       p.key_hash, p.input_text, p.input_length, p.label, p.confidence, p.latency_ms, p.error, {time_created},
       f.id, f.label, f.correct, f.created_by_id, {time_feedback}, {time_summarized}
FROM {log} p
JOIN {version} v ON v.id = p.version_id
LEFT JOIN {feedback} f ON f.prediction_id = p.id
WHERE p.model_id = %s AND p.created_at >= %s AND p.created_at < %s
ORDER BY p.id
"""
# PostgreSQL writes times and ids in their archived form (what _iso and
# _uuid make of them) at a fraction of the cost of parsing them in Python.
_PG_ISO = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')"


def _archive_query() -> str:
    tables = {
        "log": PredictionLog._meta.db_table,
        "version": PredictionLog._meta.get_field("version").related_model._meta.db_table,
        "feedback": Feedback._meta.db_table,
    }
    columns = {
        "uuid_prediction": "p.prediction_id",
        "uuid_mirror": "p.mirror_of",
        "time_created": "p.created_at",
        "time_feedback": "f.created_at",
        "time_summarized": "f.summarized_at",
    }
    if connection.vendor == "postgresql":
        columns = {
            name: _PG_ISO.format(column) if name.startswith("time") else f"{column}::text"
            for name, column in columns.items()
        }
    return _ARCHIVE_QUERY.format(**tables, **columns)


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        if "T" in value:
            return value  # written by PostgreSQL in this form already
        value = parse_datetime(value)  # SQLite's text
        if timezone.is_naive(value):
            value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _uuid(value) -> str | None:
    if value is None or (isinstance(value, str) and len(value) == 36):
        return value
    return str(uuid.UUID(str(value)))


def archive_line(model_name: str, row) -> dict:
    """One archived prediction (a row of _ARCHIVE_QUERY) with its feedback."""
    feedback = None
    if row[16] is not None:
        feedback = {
            "id": row[16],
            "label": row[17],
            "correct": bool(row[18]),
            "created_by_id": row[19],
            "created_at": _iso(row[20]),
            "summarized_at": _iso(row[21]),
        }
    return {
        "id": row[0],
        "prediction_id": _uuid(row[1]),
        "model": model_name,
        "version_id": row[2],
        "version": row[3],
        "rollout_id": row[4],
        "shadow": bool(row[5]),
        "mirror_of": _uuid(row[6]),
        "route": row[7],
        "key_hash": row[8],
        "input_text": row[9],
        "input_length": row[10],
        "label": row[11],
        "confidence": row[12],
        "latency_ms": row[13],
        "error": row[14],
        "created_at": _iso(row[15]),
        "feedback": feedback,
    }


# One encoder built once (json.dumps with arguments builds one per call).
_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _encode(line: dict) -> str:
    return _ENCODER.encode(line) + "\n"


@contextlib.contextmanager
def _deterministic_gzip(path: str):
    # No name and time 0 in the gzip header: the same rows give the same bytes, run after run.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as out:
        yield out


def _write_day(model: RegisteredModel, day: date, *, archive_path: str | None, ids_path: str) -> dict:
    """Read the day's rows in id order; write the archive (when asked) and
    the list of (id, feedback id) to delete. Returns the counts and id range."""
    start, end = _day_bounds(day)
    query = _archive_query()
    stats = {"rows": 0, "feedback": 0, "first_id": 0, "last_id": 0}
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(_deterministic_gzip(archive_path)) if archive_path else None
        ids_out = stack.enter_context(open(ids_path, "wb"))
        # In a transaction, a server-side cursor streams the rows (not one materialised result).
        stack.enter_context(transaction.atomic())
        cursor = stack.enter_context(connection.chunked_cursor())
        cursor.execute(query, [model.pk, start, end])
        while rows := cursor.fetchmany(2000):
            if out is not None:
                # One compress call per chunk of rows, not per line.
                out.write("".join(_encode(archive_line(model.name, row)) for row in rows).encode())
            for row in rows:
                ids_out.write(_ID_PAIR.pack(row[0], row[16] or 0))
                stats["rows"] += 1
                stats["feedback"] += row[16] is not None
                stats["first_id"] = stats["first_id"] or row[0]
                stats["last_id"] = row[0]
    return stats


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def stored_sha256(key: str) -> str:
    digest = hashlib.sha256()
    with artifact_storage().open(key, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _store_verified(path: str, key: str, sha256: str) -> None:
    """Put the file at `key` and read it back. A file already there with the
    same digest is this one (an earlier run stopped before recording it);
    another file there was never recorded, so nothing was deleted from it:
    replaced."""
    storage = artifact_storage()
    try:
        if storage.exists(key):
            if stored_sha256(key) == sha256:
                return
            storage.delete(key)
        with open(path, "rb") as handle:
            saved = storage.save(key, File(handle, name=key))
        if saved != key:
            raise ArchiveUnavailable(f"{key}: the storage saved it as {saved}")
        stored = stored_sha256(key)
    except ArchiveUnavailable:
        raise
    except Exception as exc:  # any storage failure (disk, permissions, network, S3) means: keep the rows
        raise ArchiveUnavailable(f"{key}: {type(exc).__name__}: {exc}") from exc
    if stored != sha256:
        raise ArchiveUnavailable(f"{key}: read back with SHA-256 {stored}, written {sha256}")


def read_archive(key: str, local_path: str, *, sha256: str) -> Iterator[dict]:
    """Copy an archive out of the storage, check its digest, then yield its
    lines (a file that does not match its recorded digest yields nothing)."""
    try:
        with artifact_storage().open(key, "rb") as source, open(local_path, "wb") as target:
            shutil.copyfileobj(source, target, _READ_CHUNK)
    except Exception as exc:
        raise ArchiveUnavailable(f"{key}: {type(exc).__name__}: {exc}") from exc
    found = _file_sha256(local_path)
    if found != sha256:
        raise ArchiveUnavailable(f"{key}: SHA-256 is {found}, recorded {sha256}")
    with gzip.open(local_path, "rt", encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


# --- deletion ---------------------------------------------------------------------------------


def _delete_part(part: RetentionDay, *, ids_path: str | None = None) -> None:
    """Delete the part's rows batch by batch, then mark it finished. Without
    `ids_path` (a resumed part) the list comes from its stored archive."""
    if ids_path is not None:
        _delete_listed(part, ids_path)
    else:
        with tempfile.TemporaryDirectory(prefix="glassbox-retention-") as folder:
            ids_path = os.path.join(folder, _IDS_NAME)
            with open(ids_path, "wb") as ids_out:
                for pair in _pairs_to_delete(part, folder):
                    ids_out.write(_ID_PAIR.pack(*pair))
            _delete_listed(part, ids_path)
    part.finished_at = timezone.now()
    part.save(update_fields=["finished_at"])


def _pairs_to_delete(part: RetentionDay, folder: str) -> Iterator[tuple[int, int]]:
    """(prediction id, archived feedback id or 0) of the part's rows not dealt
    with yet, in id order: from the verified archive, or (archive off) from
    the table, up to the last id the part was created with."""
    if part.archive_key:
        for line in read_archive(part.archive_key, os.path.join(folder, "archive.jsonl.gz"), sha256=part.sha256):
            if line["id"] > part.deleted_through_id:
                yield line["id"], (line["feedback"] or {}).get("id") or 0
        return
    start, end = _day_bounds(part.day)
    rows = (
        PredictionLog.objects.filter(
            model_id=part.model_id, created_at__gte=start, created_at__lt=end, id__gt=part.deleted_through_id
        )
        .filter(id__lte=part.last_id)
        .order_by("id")
        .values_list("id", "feedback__id")
    )
    for prediction_id, feedback_id in rows.iterator(chunk_size=5000):
        yield prediction_id, feedback_id or 0


def _read_pairs(path: str, batch: int) -> Iterator[list[tuple[int, int]]]:
    with open(path, "rb") as handle:
        while chunk := handle.read(_ID_PAIR.size * batch):
            yield list(_ID_PAIR.iter_unpack(chunk))


def _delete_listed(part: RetentionDay, ids_path: str) -> None:
    batch = max(1, settings.GLASSBOX_PREDICTION_RETENTION_BATCH)
    pause = settings.GLASSBOX_PREDICTION_RETENTION_PAUSE_MS / 1000
    for pairs in _read_pairs(ids_path, batch):
        if pause:
            time.sleep(pause)
        try:
            _delete_batch(part, pairs, keep_late_feedback=bool(part.archive_key))
        except IntegrityError:
            # Feedback on one of these predictions committed after the batch looked (the
            # foreign key refused the delete, so nothing went): look again, it is seen now.
            _delete_batch(part, pairs, keep_late_feedback=bool(part.archive_key))


def _in(column: str, values: list[int]) -> tuple[str, list]:
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [values]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


@transaction.atomic
def _delete_batch(part: RetentionDay, pairs: list[tuple[int, int]], *, keep_late_feedback: bool) -> None:
    """One short transaction: the batch's archived feedback and predictions
    go, and the part's counters move with them. A prediction whose feedback
    is not in the archive (it came later) stays for the next part."""
    log, feedback = PredictionLog._meta.db_table, Feedback._meta.db_table
    ids = [prediction_id for prediction_id, _ in pairs]
    archived_feedback = {feedback_id for _, feedback_id in pairs if feedback_id}
    with connection.cursor() as cursor:
        where, params = _in("prediction_id", ids)
        cursor.execute(f"SELECT id, prediction_id FROM {feedback} WHERE {where}", params)
        present = cursor.fetchall()
        late = {pid for fid, pid in present if keep_late_feedback and fid not in archived_feedback}
        doomed_feedback = [fid for fid, pid in present if pid not in late]
        feedback_deleted = 0
        if doomed_feedback:
            where, params = _in("id", doomed_feedback)
            cursor.execute(f"DELETE FROM {feedback} WHERE {where}", params)
            feedback_deleted = cursor.rowcount
        doomed = [pid for pid in ids if pid not in late]
        rows_deleted = 0
        if doomed:
            where, params = _in("id", doomed)
            cursor.execute(f"DELETE FROM {log} WHERE {where}", params)
            rows_deleted = cursor.rowcount
    RetentionDay.objects.filter(pk=part.pk).update(
        rows_deleted=F("rows_deleted") + rows_deleted,
        feedback_deleted=F("feedback_deleted") + feedback_deleted,
        deleted_through_id=max(ids),
    )
    if late:
        logger.info("prediction retention: %d row(s) of %s kept for feedback that came later", len(late), part)


# --- the audit event ----------------------------------------------------------------------


@transaction.atomic
def _audit_finished_parts(result: ModelRetention, *, now: datetime) -> AuditEvent | None:
    """One event for the parts of the model finished and not reported yet
    (this run's, and any a killed run finished), marked reported with it."""
    parts = list(
        RetentionDay.objects.select_for_update()
        .filter(model=result.model, finished_at__isnull=False, audited_at__isnull=True)
        .order_by("day", "part")
    )
    if not parts:
        return None
    rows_deleted = sum(p.rows_deleted for p in parts)
    event = record_event(
        actor=None,
        action=AuditAction.PREDICTION_RETENTION,
        obj=result.model,
        detail={
            "tier": result.tier,
            "retention_days": result.days,
            "cutoff": result.cutoff.isoformat(),
            "period_from": parts[0].day.isoformat(),
            "period_to": parts[-1].day.isoformat(),
            "days": len({p.day for p in parts}),
            "rows_deleted": rows_deleted,
            "feedback_deleted": sum(p.feedback_deleted for p in parts),
            "archived": any(p.archive_key for p in parts),
            "files": [
                {
                    "key": p.archive_key,
                    "sha256": p.sha256,
                    "bytes": p.size_bytes,
                    "day": p.day.isoformat(),
                    "part": p.part,
                    "rows": p.rows,
                    "feedback": p.feedback_rows,
                    # Fewer than rows: predictions kept for feedback that came later (a later part has them).
                    "deleted": p.rows_deleted,
                }
                for p in parts
                if p.archive_key
            ],
        },
    )
    RetentionDay.objects.filter(pk__in=[p.pk for p in parts]).update(audited_at=now)
    return event


# --- restoring an archived period ------------------------------------------------------------


def recorded_archives(model_name: str) -> dict[str, dict]:
    """Archive files of a model as the audit trail records them: key ->
    {"sha256", "day", "part", "rows", ...}. A key recorded twice with two
    digests is returned with sha256 None (it cannot be trusted)."""
    files: dict[str, dict] = {}
    events = AuditEvent.objects.filter(action=AuditAction.PREDICTION_RETENTION, model_name=model_name).order_by("id")
    for detail in events.values_list("detail", flat=True):
        for entry in (detail or {}).get("files", []):
            known = files.get(entry["key"])
            if known is not None and known["sha256"] != entry["sha256"]:
                known["sha256"] = None
            else:
                files[entry["key"]] = dict(entry)
    return files
