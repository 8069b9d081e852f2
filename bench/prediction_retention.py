"""Retention of prediction logs at volume: N expired rows loaded with COPY,
then the retention of their model (archive + batched delete, as the beat task
does it, in a child process as in a Celery worker) while a thread here keeps
writing prediction logs the way a serving process does; the p99 of those
writes with and without the retention running.

    make bench-retention                  # creates and drops the scratch database retentionbench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/retentionbench .venv/bin/python bench/prediction_retention.py \
        [--rows 1000000] [--days 10] [--batch 5000] [--pause-ms 0] [--write-seconds 30]

`measure_retention(database_url, rows=...)` is the same measurement for
other benches (bench/prediction_data.py): it returns (label, value) rows to
print and leaves its data in the database it was given (drop it after).

What is printed:
- rows/s deleted: expired rows / wall time of the model's retention run
  (reading, archiving, storing + reading back, and the batched deletes);
- archive bytes per million rows (gzip JSON lines, feedback embedded);
- p99 of a prediction-log write (a batch of --writer-batch rows through
  rollouts.prediction_log._write_batch, every --writer-interval seconds,
  about the 400 rows/s one small server logged under load) without the
  retention (for --write-seconds) and while it runs (writes started between
  the child's start and end of the retention itself), and their ratio
  (target <= 1.5).
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHRASES = [
    "质量很好，物流也快",
    "客服态度差，等了三天才回复",
    "包装破损，但是东西没坏",
    "性价比高，推荐购买",
    "颜色和图片不一样，有点失望",
    "第二次买了，一如既往的好",
    "尺寸偏小，建议买大一码",
    "电池续航一般，充电很快",
    "味道不错，孩子很喜欢",
    "发货太慢了，催了好几次",
    "做工粗糙，线头很多",
    "屏幕清晰，运行流畅",
    "酒店位置方便，房间干净",
    "司机很准时，车内整洁",
    "退货流程麻烦，不会再买",
]


def _setup_django(database_url: str) -> None:
    """Configure Django on `database_url`, or check that the process already
    runs on it (a caller that set Django up itself)."""
    import django
    from django.conf import settings

    wanted = urlparse(database_url).path.lstrip("/")
    if settings.configured:
        current = settings.DATABASES["default"]["NAME"]
        if current != wanted:
            raise ValueError(f"Django runs on database {current!r}, not {wanted!r}")
        return
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "glassbox.settings")
    os.environ.setdefault("DJANGO_DEBUG", "0")  # query logging would hold every statement in memory
    os.environ.setdefault("GLASSBOX_DATA_DIR", str(ROOT / "var" / "bench-retention"))
    django.setup()
    if wanted == "test" or wanted.startswith("test_"):
        sys.exit(f"Refusing to use {wanted!r}: that is a test database.")


def _fixtures(tag: str):
    from django.contrib.auth.models import User

    from governance.models import Team
    from registry.models import ModelVersion, RegisteredModel

    user = User.objects.create_user(f"bench-retention-{tag}", password=None)
    team, _ = Team.objects.get_or_create(name="bench")

    def model(name: str, tier: str):
        registered = RegisteredModel.objects.create(name=name, risk_tier=tier, created_by=user, team=team)
        version = ModelVersion.objects.create(
            model=registered,
            number=1,
            flavor=ModelVersion.Flavor.SKLEARN,
            labels=["negative", "positive"],
            artifact_sha256=uuid.uuid4().hex * 2,
            artifact_size=1,
            artifact_filename="model.skops",
            artifact_key=f"models/bench/{tag}-{name}.zip",
            artifact_format="zip",
            created_by=user,
        )
        return registered, version

    # The expired one (low: 90 days) and a live one that keeps being written to.
    return user, model(f"bench-retention-{tag}", "low"), model(f"bench-live-{tag}", "high")


def _load(model, version, user, *, rows: int, days: int, feedback_every: int, now: datetime) -> float:
    """COPY `rows` rows spread over `days` UTC days ending 100 days ago (all
    expired for a low-risk model), then feedback on every Nth row."""
    from django.db import connection

    from rollouts.models import Feedback, PredictionLog

    rng = random.Random(model.pk)  # another run on the same database draws other ids
    first_day = (now - timedelta(days=100 + days)).replace(hour=0, minute=0, second=0, microsecond=0)
    step = timedelta(days=days) / rows
    columns = (
        "prediction_id, model_id, version_id, shadow, route, key_hash, input_text, input_length, label, "
        "confidence, latency_ms, error, created_at"
    )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {PredictionLog._meta.db_table} ({columns}) FROM STDIN") as copy:
            for n in range(rows):
                text = "，".join(rng.sample(PHRASES, rng.randint(1, 3))) + f"。订单{rng.randint(10**7, 10**8)}"
                copy.write_row(
                    (
                        uuid.UUID(int=rng.getrandbits(128), version=4),
                        model.pk,
                        version.pk,
                        False,
                        "stable",
                        f"{rng.getrandbits(64):016x}",
                        text,
                        len(text),
                        "positive" if rng.random() < 0.7 else "negative",
                        round(rng.uniform(0.5, 1.0), 4),
                        round(rng.lognormvariate(1.5, 0.5), 3),
                        "",
                        first_day + step * n,
                    )
                )
        cursor.execute(
            f"INSERT INTO {Feedback._meta.db_table} (prediction_id, label, correct, created_by_id, created_at, "
            f"summarized_at) SELECT id, label, true, %s, created_at, created_at FROM {PredictionLog._meta.db_table} "
            "WHERE model_id = %s AND id %% %s = 0",
            [user.pk, model.pk, feedback_every],
        )
        cursor.execute(f"ANALYZE {PredictionLog._meta.db_table}")
        cursor.execute(f"ANALYZE {Feedback._meta.db_table}")
    return time.perf_counter() - started


class _Writer(threading.Thread):
    """Writes a batch of prediction logs of the live model every interval,
    timing each write (the serving processes' writer thread, at rate)."""

    def __init__(self, model, version, *, batch: int, interval: float):
        super().__init__(daemon=True)
        self.model, self.version, self.batch, self.interval = model, version, batch, interval
        # (wall-clock start, milliseconds) per write
        self.latencies: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        from django.db import connection
        from django.utils import timezone

        from rollouts.prediction_log import _write_batch, new_entry

        try:
            while not self.stop.is_set():
                entries = [
                    new_entry(
                        model_id=self.model.pk,
                        version_id=self.version.pk,
                        rollout_id=None,
                        route="stable",
                        text="物流很快，包装完好。",
                        key_digest="",
                        label="positive",
                        confidence=0.9,
                        latency_ms=4.0,
                        created_at=timezone.now(),
                    )
                    for _ in range(self.batch)
                ]
                wall, started = time.time(), time.perf_counter()
                _write_batch(entries)
                self.latencies.append((wall, (time.perf_counter() - started) * 1000))
                self.stop.wait(self.interval)
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            connection.close()


def _p99(values: list[float]) -> float:
    from rollouts.aggregation import percentile

    return percentile(sorted(values), 0.99) or 0.0


def _between(latencies: list[tuple[float, float]], start: float, end: float) -> list[float]:
    return [ms for wall, ms in latencies if start <= wall <= end]


def _timed_writes(model, version, *, batch: int, interval: float, during=None, seconds: float = 0.0):
    writer = _Writer(model, version, batch=batch, interval=interval)
    writer.start()
    result = None
    try:
        if during is None:
            time.sleep(seconds)
        else:
            result = during()
    finally:
        writer.stop.set()
        writer.join()
    if writer.error is not None:
        raise writer.error
    return writer.latencies, result


def measure_retention(
    database_url: str,
    *,
    rows: int,
    days: int = 10,
    batch: int = 5000,
    pause_ms: int = 0,
    feedback_every: int = 50,
    write_seconds: float = 30.0,
    writer_batch: int = 50,
    writer_interval: float = 0.1,
) -> list[tuple[str, str]]:
    """Load `rows` expired prediction logs (COPY), then run their model's
    retention with the archive on, measuring concurrent log writes with and
    without it. Returns (label, value) rows to print."""
    _setup_django(database_url)
    from django.db import connection
    from django.utils import timezone

    from rollouts.models import PredictionLog

    now = timezone.now().astimezone(UTC)
    tag = uuid.uuid4().hex[:6]
    user, (model, version), (live, live_version) = _fixtures(tag)
    load_seconds = _load(model, version, user, rows=rows, days=days, feedback_every=feedback_every, now=now)

    baseline, _ = _timed_writes(live, live_version, batch=writer_batch, interval=writer_interval, seconds=write_seconds)
    with tempfile.TemporaryDirectory(prefix="retention-bench-") as store:
        # The retention runs in a process of its own, as in a Celery worker: the
        # writer thread here then competes with it for the database and the CPUs
        # the way a serving process does, not for this process's GIL.
        during, outcome = _timed_writes(
            live,
            live_version,
            batch=writer_batch,
            interval=writer_interval,
            during=lambda: _retention_in_child(model, now, store=store, batch=batch, pause_ms=pause_ms),
        )
    seconds, detail = outcome["seconds"], outcome["detail"]
    # Only the writes made while the child ran the retention (not while it started).
    during = _between(during, outcome["started_at"], outcome["ended_at"])
    baseline = [ms for _, ms in baseline]
    files = detail["files"]
    archive_bytes = sum(entry["bytes"] for entry in files)
    deleted = detail["rows_deleted"]
    left = PredictionLog.objects.filter(model=model).count()
    connection.close()
    if deleted != rows or left:
        raise RuntimeError(f"retention deleted {deleted:,} of {rows:,} rows; {left:,} left")
    p99_before, p99_during = _p99(baseline), _p99(during)
    return [
        ("expired rows loaded (COPY)", f"{rows:,} over {days} days, feedback on 1 in {feedback_every}"),
        ("load time", f"{load_seconds:.1f} s ({rows / load_seconds:,.0f} rows/s)"),
        ("retention run (archive + batched delete)", f"{seconds:.1f} s, batches of {batch:,}, pause {pause_ms} ms"),
        ("rows/s deleted", f"{deleted / seconds:,.0f}"),
        ("archive files", f"{len(files)} ({archive_bytes / 1e6:.1f} MB)"),
        ("archive bytes per million rows", f"{archive_bytes * 1e6 / rows / 1e6:.1f} MB"),
        (
            f"write p99 without retention ({writer_batch} rows every {writer_interval:g} s)",
            f"{p99_before:.1f} ms ({len(baseline)} writes)",
        ),
        ("write p99 while the retention runs", f"{p99_during:.1f} ms ({len(during)} writes)"),
        ("p99 ratio (target <= 1.5)", f"{p99_during / p99_before:.2f}"),
    ]


def _retention_in_child(model, now: datetime, *, store: str, batch: int, pause_ms: int) -> dict:
    """Run the model's retention (archive on, into `store`) in a child process; its timing and audit detail."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_SETTINGS_MODULE": "glassbox.settings",
        "DJANGO_DEBUG": "0",
        "ARTIFACT_STORAGE": "local",
        "ARTIFACT_ROOT": store,
        "GLASSBOX_PREDICTION_ARCHIVE": "on",
        "GLASSBOX_PREDICTION_RETENTION_BATCH": str(batch),
        "GLASSBOX_PREDICTION_RETENTION_PAUSE_MS": str(pause_ms),
    }
    child = subprocess.run(
        [sys.executable, __file__, "--retention-of", str(model.pk), "--now", now.isoformat()],
        env=env,
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        raise RuntimeError(f"the retention process failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def _child_main(model_id: int, now: str) -> None:
    import django

    django.setup()
    from registry.models import RegisteredModel
    from rollouts.retention import model_retention_apply

    model = RegisteredModel.objects.get(pk=model_id)
    started_at, started = time.time(), time.perf_counter()
    result = model_retention_apply(model=model, now=datetime.fromisoformat(now))
    seconds = time.perf_counter() - started
    if result.failure:
        sys.exit(f"retention failed: {result.failure}")
    print(
        json.dumps(
            {"seconds": seconds, "started_at": started_at, "ended_at": time.time(), "detail": result.event.detail}
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--pause-ms", type=int, default=0)
    parser.add_argument("--write-seconds", type=float, default=30.0)
    parser.add_argument("--writer-batch", type=int, default=50)
    parser.add_argument("--writer-interval", type=float, default=0.1)
    parser.add_argument("--retention-of", type=int, help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--now", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.retention_of:
        _child_main(args.retention_of, args.now)
        return
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a scratch PostgreSQL database (see the docstring).")
    _setup_django(url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(f"prediction retention, {args.rows:,} rows (load: {os.getloadavg()[0]:.2f} at start)", flush=True)
    results = measure_retention(
        url,
        rows=args.rows,
        days=args.days,
        batch=args.batch,
        pause_ms=args.pause_ms,
        write_seconds=args.write_seconds,
        writer_batch=args.writer_batch,
        writer_interval=args.writer_interval,
    )
    width = max(len(label) for label, _ in results)
    for label, value in results:
        print(f"  {label:<{width}}  {value}")
    print(f"  (load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())})")


if __name__ == "__main__":
    main()
