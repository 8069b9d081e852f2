"""The prediction log writer: batches, counters and per-minute aggregates that agree with the rows,
a database connection dropped mid-write, the memory bound, a refused row,
and the flush at process exit."""

import os
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from rollouts import prediction_log
from rollouts.models import PredictionAggregate, PredictionCounter, PredictionLog
from rollouts.prediction_log import BUCKET_LABELS, LATENCY_BUCKETS_MS, PredictionLogWriter, new_entry
from tests.conftest import ModelVersionFactory, wait_for


def entries(version, count: int, *, start: int = 0, route: str = "stable", error_every: int = 0) -> list[dict]:
    return [
        new_entry(
            model_id=version.model_id,
            version_id=version.pk,
            rollout_id=None,
            route=route,
            text=f"文本 {start + n}",
            key_digest=prediction_log.key_hash(f"k{n}"),
            label="positive",
            confidence=0.9,
            latency_ms=float((start + n) % 40) * 3.7 + 0.4,
            created_at=timezone.now(),
            error="boom" if error_every and n % error_every == 0 else "",
        )
        for n in range(count)
    ]


def assert_counters_match_rows(version):
    for counter in PredictionCounter.objects.filter(version=version):
        rows = PredictionLog.objects.filter(version=version, route=counter.route)
        latencies = list(rows.values_list("latency_ms", flat=True))
        assert counter.requests == len(latencies)
        assert counter.errors == rows.exclude(error="").count()
        assert counter.latency_ms_sum == pytest.approx(sum(latencies))
        cumulative = [counter.latency_buckets[label] for label in BUCKET_LABELS]
        assert cumulative == sorted(cumulative) and cumulative[-1] == counter.requests
        for bound, label in zip(LATENCY_BUCKETS_MS, BUCKET_LABELS):
            assert counter.latency_buckets[label] == sum(1 for ms in latencies if ms <= bound)


def assert_aggregates_match_rows(version):
    """Every minute and half-hour aggregate holds exactly its rows (nothing
    counted twice by a retried batch, nothing missing)."""
    rows = PredictionLog.objects.filter(version=version)
    stored = PredictionAggregate.objects.filter(version=version)
    for span in (60, 1800):
        assert sum(stored.filter(span_seconds=span).values_list("requests", flat=True)) == rows.count()
    for aggregate in stored:
        period = rows.filter(
            created_at__gte=aggregate.start, created_at__lt=aggregate.start + timedelta(seconds=aggregate.span_seconds)
        )
        latencies = list(period.values_list("latency_ms", flat=True))
        assert aggregate.requests == len(latencies)
        assert aggregate.errors == period.exclude(error="").count()
        assert aggregate.latency_ms_sum == pytest.approx(sum(latencies))
        assert aggregate.texts == period.exclude(input_text="").count()


@pytest.fixture
def version(committed_db):
    return ModelVersionFactory()


def test_a_full_batch_is_written_by_the_thread_at_once(version):
    writer = PredictionLogWriter(flush_seconds=3600, batch_size=10, max_buffer=1000)
    writer.enqueue(entries(version, 25))
    # Two full batches wake the thread; the rest waits for the timer or a flush.
    wait_for(lambda: PredictionLog.objects.count() >= 20, timeout=30, what="two batches")
    assert writer.flush(timeout=10)
    assert PredictionLog.objects.count() == 25 and writer.written == 25
    assert_counters_match_rows(version)
    writer.stop()


def test_rows_are_written_every_flush_interval(version):
    writer = PredictionLogWriter(flush_seconds=0.2, batch_size=1000, max_buffer=10000)
    writer.enqueue(entries(version, 3))
    wait_for(lambda: PredictionLog.objects.count() == 3, timeout=30, what="the timed flush")
    assert writer.buffered == 0
    writer.stop()


def test_counters_add_up_over_batches_and_routes(version):
    writer = PredictionLogWriter(flush_seconds=0, batch_size=7, max_buffer=1000)
    writer.enqueue(entries(version, 30, error_every=4))
    writer.enqueue(entries(version, 11, start=30, route="candidate"))
    assert writer.flush()
    assert PredictionCounter.objects.get(version=version, route="stable").errors == 8
    assert_counters_match_rows(version)


