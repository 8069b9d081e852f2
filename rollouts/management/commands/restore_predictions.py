"""Restore archived prediction logs of one model and period into a scratch
table, for an investigation (never into the prediction log itself).

    manage.py restore_predictions --model NAME --since YYYY-MM-DD --until YYYY-MM-DD [--table NAME]

Every file of the period is checked against the SHA-256 the audit trail
recorded when it was archived before a row is loaded; one that differs (or
is missing) stops the command with its name, and nothing is restored. The
table is created by the command (default restored_<model>_<since>_<until>)
and must not exist yet. The restore itself is audited (prediction.restore).
"""

import getpass
import os
import re
import tempfile
from datetime import date

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from governance.audit import record_event
from governance.audit_actions import AuditAction
from registry.models import RegisteredModel
from rollouts.retention import ArchiveUnavailable, read_archive, recorded_archives, stored_sha256

_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_COLUMNS = (
    ("id", "bigint PRIMARY KEY"),
    ("prediction_id", "varchar(36) NOT NULL"),
    ("model", "varchar(100) NOT NULL"),
    ("version_id", "bigint NOT NULL"),
    ("version", "integer"),
    ("rollout_id", "bigint"),
    ("shadow", "boolean NOT NULL"),
    ("mirror_of", "varchar(36)"),
    ("route", "varchar(16) NOT NULL"),
    ("key_hash", "varchar(16) NOT NULL"),
    ("input_text", "text NOT NULL"),
    ("input_length", "integer NOT NULL"),
    ("label", "varchar(200) NOT NULL"),
    ("confidence", "double precision"),
    ("latency_ms", "double precision NOT NULL"),
    ("error", "varchar(500) NOT NULL"),
    ("created_at", "timestamp with time zone NOT NULL"),
    ("feedback_id", "bigint"),
    ("feedback_label", "varchar(200)"),
    ("feedback_correct", "boolean"),
    ("feedback_created_by_id", "bigint"),
    ("feedback_created_at", "timestamp with time zone"),
    ("archive_key", "varchar(300) NOT NULL"),
)
_INSERT_BATCH = 2000


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _row(line: dict, key: str) -> tuple:
    feedback = line.get("feedback") or {}
    return (
        line["id"],
        line["prediction_id"],
        line["model"],
        line["version_id"],
        line.get("version"),
        line["rollout_id"],
        line["shadow"],
        line["mirror_of"],
        line["route"],
        line["key_hash"],
        line["input_text"],
        line["input_length"],
        line["label"],
        line["confidence"],
        line["latency_ms"],
        line["error"],
        line["created_at"],
        feedback.get("id"),
        feedback.get("label"),
        feedback.get("correct"),
        feedback.get("created_by_id"),
        feedback.get("created_at"),
        key,
    )


class Command(BaseCommand):
    help = "Restore archived prediction logs of a model and period into a new scratch table (digests checked first)."

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, help="the registered model's name")
        parser.add_argument("--since", required=True, help="first day, YYYY-MM-DD (UTC)")
        parser.add_argument("--until", required=True, help="last day, YYYY-MM-DD (UTC), included")
        parser.add_argument("--table", help="the scratch table to create (default restored_<model>_<since>_<until>)")

    def handle(self, *args, model: str, since: str, until: str, table: str | None, **options):
        first, last = _day(since), _day(until)
        if first > last:
            raise CommandError(f"--since {first} is after --until {last}")
        registered = RegisteredModel.objects.filter(name=model).first()
        if registered is None:
            raise CommandError(f"no model named {model!r}")
        table = table or f"restored_{model}_{first:%Y%m%d}_{last:%Y%m%d}".replace("-", "_").lower()
        self._check_table(table)

        recorded = recorded_archives(model)
        files = sorted(
            (entry for entry in recorded.values() if first <= date.fromisoformat(entry["day"]) <= last),
            key=lambda entry: (entry["day"], entry["part"]),
        )
        if not files:
            raise CommandError(f"the audit trail records no archive of {model} between {first} and {last}")
        # Every digest first: a period is restored whole or not at all.
        for entry in files:
            if entry["sha256"] is None:
                raise CommandError(f"{entry['key']}: the audit trail records two different digests; not restored")
            try:
                found = stored_sha256(entry["key"])
            except Exception as exc:
                raise CommandError(
                    f"{entry['key']}: cannot be read ({type(exc).__name__}: {exc}); not restored"
                ) from exc
            if found != entry["sha256"]:
                raise CommandError(
                    f"{entry['key']}: SHA-256 {found} does not match {entry['sha256']} recorded in the audit trail "
                    "(the file was changed or replaced); nothing restored"
                )

        rows = self._load(table, files)
        with transaction.atomic():
            record_event(
                actor=None,
                action=AuditAction.PREDICTION_RESTORE,
                obj=registered,
                detail={
                    "table": table,
                    "since": first.isoformat(),
                    "until": last.isoformat(),
                    "rows": rows,
                    "files": [{"key": e["key"], "sha256": e["sha256"]} for e in files],
                    "command": "restore_predictions",
                    "os_user": _os_user(),
                },
            )
        self.stdout.write(f"Restored {rows} predictions of {model} ({len(files)} file(s)) into table {table}.")

    def _check_table(self, table: str) -> None:
        if not _TABLE_NAME.match(table):
            raise CommandError(f"{table!r} is not a table name (lower-case letters, digits and _, at most 63)")
        existing = set(connection.introspection.table_names())
        if table in existing:
            raise CommandError(f"table {table} exists; choose another --table (a restore never writes into a table)")

    def _load(self, table: str, files: list[dict]) -> int:
        names = ", ".join(name for name, _ in _COLUMNS)
        placeholders = ", ".join(["%s"] * len(_COLUMNS))
        insert = f"INSERT INTO {table} ({names}) VALUES ({placeholders})"
        rows = 0
        with transaction.atomic(), connection.cursor() as cursor, tempfile.TemporaryDirectory() as folder:
            cursor.execute(f"CREATE TABLE {table} ({', '.join(f'{n} {t}' for n, t in _COLUMNS)})")
            for entry in files:
                batch = []
                try:
                    # read_archive checks the digest again on the copy it reads.
                    lines = read_archive(entry["key"], os.path.join(folder, "archive.jsonl.gz"), sha256=entry["sha256"])
                    for line in lines:
                        batch.append(_row(line, entry["key"]))
                        if len(batch) >= _INSERT_BATCH:
                            cursor.executemany(insert, batch)
                            rows += len(batch)
                            batch = []
                except ArchiveUnavailable as exc:
                    raise CommandError(f"{exc}; nothing restored") from exc
                if batch:
                    cursor.executemany(insert, batch)
                    rows += len(batch)
        return rows


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
