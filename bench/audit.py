"""Audit trail benchmark: appends through the service path, a 1,000,000-event
trail, chain verification, and the audit page and API at the first and the
last page, each next to a baseline measured in the same process.

Run it against a scratch PostgreSQL database, never one that matters (it
migrates it and fills it with a million events the triggers then refuse to
delete; dropping the database is the way to get rid of them):

    createdb -h 127.0.0.1 -U postgres auditbench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/auditbench .venv/bin/python bench/audit.py
    dropdb -h 127.0.0.1 -U postgres auditbench

Options: --events (trail size, default 1,000,000), --append (events appended
through record_event, default 5,000), --threads (concurrent appenders, 4),
--repeat (timed requests per page, 25), --workers (verify processes, one per CPU).

Targets from the issue: verify >= 200,000 events/s; the last page as fast as
the first (ratio <= 1.5). The baselines: verify with one process, and a
naive OFFSET query for the last page on the same data.
"""

import argparse
import os
import random
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "glassbox.settings")
# Query logging (DEBUG) would hold every statement in memory and skew timings.
os.environ.setdefault("DJANGO_DEBUG", "0")
os.environ.setdefault("GLASSBOX_DATA_DIR", str(ROOT / "var" / "bench"))

USER_AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
    "curl/8.5.0",
    "python-requests/2.32",
    "Glassbox-CLI/1.0",
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--append", type=int, default=5_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=25)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return parser.parse_args()


def setup_django():
    import django
    from django.conf import settings

    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a scratch PostgreSQL database (see the docstring).")
    django.setup()
    name = settings.DATABASES["default"]["NAME"]
    if name == "test" or name.startswith("test_"):
        sys.exit(f"Refusing to fill {name!r}: that is a test database. Use a scratch database such as auditbench.")
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from governance.models import AuditEvent

    if AuditEvent.objects.exists():
        sys.exit(f"Database {name!r} already holds audit events; drop and create it again for a clean run.")
    return name


def users():
    from django.contrib.auth.models import Group, User

    engineer = User.objects.create_user("bench-engineer", password="bench-password-123")
    engineer.groups.add(Group.objects.get(name="engineer"))
    manager = User.objects.create_user("bench-manager", password="bench-password-123")
    manager.groups.add(Group.objects.get(name="manager"))
    return engineer, manager


# --- 1. appends through the service path ---------------------------------------------------


def bench_append(engineer, count: int, threads: int) -> dict:
    from django.db import connection

    from governance.audit import record_event

    def append(n: int, prefix: str) -> None:
        for i in range(n):
            record_event(
                actor=engineer,
                action="bench.append",
                object_type="registry.modelversion",
                object_id=i,
                object_label=f"{prefix} {i}",
                model_name="bench-model",
                version_number=1 + i % 9,
                changes={"before": {"status": "registered"}, "after": {"status": "in_review"}},
                detail={"n": i},
            )

    started = time.perf_counter()
    append(count, "serial")
    serial = count / (time.perf_counter() - started)

    per_thread = count // threads

    def worker(n: int) -> None:
        from django.db import connection as thread_connection

        try:
            append(per_thread, f"thread {n}")
        finally:
            thread_connection.close()

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    parallel = per_thread * threads / (time.perf_counter() - started)

    # Baseline: what this database does with one plain INSERT per transaction
    # (no chain, no lock) - the commit's flush to disk, which every append pays.
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_plain_insert (id bigserial PRIMARY KEY, label text)")
        started = time.perf_counter()
        for i in range(min(count, 2000)):
            cursor.execute("INSERT INTO bench_plain_insert (label) VALUES (%s)", [f"plain {i}"])
        plain = min(count, 2000) / (time.perf_counter() - started)
        cursor.execute("DROP TABLE bench_plain_insert")
    connection.close()
    return {"serial": serial, "threads": parallel, "plain": plain}


# --- 2. a million-event trail -------------------------------------------------------------


