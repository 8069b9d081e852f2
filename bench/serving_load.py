"""Serving under concurrent load: 1, 8 and 32 keep-alive clients against
POST /api/v1/models/{name}/predict/ on gunicorn (glassbox/gunicorn.conf.py:
gthread, one worker, 32 threads), for the demo BERT and a BERT-base-sized
model (random weights, built here; bench/bert_base.py).

    make bench-serving-load        # creates and drops the scratch database servingbench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/servingbench .venv/bin/python bench/serving_load.py \
        [--seconds 30] [--clients 1,8,32] [--models demo,base] [--unbatched]

Per model it prints, for each number of clients (each client sends one text
per request, back to back, for --seconds, at most 60):
- requests/s, client-side p50/p99 ms, errors;
- ratio of requests/s to the raw batched forward throughput of the same
  model in this process (rows/s of predict_proba on 32-text batches: what
  the model alone can do on these cores);
- the ideal p99 at 32 clients: 32 rows / raw rows/s, the wait if 32 callers
  shared the machine perfectly, and p99 / ideal;
- where the time goes: the mean model time the server logged per call
  (PredictionLog.latency_ms: the call's wait for its shared pass and the pass)
  against the client's mean latency; the rest is HTTP, authentication,
  routing and logging.
- logs: every request's row is in PredictionLog once gunicorn stopped.

Targets from the issue, BERT-base-sized model at 32 clients: >= 0.7 of raw
batched throughput, p99 <= 1.5 x the ideal, zero errors, every prediction
logged. With --unbatched the same load runs again with GLASSBOX_BATCH_MAX=1
(no cross-request batching) for the before/after ratio.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "glassbox.settings")
os.environ.setdefault("DJANGO_DEBUG", "0")
os.environ.setdefault("GLASSBOX_DATA_DIR", str(ROOT / "var" / "bench-serving-load"))
os.environ.setdefault("GLASSBOX_INFERENCE_BACKEND", "torch")

PASSWORD = "bench-password-123"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="per load level, at most 60")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--models", default="demo,base")
    parser.add_argument("--unbatched", action="store_true", help="also run with cross-request batching off")
    args = parser.parse_args()
    args.seconds = min(60.0, max(1.0, args.seconds))
    args.clients = [int(n) for n in args.clients.split(",")]
    args.models = args.models.split(",")
    return args


def setup_django() -> str:
    import django
    from django.conf import settings

    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a scratch PostgreSQL database (see the docstring).")
    django.setup()
    name = settings.DATABASES["default"]["NAME"]
    if name == "test" or name.startswith("test_"):
        sys.exit(f"Refusing to use {name!r}: that is a test database. Use a scratch database such as servingbench.")
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return name


def load_texts() -> list[str]:
    from registry.demo_training import load_reviews, split_reviews

    _, holdout = split_reviews(load_reviews())
    return [text for text, _ in holdout if 20 <= len(text) <= 120][:2000]


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def model_archive(kind: str, scratch: Path) -> bytes:
    if kind == "demo":
        from registry.demo_training import train_demo_models

        cache = ROOT / "var" / "test-demo-models"
        manifest = train_demo_models(cache, quick=True)
        return (cache / manifest["bert"]["artifact"]).read_bytes()
    sys.path.insert(0, str(ROOT / "bench"))
    from bert_base import build_bert_base

    return zipped(build_bert_base(scratch / "base"))


class NoDelayConnection(http.client.HTTPConnection):
    """Real clients set TCP_NODELAY; without it a request's body waits for a delayed ACK."""

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


class Server:
    def __init__(self, *, batching: bool):
        self.port = free_port()
        env = {
            **os.environ,
            "GLASSBOX_BIND": f"127.0.0.1:{self.port}",
            "GLASSBOX_LOG_LEVEL": "WARNING",
            "GLASSBOX_BATCH_MAX": os.environ.get("GLASSBOX_BATCH_MAX", "64") if batching else "1",
        }
        command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "glassbox" / "gunicorn.conf.py"), "glassbox.wsgi"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env)
        deadline = time.time() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        # SIGTERM: the worker exits gracefully and flushes its prediction logs.
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)


