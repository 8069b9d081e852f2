"""Feedback at rate: 32 concurrent senders, one label per call, for a
bounded time against a real server process (gunicorn on loopback, on
PostgreSQL), then the checks that matter more than the rate.

    make bench-feedback          # creates and drops the scratch database feedbackbench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/feedbackbench .venv/bin/python bench/feedback_load.py \
        [--seconds 60] [--senders 32] [--baseline-ref a519b7d]

What is measured, per run:
- rows/s: feedback rows acknowledged (201) per second of the run, each call
  one label (the worst case for per-call overhead), every sender its own
  user and keep-alive connection, each prediction sent once;
- lost: acknowledged but not stored; duplicated: stored more than once or
  acknowledged twice (the database's one-feedback-per-prediction constraint
  should make it impossible, and the bench checks rather than trusts);
- errors: any answer but 201;
- audit: after the server stopped, `feedback_summarize` folds the rows
  into per-sender summaries: their items must add up to the rows stored, no
  row may be left unsummarized, and the whole chain must verify.

`--baseline-ref REF` also runs the code of a git revision (extracted with
`git archive`) on the same database, before the current code, and prints
the ratio of the two rates: at REF each call appended a hash-chained audit
event under the chain's lock. Its rows are marked summarized afterwards, as
migration rollouts 0002 does for rows stored before summaries existed.
"""

import argparse
import collections
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "glassbox.settings")
os.environ.setdefault("DJANGO_DEBUG", "0")
os.environ.setdefault("GLASSBOX_DATA_DIR", str(ROOT / "var" / "bench-feedback"))
MODEL = "bench-feedback"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each run (at most 60)")
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--predictions", type=int, default=150_000, help="logged predictions per run to grade")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=16, help="threads per gunicorn worker (gthread)")
    parser.add_argument("--baseline-ref", default="", help="git revision to run first for the before figure")
    args = parser.parse_args()
    args.seconds = min(args.seconds, 60.0)
    return args


def setup_django() -> str:
    import django
    from django.conf import settings

    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a scratch PostgreSQL database (see the docstring).")
    django.setup()
    name = settings.DATABASES["default"]["NAME"]
    if name == "test" or name.startswith("test_"):
        sys.exit(f"Refusing to use {name!r}: that is a test database. Use a scratch database such as feedbackbench.")
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from registry.models import RegisteredModel

    if RegisteredModel.objects.filter(name=MODEL).exists():
        sys.exit(f"Database {name!r} already holds {MODEL}; drop and create it again for a clean run.")
    return name


class NoDelayConnection(http.client.HTTPConnection):
    # Headers and body go in two writes; without TCP_NODELAY the second waits for a delayed ACK.
    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fixtures(senders: int):
    """The model, one deployed version (a row: feedback never loads it) and
    one engineer per sender with an API token."""
    from django.contrib.auth.models import Group, User

    from governance.accounts import token_create
    from registry.models import ModelVersion, RegisteredModel

    engineers = Group.objects.get(name="engineer")
    users = []
    for n in range(senders):
        user = User.objects.create_user(f"bench-sender{n:02d}", password=None)
        user.groups.add(engineers)
        users.append(user)
    from governance.models import Team, TeamMembership

    team, _ = Team.objects.get_or_create(name="bench")  # every model belongs to a team; its senders are engineers of it
    for user in users:
        TeamMembership.objects.get_or_create(team=team, user=user, defaults={"role": "engineer"})
    model = RegisteredModel.objects.create(name=MODEL, risk_tier="low", created_by=users[0], team=team)
    version = ModelVersion.objects.create(
        model=model,
        number=1,
        status=ModelVersion.Status.DEPLOYED,
        flavor=ModelVersion.Flavor.SKLEARN,
        labels=["negative", "positive"],
        artifact_sha256="0" * 64,
        artifact_size=1,
        artifact_filename="bench.skops",
        artifact_key="bench",
        artifact_format="zip",
        created_by=users[0],
    )
    tokens = [token_create(actor=user, name="bench")[1] for user in users]
    return model, version, users, tokens


def log_predictions(model, version, count: int) -> collections.deque:
    from django.utils import timezone

    from rollouts.models import PredictionLog

    ids = [uuid.uuid4() for _ in range(count)]
    now = timezone.now()
    batch = 5000
    for start in range(0, count, batch):
        PredictionLog.objects.bulk_create(
            [
                PredictionLog(
                    prediction_id=pid,
                    model=model,
                    version=version,
                    route="stable",
                    label="positive",
                    confidence=0.9,
                    latency_ms=1.0,
                    created_at=now,
                )
                for pid in ids[start : start + batch]
            ]
        )
    return collections.deque(str(pid) for pid in ids)


def start_server(code_dir: Path, args) -> subprocess.Popen:
    port = free_port()
    env = {**os.environ, "GLASSBOX_LOG_LEVEL": "WARNING", "PYTHONPATH": str(code_dir)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "glassbox.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(args.workers),
            "-k",
            "gthread",
            "--threads",
            str(args.threads),
            "--keep-alive",
            "30",
            "--timeout",
            "120",
            "--log-level",
            "warning",
        ],
        cwd=code_dir,
        env=env,
    )
    server.port = port
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                raise
            time.sleep(0.2)
    while len(psutil.Process(server.pid).children()) < args.workers:
        time.sleep(0.1)
    return server


