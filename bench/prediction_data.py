"""Prediction data at volume: the monitoring page (24 h and 7 d windows), one
rollout analysis and `/metrics` over a prediction log of 10 k, 1 M and 10 M
synthetic rows (3 models, 30 days), each figure with its ratio to the 10 k
one (target from issue 19: <= 2 at 10 M), next to the old raw-table page read
(binning the log rows on every read) measured in the same process.

Run it against a scratch PostgreSQL database, never one that matters (it
migrates it and fills it with millions of rows; `make bench-prediction-data`
creates and drops one around the run):

    createdb -h 127.0.0.1 -U postgres predictionbench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/predictionbench .venv/bin/python bench/prediction_data.py --sizes 10000,1000000
    dropdb -h 127.0.0.1 -U postgres predictionbench

The rows are loaded with COPY, size after size (each step adds rows over the
same 30 days, so the density grows), in time order as the log writer would
write them; their per-minute and per-half-hour aggregates are summed with the
same functions the writer uses (rollouts/aggregation.py) and stored per day.

Measured at each size (median of --repeat runs; the old raw path once above
1 M rows, it is slow):
- page 24h / page 7d: rollouts.selectors.model_monitoring for the model with
  two versions (a rollout in progress), drift included (reference profiles);
- analysis: rollouts.analysis.measure of the rollout over its last 5 minutes
  (per-call latencies stay on the raw table: the plan of that read is printed);
- /metrics: rollouts.metrics.render_metrics for the scraper (every model).

Retention: bench/prediction_retention.py's `measure_retention(database_url,
*, rows)` runs once after the largest size, on this database, over its own
model's expired rows (as many as the largest size, at most 1 M), and its rows
(name, value) are printed under the table.
"""

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "glassbox.settings")
# Query logging (DEBUG) would hold every statement in memory and skew timings.
os.environ.setdefault("DJANGO_DEBUG", "0")
os.environ.setdefault("GLASSBOX_DATA_DIR", str(ROOT / "var" / "bench"))

DAYS = 30
# The retention part loads expired rows of its own (COPY, then archive and delete): capped so it stays minutes long.
RETENTION_MAX_ROWS = 1_000_000
# Share of the rows per (model, version, route): model a runs a rollout whose
# candidate answers 10 % of its traffic.
TRAFFIC = [("bench-a", 1, "stable", 0.36), ("bench-a", 2, "candidate", 0.04), ("bench-b", 1, "stable", 0.35)]
TRAFFIC.append(("bench-c", 1, "stable", 0.25))
ANALYSIS_WINDOW = timedelta(minutes=5)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,1000000,10000000", help="log sizes, comma separated, ascending")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per read (median)")
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args()
    args.sizes = sorted(int(size) for size in args.sizes.split(","))
    return args


def setup_django():
    import django
    from django.conf import settings

    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a scratch PostgreSQL database (see the docstring).")
    django.setup()
    name = settings.DATABASES["default"]["NAME"]
    if name == "test" or name.startswith("test_"):
        sys.exit(f"Refusing to fill {name!r}: that is a test database. Use a scratch database such as predictionbench.")
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from rollouts.models import PredictionLog

    if PredictionLog.objects.exists():
        sys.exit(f"Database {name!r} already holds prediction logs; drop and create it again for a clean run.")
    return name


# --- synthetic world and texts ---------------------------------------------------------


def text_pool(rng, size: int = 3000) -> list[str]:
    """Review-like texts: CJK characters with a Zipf-like frequency, some
    punctuation and spaces, lengths around 40 (2 to 300)."""
    vocabulary = [chr(0x4E00 + n) for n in range(2500)] + list("，。！？ 0123456789abc")
    weights = [1.0 / (rank + 10) for rank in range(len(vocabulary))]
    lengths = [max(2, min(300, int(rng.lognormvariate(math.log(40), 0.6)))) for _ in range(size)]
    return ["".join(rng.choices(vocabulary, weights=weights, k=length)) for length in lengths]