def test_a_connection_dropped_mid_write_loses_nothing(version):
    """A real outage of the writer's connection: its INSERT waits on a table
    lock held elsewhere, its backend is terminated (as a database restart
    would), and the writer retries on a new connection once the lock goes."""
    db = connection.settings_dict
    dsn = f"host={db['HOST']} port={db['PORT']} user={db['USER']} dbname={db['NAME']}"
    with psycopg.connect(dsn) as blocker:
        blocker.execute("LOCK TABLE rollouts_predictionlog IN ACCESS EXCLUSIVE MODE")
        writer = PredictionLogWriter(flush_seconds=0.1, batch_size=1000, max_buffer=10000)
        writer.enqueue(entries(version, 20))

        def waiting_writer_pid():
            with psycopg.connect(dsn, autocommit=True) as probe:
                row = probe.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'INSERT INTO \"rollouts_predictionlog\"%%'"
                ).fetchone()
            return row[0] if row else None

        pid = wait_for(waiting_writer_pid, timeout=30, what="the writer's INSERT waiting on the lock")
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_for(lambda: writer.failures >= 1, timeout=30, what="the writer to notice the dropped connection")
        assert writer.buffered == 20
        blocker.rollback()  # the outage ends
    wait_for(lambda: PredictionLog.objects.count() == 20, timeout=60, what="the retried batch")
    assert writer.buffered == 0 and writer.dropped == 0
    assert_counters_match_rows(version)
    assert_aggregates_match_rows(version)
    writer.stop()


def test_a_row_the_database_refuses_is_dropped_and_counted_the_rest_written(version):
    writer = PredictionLogWriter(flush_seconds=0, batch_size=100, max_buffer=1000)
    bad = entries(version, 1)[0] | {"version_id": version.pk + 10_000_000}  # no such version
    writer.enqueue(entries(version, 5) + [bad] + entries(version, 4, start=5))
    assert writer.flush()
    assert PredictionLog.objects.count() == 9 and writer.dropped == 1
    assert_counters_match_rows(version)
    assert_aggregates_match_rows(version)


def test_the_buffer_is_bounded_and_drops_the_oldest_with_a_count(version, caplog):
    writer = PredictionLogWriter(flush_seconds=0, batch_size=5, max_buffer=10)
    writer.enqueue(entries(version, 25))
    assert writer.flush()
    assert writer.dropped == 15 and PredictionLog.objects.count() == 10
    # The newest rows are the ones kept.
    assert set(PredictionLog.objects.values_list("input_text", flat=True)) == {f"文本 {n}" for n in range(15, 25)}
    assert "dropped the 15 oldest" in caplog.text


def test_writes_from_many_threads_all_arrive(version):
    writer = PredictionLogWriter(flush_seconds=0.05, batch_size=50, max_buffer=100000)
    threads = [
        threading.Thread(
            target=lambda i=i: [writer.enqueue(entries(version, 10, start=i * 1000 + j * 10)) for j in range(20)]
        )
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.flush(timeout=30)
    assert PredictionLog.objects.count() == 800 == writer.written
    assert_counters_match_rows(version)
    assert_aggregates_match_rows(version)
    writer.stop()


def test_only_a_short_hash_of_the_key_and_a_bounded_text_are_stored(version):
    entry = new_entry(
        model_id=version.model_id,
        version_id=version.pk,
        rollout_id=None,
        route="stable",
        text="长" * 3000,
        key_digest=prediction_log.key_hash("alice@example.test"),
        label="positive",
        confidence=0.5,
        latency_ms=1.0,
        created_at=timezone.now(),
    )
    writer = PredictionLogWriter(flush_seconds=0, batch_size=10, max_buffer=100)
    writer.enqueue([entry])
    assert writer.flush()
    row = PredictionLog.objects.get()
    assert len(row.input_text) == prediction_log.INPUT_TEXT_LIMIT and row.input_length == 3000
    assert len(row.key_hash) == 16 and "alice" not in row.key_hash


def test_buffered_rows_are_written_when_the_process_exits(version):
    db = connection.settings_dict
    script = textwrap.dedent(f"""
        import django
        django.setup()
        from django.utils import timezone
        from rollouts import prediction_log
        prediction_log.enqueue([
            prediction_log.new_entry(model_id={version.model_id}, version_id={version.pk}, rollout_id=None,
                route="stable", text=f"exit {{n}}", key_digest="", label="positive", confidence=0.7,
                latency_ms=2.0, created_at=timezone.now())
            for n in range(137)
        ])
        assert prediction_log.writer_stats()["buffered"] == 137
        # No flush here: the interpreter's exit must write them.
    """)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "glassbox.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "GLASSBOX_DATA_DIR": str(settings.DATA_DIR),
        "GLASSBOX_PREDICTION_LOG_FLUSH_SECONDS": "3600",
        "GLASSBOX_PREDICTION_LOG_BATCH": "100000",
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert PredictionLog.objects.filter(input_text__startswith="exit ").count() == 137
    assert_counters_match_rows(version)