def send_for(port: int, tokens: list[str], pool: collections.deque, seconds: float) -> dict:
    """Every sender posts one label per call until time is up (or the pool
    of predictions runs dry). Returns what each call was answered."""
    answers: list[list[tuple[str, int]]] = [[] for _ in tokens]
    barrier = threading.Barrier(len(tokens) + 1)
    stop_at = [0.0]

    def sender(n: int) -> None:
        conn = NoDelayConnection("127.0.0.1", port, timeout=120)
        headers = {"Authorization": f"Token {tokens[n]}", "Content-Type": "application/json"}
        path = f"/api/v1/models/{MODEL}/feedback/"
        barrier.wait()
        try:
            while time.perf_counter() < stop_at[0]:
                try:
                    prediction_id = pool.popleft()
                except IndexError:
                    return
                body = json.dumps({"items": [{"prediction_id": prediction_id, "label": "positive"}]})
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    answers[n].append((prediction_id, response.status))
                except (OSError, http.client.HTTPException):
                    answers[n].append((prediction_id, 0))
                    conn.close()
                    conn = NoDelayConnection("127.0.0.1", port, timeout=120)
        finally:
            conn.close()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(len(tokens))]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    stop_at[0] = started + seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    return {"answers": answers, "seconds": time.perf_counter() - started, "ran_dry": not pool}


def run(label: str, code_dir: Path, args, model, version, tokens) -> dict:
    from rollouts.models import Feedback

    pool = log_predictions(model, version, args.predictions)
    before = set(Feedback.objects.values_list("id", flat=True))
    server = start_server(code_dir, args)
    try:
        result = send_for(server.port, tokens, pool, args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=60)
    calls = [item for answers in result["answers"] for item in answers]
    codes = collections.Counter(code for _, code in calls)
    acknowledged = collections.Counter(pid for pid, code in calls if code == 201)
    stored = collections.Counter(
        str(pid) for pid in Feedback.objects.exclude(id__in=before).values_list("prediction__prediction_id", flat=True)
    )
    return {
        "label": label,
        "seconds": result["seconds"],
        "ran_dry": result["ran_dry"],
        "calls": len(calls),
        "codes": dict(codes),
        "rows": sum(stored.values()),
        "rate": sum(acknowledged.values()) / result["seconds"],
        "lost": len(set(acknowledged) - set(stored)),
        "duplicated": sum(n - 1 for n in stored.values() if n > 1) + sum(n - 1 for n in acknowledged.values() if n > 1),
        "unacknowledged_stored": len(set(stored) - set(acknowledged)),
        "new_ids": set(Feedback.objects.exclude(id__in=before).values_list("id", flat=True)),
    }


def baseline_code(ref: str, scratch: Path) -> Path:
    target = scratch / "baseline"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main():
    args = parse_args()
    db_name = setup_django()
    from django.db.models import F

    from governance.audit_integrity import verify_chain
    from governance.models import AuditEvent
    from rollouts.models import Feedback
    from rollouts.services import feedback_summarize

    model, version, users, tokens = fixtures(args.senders)
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        if args.baseline_ref:
            code = baseline_code(args.baseline_ref, Path(scratch))
            before_events = AuditEvent.objects.filter(action="feedback.record", outcome="ok").count()
            baseline = run(f"before ({args.baseline_ref}: an audit event per call)", code, args, model, version, tokens)
            baseline["audit_events"] = (
                AuditEvent.objects.filter(action="feedback.record", outcome="ok").count() - before_events
            )
            # Audited call by call already: not to be summarized again.
            Feedback.objects.filter(id__in=baseline.pop("new_ids")).update(summarized_at=F("created_at"))
            runs.append(baseline)
        current = run("after (observations + audited summaries)", ROOT, args, model, version, tokens)
        started = time.perf_counter()
        summaries = feedback_summarize()
        summarize_seconds = time.perf_counter() - started
        new_ids = current.pop("new_ids")
        current["audit_events"] = len(summaries)
        current["summarized_items"] = sum(event.detail["items"] for event in summaries)
        current["left_unsummarized"] = Feedback.objects.filter(id__in=new_ids, summarized_at__isnull=True).count()
        runs.append(current)

    checked, problem = verify_chain()
    print()
    print(
        f"feedback benchmark on {db_name}: {args.senders} senders, one label per call, up to {args.seconds:.0f} s, "
        f"gunicorn gthread {args.workers} x {args.threads}, {os.cpu_count()} CPUs"
    )
    for result in runs:
        print(f"\n{result['label']}")
        rows = [
            ("seconds", f"{result['seconds']:.1f}" + (" (ran out of predictions)" if result["ran_dry"] else "")),
            ("calls", f"{result['calls']}"),
            ("answers", ", ".join(f"{code}: {n}" for code, n in sorted(result["codes"].items()))),
            ("rows stored", f"{result['rows']}"),
            ("rows/s (acknowledged)", f"{result['rate']:.0f}"),
            ("lost (acknowledged, not stored)", f"{result['lost']}"),
            ("duplicated", f"{result['duplicated']}"),
            ("stored without an acknowledgement", f"{result['unacknowledged_stored']}"),
            ("audit events for these rows", f"{result['audit_events']}"),
        ]
        if "summarized_items" in result:
            rows += [
                ("items in the summaries", f"{result['summarized_items']}"),
                ("rows left unsummarized", f"{result['left_unsummarized']}"),
                ("summarize time, s", f"{summarize_seconds:.2f}"),
            ]
        width = max(len(name) for name, _ in rows) + 2
        for name, value in rows:
            print(f"  {name:<{width}}{value:>20}")
    if len(runs) == 2:
        print(f"\nratio after / before, rows/s: {runs[1]['rate'] / runs[0]['rate']:.2f}")
    print(f"audit chain: {checked} events, {'verifies' if problem is None else 'BROKEN: ' + str(problem)}")
    failed = problem is not None or any(r["lost"] or r["duplicated"] for r in runs)
    failed = failed or current["summarized_items"] != current["rows"] or current["left_unsummarized"]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