def make_world(texts: list[str]) -> dict:
    from django.contrib.auth.models import Group, User
    from django.utils import timezone

    from governance.models import Team, TeamMembership
    from registry.models import Dataset, ModelVersion, RegisteredModel
    from rollouts.drift import profile_texts
    from rollouts.models import Rollout, VersionReference

    engineer = User.objects.create_user("bench-engineer", password=None)
    engineer.groups.add(Group.objects.get(name="engineer"))
    manager = User.objects.create_user("bench-manager", password=None)
    manager.groups.add(Group.objects.get(name="manager"))
    team, _ = Team.objects.get_or_create(name="bench")
    TeamMembership.objects.get_or_create(team=team, user=engineer, defaults={"role": "maintainer"})
    dataset = Dataset.objects.create(
        name="bench-reference",
        format=Dataset.Format.CSV,
        sha256="0" * 64,
        size=1,
        row_count=len(texts),
        labels=["negative", "positive"],
        storage_key="bench",
        created_by=engineer,
    )
    # The reference: the same text pool, so live traffic is in-domain. No
    # unknown-rate signal (the versions have no artifact to ask).
    profile = profile_texts(texts[:2000])
    models, versions = {}, {}
    for name, number, _, _ in TRAFFIC:
        if name not in models:
            models[name] = RegisteredModel.objects.create(name=name, risk_tier="high", created_by=engineer, team=team)
        version = ModelVersion.objects.create(
            model=models[name],
            number=number,
            status=ModelVersion.Status.DEPLOYED if number == 1 else ModelVersion.Status.APPROVED,
            flavor=ModelVersion.Flavor.SKLEARN,
            labels=["negative", "positive"],
            artifact_sha256=f"{number:064d}",
            artifact_size=1,
            artifact_filename="bench.skops",
            artifact_key="bench",
            artifact_format="zip",
            created_by=engineer,
        )
        VersionReference.objects.create(version=version, dataset=dataset, profile=profile)
        versions[(name, number)] = version
    now = timezone.now()
    rollout = Rollout.objects.create(
        model=models["bench-a"],
        candidate=versions[("bench-a", 2)],
        stable=versions[("bench-a", 1)],
        status=Rollout.Status.PROGRESSING,
        steps=[{"weight": 10, "shadow": False, "bake_seconds": 3600}],
        step_started_at=now - timedelta(hours=1),
        analysis_interval_seconds=int(ANALYSIS_WINDOW.total_seconds()),
        created_by=engineer,
    )
    # A rollout an hour old: its fallback baseline ("since the rollout began") is an hour of rows.
    Rollout.objects.filter(pk=rollout.pk).update(created_at=now - timedelta(hours=1))
    rollout.refresh_from_db()
    return {"models": models, "versions": versions, "rollout": rollout, "manager": manager, "end": now}


# --- loading ---------------------------------------------------------------------------


