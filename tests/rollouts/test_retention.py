"""How long prediction logs are kept (rollouts/retention.py): tiers and the
legal floor, batched deletion of expired rows with their feedback, rows of
active rollouts kept, archives that a restore checks against the audit
trail, resuming after a kill, and an unreachable archive storage."""

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from governance.audit import record_event
from governance.audit_actions import AuditAction
from governance.models import AuditEvent
from registry.models import RegisteredModel
from rollouts.models import Alert, AnalysisRun, Feedback, PredictionLog, RetentionDay, Rollout
from rollouts.retention import archive_key, cutoff_for, retention_apply
from rollouts.tasks import apply_prediction_retention
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, service_env, wait_for

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def archive_root(settings, tmp_path):
    """The artifact storage of this test: a real folder of its own."""
    root = tmp_path / "artifacts"
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    settings.GLASSBOX_PREDICTION_ARCHIVE = True
    return root


def model_with_version(name: str, tier: str, engineer):
    model = RegisteredModelFactory(name=name, risk_tier=tier, created_by=engineer)
    return model, ModelVersionFactory(model=model)


def log_rows(version, *, days_ago: int, count: int, rollout=None, now=NOW) -> list[PredictionLog]:
    """`count` logged predictions spread over one UTC day, `days_ago` days before `now`."""
    day = (now - timedelta(days=days_ago)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = [
        PredictionLog(
            model=version.model,
            version=version,
            rollout=rollout,
            route="stable",
            input_text=f"第{n}条评论：质量很好，物流也快。",
            input_length=14,
            label="positive" if n % 3 else "negative",
            confidence=0.5 + (n % 50) / 100,
            latency_ms=3.25 + n,
            created_at=day + timedelta(seconds=n * 60),
        )
        for n in range(count)
    ]
    return PredictionLog.objects.bulk_create(rows)


def label(row, user, *, correct=True) -> Feedback:
    return Feedback.objects.create(
        prediction=row, label=row.label if correct else "other", correct=correct, created_by=user
    )


def archive_lines(root, key) -> list[dict]:
    with gzip.open(root / key, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def retention_events(model) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(action=AuditAction.PREDICTION_RETENTION, model_name=model.name).order_by("id")
    )


# --- configuration ---------------------------------------------------------------------------


def test_retention_days_are_parsed_strictly(monkeypatch):
    from glassbox.settings import _retention_days

    name = "GLASSBOX_PREDICTION_RETENTION_DAYS"
    monkeypatch.delenv(name, raising=False)
    assert _retention_days(name, "high=400,medium=200,low=90") == {"high": 400, "medium": 200, "low": 90}
    monkeypatch.setenv(name, " low=30 , high=183,medium=60")
    assert _retention_days(name, "") == {"high": 183, "medium": 60, "low": 30}
    refused = {
        "high=400,medium=200": "no value for low",
        "high=400,medium=200,low=90,low=10": "low is given twice",
        "high=400,medium=200,lowest=90": "'lowest=90' is not tier=days",
        "high=400,medium=2.5,low=90": "medium='2.5' is not a whole number",
        "high=400,medium=0,low=90": "medium='0' is not a whole number",
        "high=400;medium=200;low=90": "high=.400;medium=200;low=90. is not a whole number",
        "high=182,medium=200,low=90": "high=182 is below 183 days",
    }
    for value, reason in refused.items():
        monkeypatch.setenv(name, value)
        with pytest.raises(ImproperlyConfigured, match=reason):
            _retention_days(name, "")


def test_high_risk_retention_below_six_months_stops_the_start():
    """manage.py (and so a worker or the web server: the same settings) refuses to start, saying why."""
    env = {**os.environ, "GLASSBOX_PREDICTION_RETENTION_DAYS": "high=120,medium=200,low=90"}
    refused = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "high=120 is below 183 days" in refused.stderr
    assert "EU AI Act (Art. 19)" in refused.stderr
    env["GLASSBOX_PREDICTION_ARCHIVE"] = "sometimes"
    env["GLASSBOX_PREDICTION_RETENTION_DAYS"] = "high=183,medium=200,low=90"
    refused = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "GLASSBOX_PREDICTION_ARCHIVE must be on or off" in refused.stderr


def test_the_task_refuses_a_floor_lowered_behind_the_settings_back(db, settings, engineer, archive_root):
    model, version = model_with_version("zh-high", "high", engineer)
    log_rows(version, days_ago=300, count=3)
    settings.GLASSBOX_PREDICTION_RETENTION_DAYS = {"high": 100, "medium": 200, "low": 90}
    with pytest.raises(ImproperlyConfigured, match="below the 183-day floor"):
        retention_apply(now=NOW)
    assert PredictionLog.objects.filter(model=model).count() == 3


def test_the_beat_schedule_runs_the_task_on_the_heavy_queue():
    entry = settings.CELERY_BEAT_SCHEDULE["rollouts-prediction-retention"]
    assert entry["task"] == apply_prediction_retention.name
    assert entry["schedule"] == float(settings.GLASSBOX_PREDICTION_RETENTION_SECONDS)
    assert settings.CELERY_TASK_ROUTES[apply_prediction_retention.name] == {"queue": "explanations"}


# --- deletion by tier ------------------------------------------------------------------------


def test_expired_rows_and_their_feedback_go_by_tier_in_batches(db, settings, engineer, archive_root):
    settings.GLASSBOX_PREDICTION_RETENTION_BATCH = 7
    ages = (10, 95, 205, 405)
    tiers = {"low": 90, "medium": 200, "high": 400}
    rows = {}
    for tier in tiers:
        model, version = model_with_version(f"zh-{tier}", tier, engineer)
        rows[tier] = {age: log_rows(version, days_ago=age, count=20) for age in ages}
    # A finished rollout of the low model: its analysis stays, its expired rows go.
    low = RegisteredModel.objects.get(name="zh-low")
    finished = Rollout.objects.create(
        model=low, candidate=low.versions.get(), status=Rollout.Status.PROMOTED, created_by=engineer
    )
    run = AnalysisRun.objects.create(
        rollout=finished, step_index=0, window_start=NOW, window_end=NOW, verdict="successful", measurements=[]
    )
    PredictionLog.objects.filter(pk__in=[r.pk for r in rows["low"][95]]).update(rollout=finished)
    labelled_old = rows["low"][205][3]
    label(labelled_old, engineer)
    labelled_recent = rows["low"][10][3]
    label(labelled_recent, engineer)
    record_event(actor=engineer, action="test.before_retention", obj=low)
    events_before = list(AuditEvent.objects.order_by("id").values_list("id", "hash"))

    results = retention_apply(now=NOW)

    for tier, days in tiers.items():
        left = set(PredictionLog.objects.filter(model__name=f"zh-{tier}").values_list("id", flat=True))
        for age in ages:
            ids = {r.pk for r in rows[tier][age]}
            if age < days:
                assert ids <= left, (tier, age)
            else:
                assert not ids & left, (tier, age)
    assert not Feedback.objects.filter(pk=labelled_old.feedback.pk).exists()
    assert Feedback.objects.filter(prediction=labelled_recent).exists()
    # Analysis results and the audit trail as they were (plus the retention events).
    assert AnalysisRun.objects.filter(pk=run.pk, verdict="successful").exists()
    assert list(AuditEvent.objects.filter(id__lte=events_before[-1][0]).order_by("id").values_list("id", "hash")) == (
        events_before
    )
    # One event per model: rows, period, tier, days, files with digests.
    by_model = {result.model.name: result for result in results}
    low_event = retention_events(low)
    assert len(low_event) == 1 and by_model["zh-low"].event == low_event[0]
    detail = low_event[0].detail
    assert detail["tier"] == "low" and detail["retention_days"] == 90
    assert (detail["rows_deleted"], detail["feedback_deleted"]) == (60, 1)
    assert detail["period_from"] == (NOW - timedelta(days=405)).date().isoformat()
    assert detail["period_to"] == (NOW - timedelta(days=95)).date().isoformat()
    assert low_event[0].actor_id is None
    for entry in detail["files"]:
        assert hashlib.sha256((archive_root / entry["key"]).read_bytes()).hexdigest() == entry["sha256"]
    # Batches of 7: each part moved its counters batch by batch to its full count.
    parts = RetentionDay.objects.filter(model=low)
    assert [(p.rows, p.rows_deleted, p.finished_at is not None) for p in parts] == [(20, 20, True)] * 3
    assert [e.detail["rows_deleted"] for e in retention_events(RegisteredModel.objects.get(name="zh-high"))] == [20]
    # The archive of the labelled day: sorted by id, the feedback inside its prediction's line.
    day = (NOW - timedelta(days=205)).date()
    lines = archive_lines(archive_root, archive_key("zh-low", day, 1))
    assert [line["id"] for line in lines] == sorted(r.pk for r in rows["low"][205])
    embedded = [line for line in lines if line["feedback"]]
    assert len(embedded) == 1 and embedded[0]["id"] == labelled_old.pk
    assert embedded[0]["feedback"]["label"] == labelled_old.label and embedded[0]["input_text"].startswith("第3条")
    assert embedded[0]["created_at"] == labelled_old.created_at.astimezone(UTC).isoformat(timespec="microseconds")
    assert embedded[0]["prediction_id"] == str(labelled_old.prediction_id) and embedded[0]["mirror_of"] is None
    assert embedded[0]["feedback"]["created_at"] == labelled_old.feedback.created_at.isoformat(timespec="microseconds")

    # Nothing left to do: a second run deletes nothing and records nothing.
    assert retention_apply(now=NOW) == []
    assert len(retention_events(low)) == 1


def test_deleting_expired_rows_leaves_their_aggregates_and_the_monitoring_numbers_as_they_were(
    db, engineer, archive_root
):
    """Monitoring reads PredictionAggregate rows (written with the logs):
    the raw rows of a period may go, its requests, labels, latency and
    feedback stay readable."""
    from rollouts import aggregation
    from rollouts.models import PredictionAggregate

    model, version = model_with_version("zh-aggregated", "low", engineer)
    rows = log_rows(version, days_ago=95, count=40)
    label(rows[5], engineer)
    day = rows[0].created_at.replace(hour=0, minute=0)
    aggregation.rebuild_aggregates(since=day, until=day + timedelta(days=1), version_ids=[version.pk])
    stored_before = list(PredictionAggregate.objects.filter(version=version).order_by("pk").values())
    window_before = aggregation.aggregate_buckets(version.pk, day, day + timedelta(days=1), timedelta(days=1))

    retention_apply(now=NOW)

    assert not PredictionLog.objects.filter(version=version).exists()
    assert list(PredictionAggregate.objects.filter(version=version).order_by("pk").values()) == stored_before
    window_after = aggregation.aggregate_buckets(version.pk, day, day + timedelta(days=1), timedelta(days=1))
    assert window_after == window_before
    assert window_after[0]["requests"] == 40 and window_after[0]["feedback"] == 1


def test_rows_of_an_active_rollout_are_kept_until_it_ends(db, engineer, archive_root):
    model, version = model_with_version("zh-canary", "low", engineer)
    candidate = ModelVersionFactory(model=model)
    rollout = Rollout.objects.create(
        model=model, candidate=candidate, status=Rollout.Status.PAUSED, created_by=engineer
    )
    held = log_rows(version, days_ago=120, count=5) + log_rows(candidate, days_ago=120, count=5, rollout=rollout)
    expired = log_rows(version, days_ago=100, count=5)

    retention_apply(now=NOW)

    left = set(PredictionLog.objects.filter(model=model).values_list("id", flat=True))
    assert {r.pk for r in held} <= left
    assert not {r.pk for r in expired} & left
    # The rollout ends: its day goes on the next run.
    Rollout.objects.filter(pk=rollout.pk).update(status=Rollout.Status.ABORTED)
    retention_apply(now=NOW)
    assert not PredictionLog.objects.filter(model=model).exists()
    assert [e.detail["rows_deleted"] for e in retention_events(model)] == [5, 10]


def test_feedback_that_arrives_after_the_archive_is_kept_for_a_later_part(db, settings, engineer, archive_root):
    """A prediction is never deleted with feedback its archive lacks: it
    waits for the next run, which archives it (with the feedback) as part 2."""
    from rollouts import retention

    model, version = model_with_version("zh-late", "low", engineer)
    rows = log_rows(version, days_ago=100, count=6)
    day = rows[0].created_at.date()
    result = retention.ModelRetention(model=model, tier="low", days=90, cutoff=cutoff_for(90, NOW))
    folder = archive_root.parent / "work"
    folder.mkdir()
    part = retention._new_part(model, day, result, folder=str(folder))
    late = label(rows[2], engineer)  # after the archive was written, before its rows are deleted
    retention._delete_part(part, ids_path=str(folder / "ids.bin"))
    assert list(PredictionLog.objects.filter(model=model).values_list("id", flat=True)) == [rows[2].pk]
    retention_apply(now=NOW)
    assert not PredictionLog.objects.filter(model=model).exists()
    second = archive_lines(archive_root, archive_key(model.name, day, 2))
    assert [(line["id"], line["feedback"]["id"]) for line in second] == [(rows[2].pk, late.pk)]
    (event,) = retention_events(model)
    assert event.detail["rows_deleted"] == 6
    assert [(f["part"], f["rows"], f["deleted"]) for f in event.detail["files"]] == [(1, 6, 5), (2, 1, 1)]


def test_with_the_archive_off_rows_are_deleted_without_a_copy(db, settings, engineer, archive_root):
    settings.GLASSBOX_PREDICTION_ARCHIVE = False
    settings.GLASSBOX_PREDICTION_RETENTION_BATCH = 4
    model, version = model_with_version("zh-nocopy", "low", engineer)
    rows = log_rows(version, days_ago=91, count=10)
    label(rows[5], engineer)
    kept = log_rows(version, days_ago=89, count=2)

    retention_apply(now=NOW)

    assert list(PredictionLog.objects.filter(model=model).values_list("id", flat=True).order_by("id")) == [
        r.pk for r in kept
    ]
    assert not archive_root.exists() or not any(archive_root.rglob("*.gz"))
    (event,) = retention_events(model)
    assert (event.detail["archived"], event.detail["files"]) == (False, [])
    assert (event.detail["rows_deleted"], event.detail["feedback_deleted"]) == (10, 1)


# --- archives and restore ----------------------------------------------------------------------


def test_the_archive_of_a_day_is_the_same_bytes_every_time(db, engineer, archive_root, tmp_path):
    from rollouts import retention

    model, version = model_with_version("zh-same", "low", engineer)
    rows = log_rows(version, days_ago=100, count=30)
    label(rows[0], engineer, correct=False)
    day = rows[0].created_at.date()
    digests = set()
    for attempt in range(2):
        path = tmp_path / f"build-{attempt}.jsonl.gz"
        retention._write_day(model, day, archive_path=str(path), ids_path=str(tmp_path / f"ids-{attempt}"))
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    retention_apply(now=NOW)
    assert retention_events(model)[0].detail["files"][0]["sha256"] in digests


def test_a_restore_loads_the_period_into_a_scratch_table_after_checking_digests(db, engineer, archive_root):
    model, version = model_with_version("zh-restore", "medium", engineer)
    inside = log_rows(version, days_ago=250, count=8) + log_rows(version, days_ago=240, count=4)
    outside = log_rows(version, days_ago=230, count=3)
    label(inside[1], engineer, correct=False)
    retention_apply(now=NOW)
    assert not PredictionLog.objects.filter(model=model).exists()
    since, until = (NOW - timedelta(days=250)).date(), (NOW - timedelta(days=240)).date()

    call_command("restore_predictions", model=model.name, since=str(since), until=str(until), table="investigation_1")

    with connection.cursor() as cursor:
        cursor.execute("SELECT id, feedback_correct, input_text FROM investigation_1 ORDER BY id")
        restored = cursor.fetchall()
    assert [row[0] for row in restored] == sorted(r.pk for r in inside)
    assert {row[0]: row[1] for row in restored}[inside[1].pk] is False
    assert restored[0][2] == inside[0].input_text
    assert not {r.pk for r in outside} & {row[0] for row in restored}
    event = AuditEvent.objects.get(action=AuditAction.PREDICTION_RESTORE, model_name=model.name)
    assert (event.detail["table"], event.detail["rows"], len(event.detail["files"])) == ("investigation_1", 12, 2)

    # Never into an existing table, the prediction log least of all.
    for table in ("investigation_1", PredictionLog._meta.db_table):
        with pytest.raises(CommandError, match="exists"):
            call_command("restore_predictions", model=model.name, since=str(since), until=str(until), table=table)

    # A changed archive is refused by name, and nothing is restored.
    tampered = archive_key(model.name, since, 1)
    lines = archive_lines(archive_root, tampered)
    lines[0]["label"] = "negative" if lines[0]["label"] == "positive" else "positive"
    with gzip.open(archive_root / tampered, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    with pytest.raises(CommandError, match=f"{tampered}: SHA-256 .* does not match"):
        call_command(
            "restore_predictions", model=model.name, since=str(since), until=str(until), table="investigation_2"
        )
    assert "investigation_2" not in connection.introspection.table_names()


# --- faults ------------------------------------------------------------------------------------


@pytest.fixture
def unreachable_s3(settings):
    """A real S3 client against an endpoint where nothing listens."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from botocore.config import Config

    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": "glassbox-archive",
                "endpoint_url": f"http://127.0.0.1:{port}",
                "access_key": "test",
                "secret_key": "test",
                "region_name": "us-east-1",
                "client_config": Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=2),
            },
        },
    }
    settings.GLASSBOX_PREDICTION_ARCHIVE = True


def test_unreachable_archive_storage_deletes_nothing_and_raises_an_alert(
    db, settings, engineer, unreachable_s3, tmp_path
):
    model, version = model_with_version("zh-nostore", "low", engineer)
    rows = log_rows(version, days_ago=100, count=10) + log_rows(version, days_ago=95, count=10)
    label(rows[0], engineer)

    retention_apply(now=NOW)
    retention_apply(now=NOW)  # a second failing run: still one open alert

    assert PredictionLog.objects.filter(model=model).count() == 20 and Feedback.objects.count() == 1
    assert not RetentionDay.objects.filter(model=model).exists()
    alert = Alert.objects.get(model=model, metric=Alert.PREDICTION_ARCHIVE_FAILED, cleared_at__isnull=True)
    assert alert.severity == Alert.Severity.CRITICAL and alert.version == version
    assert "could not be archived, so none were deleted" in alert.message
    assert "prediction-archive/zh-nostore/" in alert.message
    assert AuditEvent.objects.filter(action=AuditAction.MONITOR_ALERT_RAISED, object_id=str(alert.pk)).count() == 1
    assert not retention_events(model)

    # The storage is back: the next run archives, deletes and clears the alert.
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    retention_apply(now=NOW)
    assert not PredictionLog.objects.filter(model=model).exists()
    alert.refresh_from_db()
    assert alert.cleared_at is not None


def test_a_stored_archive_that_was_never_recorded_is_recognised_or_replaced(db, engineer, archive_root, tmp_path):
    """A run killed after storing a day's file but before recording it: the
    next run finds the identical file (same digest) and goes on; a partial
    file there (an interrupted upload) is replaced, since nothing was deleted
    from it."""
    from rollouts import retention

    model, version = model_with_version("zh-orphan", "low", engineer)
    first = log_rows(version, days_ago=100, count=10)
    second = log_rows(version, days_ago=99, count=10)
    day1, day2 = first[0].created_at.date(), second[0].created_at.date()
    built = tmp_path / "built.jsonl.gz"
    retention._write_day(model, day1, archive_path=str(built), ids_path=str(tmp_path / "ids"))
    digest = hashlib.sha256(built.read_bytes()).hexdigest()
    retention._store_verified(str(built), archive_key(model.name, day1, 1), digest)
    partial = archive_root / archive_key(model.name, day2, 1)
    partial.write_bytes(b"\x1f\x8b half an upload")

    retention_apply(now=NOW)

    assert not PredictionLog.objects.filter(model=model).exists()
    files = {f["key"]: f["sha256"] for f in retention_events(model)[0].detail["files"]}
    assert files[archive_key(model.name, day1, 1)] == digest
    assert hashlib.sha256(partial.read_bytes()).hexdigest() == files[archive_key(model.name, day2, 1)]
    assert [line["id"] for line in archive_lines(archive_root, archive_key(model.name, day2, 1))] == [
        r.pk for r in second
    ]


def test_a_part_whose_rows_all_went_before_the_kill_is_still_finished_and_reported(db, engineer, archive_root):
    """Killed after its last batch, before the part was marked finished: the
    day has no rows left, and the next run still finishes and audits it."""
    from rollouts import retention

    model, version = model_with_version("zh-lastbatch", "low", engineer)
    rows = log_rows(version, days_ago=100, count=12)
    result = retention.ModelRetention(model=model, tier="low", days=90, cutoff=cutoff_for(90, NOW))
    folder = archive_root.parent / "work"
    folder.mkdir()
    part = retention._new_part(model, rows[0].created_at.date(), result, folder=str(folder))
    retention._delete_listed(part, str(folder / "ids.bin"))
    assert not PredictionLog.objects.filter(model=model).exists() and not retention_events(model)

    retention_apply(now=NOW)

    part.refresh_from_db()
    assert part.finished_at is not None and part.audited_at is not None
    (event,) = retention_events(model)
    assert event.detail["rows_deleted"] == 12 and event.detail["files"][0]["sha256"] == part.sha256


def _expired_world(engineer, *, days: int, per_day: int):
    model, version = model_with_version("zh-killed", "low", engineer)
    rows = []
    for age in range(100, 100 + days):
        rows += log_rows(version, days_ago=age, count=per_day, now=timezone.now())
    for row in rows[::9]:
        label(row, engineer)
    return model, {r.pk for r in rows}


def _wait_for_run_lock_released() -> None:
    """The killed process's database session (and its run lock) ends once
    PostgreSQL notices the closed connection: a moment, not at once."""
    from rollouts.retention import _RUN_LOCK_KEY

    def released():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted",
                [_RUN_LOCK_KEY & 0xFFFFFFFF],
            )
            return cursor.fetchone()[0] == 0

    wait_for(released, timeout=30, what="the killed run's lock to go")


def _check_resumed(model, expected_ids: set[int], archive_root) -> None:
    """After the kill and the next run: every row deleted once, every row in
    exactly one archive, the audit events adding up, the digests right."""
    assert not PredictionLog.objects.filter(model=model).exists()
    assert not Feedback.objects.filter(prediction__model=model).exists()
    events = retention_events(model)
    assert sum(e.detail["rows_deleted"] for e in events) == len(expected_ids)
    archived = []
    for event in events:
        for entry in event.detail["files"]:
            assert hashlib.sha256((archive_root / entry["key"]).read_bytes()).hexdigest() == entry["sha256"]
            archived += [line["id"] for line in archive_lines(archive_root, entry["key"])]
    assert sorted(archived) == sorted(expected_ids)
    assert all(p.rows_deleted == p.rows and p.audited_at for p in RetentionDay.objects.filter(model=model))


@pytest.mark.faults
def test_killed_between_archive_and_delete_the_next_run_finishes(committed_db, engineer, archive_root):
    """The task function in a child process, SIGKILLed once its first day is
    archived and recorded but before a row is deleted (a long pause before
    each batch holds it there)."""
    model, expected = _expired_world(engineer, days=2, per_day=30)
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from rollouts.tasks import apply_prediction_retention as t; t()",
        ],
        cwd=settings.BASE_DIR,
        env=service_env(
            ARTIFACT_ROOT=str(archive_root),
            DJANGO_SETTINGS_MODULE="glassbox.settings",
            GLASSBOX_PREDICTION_RETENTION_BATCH="10",
            GLASSBOX_PREDICTION_RETENTION_PAUSE_MS="5000",
        ),
        start_new_session=True,
    )
    try:
        part = wait_for(lambda: RetentionDay.objects.filter(model=model).first(), timeout=60, what="the first archive")
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=20)
    part.refresh_from_db()
    assert (part.rows, part.rows_deleted, part.finished_at) == (30, 0, None)
    assert PredictionLog.objects.filter(model=model).count() == 60
    _wait_for_run_lock_released()

    retention_apply()

    _check_resumed(model, expected, archive_root)


@pytest.mark.worker
@pytest.mark.faults
def test_a_worker_killed_mid_deletion_resumes_on_the_next_run(engineer, archive_root, worker_pool):
    """Celery beat starts the task in a real worker; the worker is SIGKILLed
    after some batches of a day are deleted; the next run deletes the rest."""
    model, expected = _expired_world(engineer, days=2, per_day=60)
    worker_pool.start(
        "retention",
        beat=True,
        env={
            "ARTIFACT_ROOT": str(archive_root),
            "GLASSBOX_PREDICTION_RETENTION_SECONDS": "1",
            "GLASSBOX_PREDICTION_RETENTION_BATCH": "10",
            "GLASSBOX_PREDICTION_RETENTION_PAUSE_MS": "400",
        },
    )
    wait_for(
        lambda: RetentionDay.objects.filter(model=model, rows_deleted__gte=20, finished_at__isnull=True).exists(),
        timeout=90,
        what="a day half deleted",
    )
    worker_pool.kill("retention")
    _wait_for_run_lock_released()
    left = PredictionLog.objects.filter(model=model).count()
    assert 0 < left < 120

    retention_apply()

    _check_resumed(model, expected, archive_root)