def synthetic_events(count: int, start: datetime, rng: random.Random):
    """Events shaped like the platform's own: uploads with unique digests,
    status moves, decisions with comments, logins, refusals."""
    when = start
    for i in range(count):
        when += timedelta(microseconds=rng.randint(1, 60_000_000))
        actor = rng.randint(1, 500)
        model = f"model-{rng.randint(1, 200)}"
        version = rng.randint(1, 20)
        kind = rng.random()
        base = {
            "created_at": when,
            "actor_id": actor,
            "actor_username": f"user{actor}",
            "outcome": "ok",
            "object_type": "registry.modelversion",
            "object_id": str(i),
            "object_label": f"{model} v{version}",
            "model_name": model,
            "version_number": version,
            "changes": {},
            "detail": {},
            "request_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "user_agent": rng.choice(USER_AGENTS),
            "ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        }
        if kind < 0.25:
            sha = f"{rng.getrandbits(256):064x}"
            base.update(
                action="version.create",
                changes={"after": {"status": "registered", "sha256": sha, "flavor": "sklearn"}},
                detail={"size": rng.randint(10_000, 2_000_000_000), "labels": ["negative", "positive"]},
            )
        elif kind < 0.45:
            moved = {"before": {"status": "registered"}, "after": {"status": "in_review"}}
            base.update(action="version.submit", changes=moved)
        elif kind < 0.6:
            verdict = rng.choice(["approve", "reject"])
            base.update(
                action=f"review.{verdict}",
                object_type="governance.decision",
                detail={
                    "comment": f"checked card and metrics #{rng.getrandbits(32):x}",
                    "approvals": rng.randint(0, 2),
                },
            )
        elif kind < 0.8:
            base.update(
                action="auth.login",
                object_type="auth.user",
                object_label=base["actor_username"],
                model_name="",
                version_number=None,
                detail={"path": "/login/"},
            )
        elif kind < 0.97:
            base.update(
                action="explanation.request",
                object_type="explanations.explanationreport",
                detail={"method": rng.choice(["shap", "lime", "pfi"]), "texts": rng.randint(1, 500)},
            )
        else:
            base.update(action="version.create", outcome="denied", detail={"reason": "not permitted"})
        yield base


def bench_load(total: int) -> dict:
    from django.db import connection, transaction

    from governance.audit import HASHED_FIELDS, canonical_json, chain_head, chained_events, lock_chain

    copy_columns = (*HASHED_FIELDS, "prev_hash", "hash")
    from governance.models import AuditEvent

    count = max(0, total - AuditEvent.objects.count())
    # Two years of history, ending well before today's appends (time order is id order).
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rng = random.Random(20261127)
    started = time.perf_counter()
    with transaction.atomic():
        lock_chain()  # record_event waits; nothing forks the chain while it loads
        events = chained_events(synthetic_events(count, start, rng), prev_hash=chain_head())
        with connection.cursor() as cursor:
            with cursor.cursor.copy(f"COPY governance_auditevent ({', '.join(copy_columns)}) FROM STDIN") as copy:
                for event in events:
                    copy.write_row(
                        [
                            canonical_json(getattr(event, name))
                            if name in ("changes", "detail")
                            else getattr(event, name)
                            for name in copy_columns
                        ]
                    )
    elapsed = time.perf_counter() - started
    return {"loaded": count, "seconds": elapsed, "rate": count / elapsed if elapsed else 0.0}


# --- 3. verification ----------------------------------------------------------------------


def bench_verify(workers: int, runs: int = 3) -> dict:
    """Median of `runs` passes (and their range), with `workers` processes and with one."""
    from governance.audit_integrity import verify_chain

    results = {}
    for label, processes in (("verify", workers), ("verify_1", 1)):
        rates = []
        for _ in range(runs):
            started = time.perf_counter()
            checked, broken = verify_chain(workers=processes)
            elapsed = time.perf_counter() - started
            if broken is not None:
                sys.exit(f"the benchmark's own chain is broken at #{broken.event_id}: {broken.reason}")
            rates.append(checked / elapsed)
        results[label] = {"checked": checked, "rate": statistics.median(rates), "low": min(rates), "high": max(rates)}
    return results


def settle_database() -> None:
    """Fresh statistics, and the load's dirty pages written out now rather
    than by the checkpointer in the middle of the timings."""
    from django.db import DatabaseError, connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE governance_auditevent")
        try:
            cursor.execute("CHECKPOINT")
        except DatabaseError:  # not a superuser: the timings just get noisier
            pass


def bench_checkpoint(tmp: Path) -> dict:
    import secrets

    from django.conf import settings
    from django.core.management import call_command

    settings.AUDIT_CHECKPOINT_KEY = secrets.token_hex(32)
    path = tmp / f"checkpoint-{uuid.uuid4().hex}.json"
    call_command("audit_checkpoint", "--output", str(path), stderr=open(os.devnull, "w"))
    started = time.perf_counter()
    call_command("audit_verify", "--checkpoint", str(path), stdout=open(os.devnull, "w"))
    elapsed = time.perf_counter() - started
    path.unlink()
    return {"seconds": elapsed}


# --- 4. pages and API ----------------------------------------------------------------------


def timed_pair(first, last, repeat: int) -> tuple[float, float]:
    """Median milliseconds of two calls, sampled alternately so that whatever
    else the machine does in the meantime weighs on both alike."""
    first(), last()  # warm caches and connections once
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, times in ((first, samples[0]), (last, samples[1])):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return statistics.median(samples[0]) * 1000, statistics.median(samples[1]) * 1000


def bench_pages(manager, repeat: int) -> list[tuple[str, float, float]]:
    from django.test import Client
    from rest_framework.test import APIClient

    from governance.accounts import token_create
    from governance.models import AuditEvent

    page = Client()
    page.force_login(manager)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_create(actor=manager, name='bench')[1]}")

    def get(client, url):
        def fetch():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            return response

        return fetch

    logins = AuditEvent.objects.filter(action="auth.login", actor_username__startswith="user")
    busiest_actor = logins.values_list("actor_username", flat=True).first()
    model, version = (
        AuditEvent.objects.filter(action="version.submit").values_list("model_name", "version_number").first()
    )
    middle_id = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() // 2
    middle = AuditEvent.objects.filter(id__gte=middle_id).order_by("id").values_list("created_at", flat=True).first()
    day = middle.date().isoformat()
    rows = []
    for label, filters in [
        ("no filter", ""),
        (f"actor={busiest_actor}", f"actor={busiest_actor}&"),
        ("action=review.approve", "action=review.approve&"),
        (f"model={model}&version={version}", f"model={model}&version={version}&"),
        ("outcome=denied", "outcome=denied&"),
        (f"from=to={day}", f"from={day}&to={day}&"),
    ]:
        for kind, client, base in (("page", page, "/audit/"), ("API", api, "/api/v1/audit/events/")):
            first, last = timed_pair(get(client, f"{base}?{filters}"), get(client, f"{base}?{filters}after=0"), repeat)
            rows.append((f"{kind} {label}", first, last))
    return rows