def load_rows(world: dict, texts: list[str], count: int, rng) -> float:
    """COPY `count` more rows over the 30 days before world["end"], day by
    day in time order, and add their aggregates. Returns seconds taken."""
    from django.db import connection

    from rollouts import aggregation

    started = time.perf_counter()
    end = world["end"]
    begin = end - timedelta(days=DAYS)
    lanes = [(world["versions"][(name, number)], route) for name, number, route, _ in TRAFFIC]
    shares = [share for *_, share in TRAFFIC]
    rollout_id = world["rollout"].pk
    text_weights = [1.0 / (rank + 5) for rank in range(len(texts))]
    columns = (
        "prediction_id, model_id, version_id, rollout_id, shadow, route, key_hash, input_text, input_length,"
        " label, confidence, latency_ms, error, created_at"
    )
    per_day = [count // DAYS + (1 if day < count % DAYS else 0) for day in range(DAYS)]
    raw = connection.connection  # psycopg 3: COPY straight from Python rows
    for day, rows_today in enumerate(per_day):
        day_start = begin + timedelta(days=day)
        offsets = sorted(rng.random() * 86400 for _ in range(rows_today))
        lane_picks = rng.choices(range(len(lanes)), weights=shares, k=rows_today)
        text_picks = rng.choices(range(len(texts)), weights=text_weights, k=rows_today)
        minutes: dict = {}
        with raw.cursor() as cursor, cursor.copy(f"COPY rollouts_predictionlog ({columns}) FROM STDIN") as copy:
            for offset, lane, text_index in zip(offsets, lane_picks, text_picks):
                version, route = lanes[lane]
                created_at = day_start + timedelta(seconds=offset)
                text = texts[text_index]
                error = "RuntimeError: synthetic" if rng.random() < 0.01 else ""
                label = "" if error else ("positive" if text_index % 3 else "negative")
                confidence = None if error else 0.5 + rng.random() / 2
                latency = rng.lognormvariate(math.log(8.0 if version.number == 1 else 9.0), 0.5)
                copy.write_row(
                    (
                        uuid.uuid4(),
                        version.model_id,
                        version.pk,
                        rollout_id if route == "candidate" else None,
                        False,
                        route,
                        "",
                        text,
                        len(text),
                        label,
                        confidence,
                        latency,
                        error,
                        created_at,
                    )
                )
                key = (version.pk, aggregation.MINUTE, aggregation.period_start(created_at, aggregation.MINUTE))
                tally = minutes.get(key)
                if tally is None:
                    tally = minutes[key] = aggregation.new_tally()
                aggregation.add_row(tally, latency, error, label, confidence, text)
        raw.commit()
        for tally in minutes.values():
            aggregation.finish_characters(tally)
        store_tallies({**minutes, **aggregation._spread_to_half_hours(minutes)})
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE rollouts_predictionlog")
        cursor.execute("VACUUM ANALYZE rollouts_predictionaggregate")
    return time.perf_counter() - started


def store_tallies(tallies: dict) -> None:
    """Add a day's tallies to the stored rows in bulk (what apply_tallies
    does per batch, without a row lock per key: nothing else writes here)."""
    from django.db import connection, transaction
    from psycopg.types.json import Jsonb

    from rollouts import aggregation
    from rollouts.models import PredictionAggregate

    with transaction.atomic():
        for version_id in sorted({key[0] for key in tallies}):
            mine = {key: tally for key, tally in tallies.items() if key[0] == version_id}
            low, high = min(key[2] for key in mine), max(key[2] for key in mine)
            stored = PredictionAggregate.objects.filter(version_id=version_id, start__gte=low, start__lte=high)
            for values in stored.values("span_seconds", "start", *aggregation.STORED_FIELDS):
                key = (version_id, values["span_seconds"], values["start"])
                before = aggregation.tally_of_row(values)
                mine[key] = aggregation.merge(before, mine[key]) if key in mine else before
            stored.delete()
            columns = ["version_id", "span_seconds", "start", *aggregation.STORED_FIELDS]
            json_fields = {"latency_buckets", "confidence_buckets", "length_bins", "labels", "characters"}
            with (
                connection.cursor() as cursor,
                cursor.cursor.copy(
                    f"COPY {PredictionAggregate._meta.db_table} ({', '.join(columns)}) FROM STDIN"
                ) as copy,
            ):
                for (_, span, start), tally in sorted(mine.items()):
                    aggregation.bound_characters(tally, aggregation.SKETCH_CHARACTERS[span])
                    stored_values = aggregation._stored(tally)
                    copy.write_row(
                        [version_id, span, start]
                        + [
                            Jsonb(stored_values[field]) if field in json_fields else stored_values[field]
                            for field in aggregation.STORED_FIELDS
                        ]
                    )


# --- measuring -------------------------------------------------------------------------


def timed(function, repeat: int) -> float:
    """Median milliseconds of `repeat` calls (one untimed warm-up first)."""
    function()
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def old_page_read(model, window: str, now) -> int:
    """The monitoring page's reads as they were before the aggregates: the
    versions with traffic from the raw rows, each version's window and time
    series binned from the raw rows, drift on the newest 2,000 (window) and
    200 (per bucket) texts."""
    from django.db.models import Q

    from registry.models import ModelVersion
    from rollouts import aggregation, selectors
    from rollouts.drift import measure_drift
    from rollouts.models import PredictionLog

    _, since, until, bucket = selectors.window_bounds(window, now=now)
    with_traffic = set(
        PredictionLog.objects.filter(model=model, created_at__gte=since, created_at__lt=until)
        .order_by()
        .values_list("version_id", flat=True)
        .distinct()
    )
    requests = 0
    for version in model.versions.filter(Q(pk__in=with_traffic) | Q(status=ModelVersion.Status.DEPLOYED)):
        reference = selectors.DriftReference(version)
        whole = aggregation.raw_buckets(version.pk, since, until, until - since, 2000).get(0)
        if whole:
            requests += whole["requests"]
            measure_drift(reference.profile, whole["texts"])
        for entry in aggregation.raw_buckets(version.pk, since, until, timedelta(seconds=bucket), 200).values():
            if entry["texts"]:
                measure_drift(reference.profile, entry["texts"])
    return requests


def data_reads(model, window: str, now) -> None:
    """What the page reads from the database, without the drift arithmetic:
    each version's time series (its window totals are their sum) from the aggregates."""
    from rollouts import aggregation, selectors

    _, since, until, bucket = selectors.window_bounds(window, now=now)
    for version in model.versions.all():
        aggregation.aggregate_buckets(version.pk, since, until, timedelta(seconds=bucket))


def analysis_plan(world: dict, now) -> str:
    """PostgreSQL's plan for the analysis' per-call latency read (raw rows)."""
    from rollouts.models import PredictionLog

    stable = world["versions"][("bench-a", 1)]
    rows = PredictionLog.objects.filter(
        version=stable, created_at__gt=now - ANALYSIS_WINDOW, created_at__lte=now, route__in=["stable"], error=""
    )
    return rows.order_by("-created_at").values_list("created_at", "latency_ms").distinct()[:5000].explain()


def measure(world: dict, size: int, repeat: int) -> dict:
    from django.db import connection
    from django.utils import timezone

    from rollouts import aggregation, analysis, selectors
    from rollouts.drift import measure_drift
    from rollouts.metrics import render_metrics

    model = world["models"]["bench-a"]
    manager, rollout = world["manager"], world["rollout"]
    # Pages as of now; the analysis over the last 5 minutes of the loaded traffic.
    now, end = timezone.now(), world["end"]
    page, drift = {}, {}
    for window in ("24h", "7d"):
        found = selectors.model_monitoring(user=manager, model=model, window=window, now=now)
        page[window] = sum(panel["totals"]["requests"] for panel in found["panels"])
        # The stable version's window drift from the sketches, and as before from the newest 2,000 texts.
        panel = next(panel for panel in found["panels"] if panel["version"].number == 1)
        _, since, until, _ = selectors.window_bounds(window, now=now)
        texts = aggregation.raw_buckets(panel["version"].pk, since, until, until - since, 2000)[0]["texts"]
        drift[window] = (panel["totals"]["drift"], measure_drift(panel["reference"].profile, texts))
    # The old path takes seconds per read at volume: once above 1 M rows.
    old_repeat = repeat if size <= 1_000_000 else 1
    figures = {
        "page 24h": timed(lambda: selectors.model_monitoring(user=manager, model=model, window="24h", now=now), repeat),
        "page 7d": timed(lambda: selectors.model_monitoring(user=manager, model=model, window="7d", now=now), repeat),
        "  its data reads 24h": timed(lambda: data_reads(model, "24h", now), repeat),
        "  its data reads 7d": timed(lambda: data_reads(model, "7d", now), repeat),
        "old raw page 24h": timed(lambda: old_page_read(model, "24h", now), old_repeat),
        "old raw page 7d": timed(lambda: old_page_read(model, "7d", now), old_repeat),
        "analysis (5 min)": timed(lambda: analysis.measure(rollout, since=end - ANALYSIS_WINDOW, until=end), repeat),
        "/metrics": timed(lambda: render_metrics(None), repeat),
    }
    # Same numbers both ways: the window's requests from aggregates and from raw rows.
    for window in ("24h", "7d"):
        assert page[window] == old_page_read(model, window, now), f"{window}: aggregates and raw rows disagree"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_total_relation_size('rollouts_predictionlog'), pg_total_relation_size('rollouts_predictionaggregate'),"
            " (SELECT count(*) FROM rollouts_predictionaggregate)"
        )
        log_bytes, aggregate_bytes, aggregate_rows = cursor.fetchone()
    plan = analysis_plan(world, end)
    return {
        "figures": figures,
        "requests": page,
        "drift": drift,
        "log_mb": log_bytes / 2**20,
        "aggregate_mb": aggregate_bytes / 2**20,
        "aggregate_rows": aggregate_rows,
        "plan": plan,
    }