def api_token(port: int, username: str) -> str:
    conn = NoDelayConnection("127.0.0.1", port)
    body = json.dumps({"username": username, "password": PASSWORD})
    conn.request("POST", "/api/v1/auth/token/", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = json.loads(response.read())
    conn.close()
    assert response.status in (200, 201), payload
    return payload.get("token") or payload["key"]


def load(port: int, token: str, model: str, texts: list[str], clients: int, seconds: float) -> dict:
    """`clients` threads, each on its own keep-alive connection, one text per
    request, back to back for `seconds`."""
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(n: int) -> None:
        conn = NoDelayConnection("127.0.0.1", port, timeout=300)
        sent = 0
        start.wait()
        while time.perf_counter() < stop_at[0]:
            text = texts[(n * 7919 + sent) % len(texts)]
            payload = json.dumps({"inputs": [text], "key": f"client-{n}"}, ensure_ascii=False).encode()
            began = time.perf_counter()
            try:
                conn.request("POST", f"/api/v1/models/{model}/predict/", body=payload, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn.close()
            latencies[n].append((time.perf_counter() - began) * 1000)
            errors[n] += not ok
            sent += 1
        conn.close()

    from django.utils import timezone

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    window_start = timezone.now()
    stop_at[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = [ms for per_client in latencies for ms in per_client]
    return {
        "clients": clients,
        "requests": len(every),
        "errors": sum(errors),
        "rps": len(every) / elapsed,
        "p50": percentile(every, 50),
        "p99": percentile(every, 99),
        "mean": statistics.fmean(every),
        "window": (window_start, timezone.now()),
    }


def raw_batched_rows_per_second(predictor, texts: list[str], seconds: float = 15.0) -> float:
    predictor.predict_proba(texts[:32])  # first call pays once
    rows, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        batch = texts[rows % (len(texts) - 32) :][:32]
        predictor.predict_proba(batch)
        rows += len(batch)
    return rows / (time.perf_counter() - began)


def main() -> None:
    args = parse_args()
    db_name = setup_django()
    from django.contrib.auth.models import Group, User

    from governance import services as review_services
    from registry.models import RegisteredModel
    from registry.selectors import version_predictor
    from rollouts import services as rollout_services
    from rollouts.models import PredictionLog

    texts = load_texts()
    users = {}
    for name, role in (("bench-erin", "engineer"), ("bench-eli", "engineer"), ("bench-rita", "reviewer")):
        users[name], _ = User.objects.get_or_create(username=name)
        users[name].set_password(PASSWORD)
        users[name].save()
        users[name].groups.add(Group.objects.get(name=role))

    from governance.models import Team, TeamMembership

    # Models belong to a team: bench-erin maintains the bench's.
    team, _ = Team.objects.get_or_create(name="bench")
    for name, role in (("bench-erin", "maintainer"), ("bench-eli", "engineer")):
        TeamMembership.objects.get_or_create(team=team, user=users[name], defaults={"role": role})

    report, logs = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        for kind in args.models:
            name = f"bench-load-{kind}-{int(time.time())}"
            archive = model_archive(kind, Path(scratch))
            server = Server(batching=True)
            try:
                import requests

                token = api_token(server.port, "bench-erin")
                auth = {"Authorization": f"Token {token}"}
                response = requests.post(
                    f"http://127.0.0.1:{server.port}/api/v1/models/",
                    json={"name": name, "risk_tier": "low", "team": "bench"},
                    headers=auth,
                    timeout=60,
                )
                assert response.status_code == 201, response.text
                response = requests.post(
                    f"http://127.0.0.1:{server.port}/api/v1/models/{name}/versions/",
                    headers=auth,
                    files={"artifact": ("model.zip", archive)},
                    data={"flavor": "transformers"},
                    timeout=600,
                )
                assert response.status_code == 201, response.text
            except BaseException:
                server.stop()
                raise
            model = RegisteredModel.objects.get(name=name)
            version = model.versions.get(number=1)
            review_services.review_submit(actor=users["bench-eli"], version=version)
            review_services.decision_record(
                actor=users["bench-rita"], version=version, decision="approve", comment="benchmark"
            )
            rollout_services.rollout_start(actor=users["bench-erin"], model=model, candidate=version)

            predictor = version_predictor(version)
            server.stop()  # the raw baseline gets the machine to itself
            raw = raw_batched_rows_per_second(predictor, texts)
            del predictor
            print(f"{kind}: raw batched forward {raw:.1f} rows/s in this process", flush=True)

            sent = 0
            for batching in [True, False] if args.unbatched else [True]:
                server = Server(batching=batching)
                try:
                    warm = load(server.port, token, name, texts, 1, 2.0)  # loads the model in the worker
                    sent += warm["requests"]
                    for clients in args.clients:
                        result = load(server.port, token, name, texts, clients, args.seconds)
                        sent += result["requests"]
                        result.update(kind=kind, batching=batching, raw=raw)
                        report.append(result)
                        print(
                            f"  {'batched' if batching else 'unbatched'} {clients:>2} clients: "
                            f"{result['rps']:.1f} req/s p50 {result['p50']:.1f} ms p99 {result['p99']:.1f} ms "
                            f"errors {result['errors']}",
                            flush=True,
                        )
                finally:
                    server.stop()
            logged = PredictionLog.objects.filter(model=model)
            logs[kind] = {"sent": sent, "logged": logged.count()}
            for result in report:
                if result["kind"] == kind:
                    # Each call logs its own latency (its wait for the shared pass and the pass).
                    calls = logged.filter(created_at__range=result["window"]).values_list("created_at", "latency_ms")
                    result["server_ms"] = statistics.fmean(latency for _, latency in calls.distinct())

    print()
    print(f"serving load on {db_name}: gunicorn gthread 1 worker x 32 threads, {args.seconds:.0f} s per level")
    header = f"{'model':<6}{'batching':<10}{'clients':>8}{'req/s':>9}{'/raw':>7}{'p50 ms':>9}{'p99 ms':>9}"
    header += f"{'ideal p99':>11}{'p99/ideal':>11}{'errors':>8}{'mean ms':>9}{'server ms':>11}"
    print(header)
    for r in report:
        ideal = r["clients"] / r["raw"] * 1000
        print(
            f"{r['kind']:<6}{'on' if r['batching'] else 'off':<10}{r['clients']:>8}{r['rps']:>9.1f}"
            f"{r['rps'] / r['raw']:>7.2f}{r['p50']:>9.1f}{r['p99']:>9.1f}{ideal:>11.1f}{r['p99'] / ideal:>11.2f}"
            f"{r['errors']:>8}{r['mean']:>9.1f}{r['server_ms']:>11.1f}"
        )
    print(
        "mean ms: the client's mean latency; server ms: the model time the server logged per call (its wait "
        "for a shared pass and the pass); the difference is HTTP, authentication, routing and logging"
    )
    for kind in args.models:
        print(f"{kind}: requests sent {logs[kind]['sent']}, rows logged {logs[kind]['logged']}")


if __name__ == "__main__":
    main()