def bench_offset_baseline(repeat: int) -> tuple[float, float]:
    from governance.models import AuditEvent

    total = AuditEvent.objects.count()
    return timed_pair(
        lambda: list(AuditEvent.objects.order_by("-id")[0:50]),
        lambda: list(AuditEvent.objects.order_by("-id")[total - 50 : total]),
        repeat,
    )


def explain_pages() -> list[str]:
    from django.db import connection

    from governance.models import AuditEvent

    lines = []
    total = AuditEvent.objects.count()
    for label, queryset in (
        ("first page", AuditEvent.objects.order_by("-id")[:51]),
        ("last page", AuditEvent.objects.filter(id__gt=0).order_by("id")[:51]),
        ("actor, last page", AuditEvent.objects.filter(actor_username="user7", id__gt=0).order_by("id")[:51]),
        ("OFFSET baseline, last page", AuditEvent.objects.order_by("-id")[total - 50 : total]),
    ):
        sql, params = queryset.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql, params)
            plan = [row[0] for row in cursor.fetchall()]
        lines.append(f"  {label}:")
        lines.extend(f"    {line}" for line in plan)
    return lines


def bench_export(manager) -> dict:
    import psutil
    from django.test import Client

    client = Client()
    client.force_login(manager)
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    response = client.get("/audit/export.csv")
    size = lines = 0
    for chunk in response.streaming_content:
        size += len(chunk)
        lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    return {"rows": lines - 1, "seconds": elapsed, "mib": size / 2**20, "rss_growth_mib": (peak[0] - baseline) / 2**20}