def retention_rows(database_url: str, size: int, world: dict) -> list | None:
    """bench/prediction_retention.py's figures: retention rows/s, p99 of
    concurrent log writes with and without it, archive size per million rows
    ((name, value) rows). `world` is unused: it loads expired rows of its own."""
    path = Path(__file__).with_name("prediction_retention.py")
    if not path.exists():
        return None
    import importlib.util

    spec = importlib.util.spec_from_file_location("prediction_retention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "measure_retention"):
        return None
    return list(module.measure_retention(database_url, rows=min(size, RETENTION_MAX_ROWS)))


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "uptime unavailable"


def main():
    import logging
    import random

    args = parse_args()
    database = setup_django()
    # An artifact-less version cannot say which characters it knows: drift leaves that signal out, quietly.
    logging.getLogger("rollouts.selectors").setLevel(logging.ERROR)
    rng = random.Random(args.seed)
    texts = text_pool(rng)
    world = make_world(texts)
    print(f"database {database}; sizes {', '.join(f'{s:,}' for s in args.sizes)}; median of {args.repeat} runs")
    print(f"load before: {uptime()}")
    results = {}
    loaded = 0
    for size in args.sizes:
        seconds = load_rows(world, texts, size - loaded, rng)
        loaded = size
        result = measure(world, size, args.repeat)
        result["load_s"] = seconds
        results[size] = result
        print(
            f"{size:>12,} rows: loaded in {seconds:.0f} s; log table {result['log_mb']:.0f} MiB, aggregates "
            f"{result['aggregate_rows']:,} rows {result['aggregate_mb']:.0f} MiB; page requests 24h "
            f"{result['requests']['24h']:,}, 7d {result['requests']['7d']:,} (aggregates = raw rows); {uptime()}",
            flush=True,
        )
        for window, (sketched, sampled) in result["drift"].items():
            print(
                f"    drift of the stable version, {window}: from the sketches (all {sketched['texts']:,} texts) "
                f"JS {sketched['character_js_distance']:.4f} excess {sketched['character_js_excess']:.4f}; "
                f"old way (newest {sampled['texts']:,} texts) JS {sampled['character_js_distance']:.4f} "
                f"excess {sampled['character_js_excess']:.4f}"
            )
        plan = result["plan"]
        if "predlog_version_time" in plan:
            read = "index range scan on (version, created_at)"
        elif "Index" in plan:
            read = "index range scan on created_at alone, version filtered"
        else:
            read = "NO INDEX"
        print(f"    analysis per-call read: {read}")
        print("      " + "\n      ".join(line.strip() for line in plan.splitlines() if "Scan" in line), flush=True)
    base = results[args.sizes[0]]["figures"]
    print()
    print("| read (ms, ratio to the smallest size) | " + " | ".join(f"{size:,} rows" for size in args.sizes) + " |")
    print("|---|" + "---|" * len(args.sizes))
    for name in base:
        cells = [
            f"{results[s]['figures'][name]:.1f} ({results[s]['figures'][name] / base[name]:.2f}x)" for s in args.sizes
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"load after: {uptime()}")
    rows = retention_rows(os.environ["DATABASE_URL"], args.sizes[-1], world)
    if rows is None:
        print("retention: bench/prediction_retention.py with measure_retention() not present; not measured")
    else:
        for name, value in rows:
            print(f"retention | {name} | {value}")


if __name__ == "__main__":
    main()