def main():
    args = parse_args()
    name = setup_django()
    from django.db import connection

    from governance.models import AuditEvent

    print(
        f"database {name} (PostgreSQL {connection.cursor().connection.info.server_version}), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    engineer, manager = users()

    history = max(0, args.events - 2 * args.append)
    print(
        f"1. loading {history:,} events of history (hashes computed as record_event would, then COPY) ...", flush=True
    )
    load = bench_load(history)
    settle_database()
    print(
        f"2. appending 2 x {args.append:,} events through record_event (1 thread, then {args.threads}) ...", flush=True
    )
    append = bench_append(engineer, args.append, args.threads)
    settle_database()
    total = AuditEvent.objects.count()
    print(f"3. verifying {total:,} events ...", flush=True)
    verify = bench_verify(args.workers)
    checkpoint = bench_checkpoint(Path(os.environ["GLASSBOX_DATA_DIR"]))
    print("4. timing pages and API (median of each) ...", flush=True)
    pages = bench_pages(manager, args.repeat)
    offset_first, offset_last = bench_offset_baseline(args.repeat)
    plans = explain_pages()
    print("5. streaming the whole trail as CSV ...", flush=True)
    export = bench_export(manager)

    print()
    print(f"Summary ({total:,} events; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"  {'measure':<48} {'value':>16}")
    print(f"  {'append, record_event, 1 thread':<48} {append['serial']:>12,.0f} ev/s")
    print(f"  {f'append, record_event, {args.threads} threads':<48} {append['threads']:>12,.0f} ev/s")
    print(f"  {'baseline: plain INSERT, one per transaction':<48} {append['plain']:>12,.0f} rows/s")
    print(f"  {'bulk load (chained_events + COPY)':<48} {load['rate']:>12,.0f} ev/s")
    for label, result, note in (
        (f"verify, {args.workers} worker processes", verify["verify"], "   (target >= 200,000)"),
        ("verify, 1 process (baseline)", verify["verify_1"], ""),
    ):
        spread = f"  [{result['low']:,.0f} - {result['high']:,.0f}, median of 3]"
        print(f"  {label:<48} {result['rate']:>12,.0f} ev/s{spread}{note}")
    print(f"  {'verify with a checkpoint (wall)':<48} {checkpoint['seconds']:>14.2f} s")
    print(
        f"  {'CSV export of the whole trail':<48} {export['rows'] / export['seconds']:>12,.0f} ev/s   "
        f"({export['mib']:,.0f} MiB, RSS growth {export['rss_growth_mib']:.1f} MiB)"
    )
    print()
    print(f"  {'first vs last page (median ms)':<48} {'first':>8} {'last':>8} {'ratio':>7}")
    for label, first, last in pages:
        print(f"  {label:<48} {first:>8.1f} {last:>8.1f} {last / first:>7.2f}")
    offset_ratio = offset_last / offset_first
    print(
        f"  {'baseline: ORM query, OFFSET pagination':<48} {offset_first:>8.1f} {offset_last:>8.1f} {offset_ratio:>7.2f}"
    )
    print()
    print("Query plans (EXPLAIN ANALYZE):")
    print("\n".join(plans))


if __name__ == "__main__":
    main()
