"""Sixty seconds of predictions at a fixed rate through gunicorn while a
50 % canary of two versions of the TF-IDF demo pipeline runs and a real
worker with beat analyses it every few seconds: every answer is 200 and
every prediction is in the log once gunicorn has stopped."""

import json
import statistics
import threading
import time
from collections import Counter

import pytest

from rollouts import services as rollout_services
from rollouts.models import AnalysisRun, PredictionLog, Rollout
from tests.faults import summary
from tests.rollouts.rollout_helpers import chinese_reviews, deploy

pytestmark = [pytest.mark.faults, pytest.mark.worker]

RATE = 20  # requests per second, one text each
SECONDS = 60
SENDERS = 4  # client threads, each with its own keep-alive connection, taking every 4th slot


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def test_sixty_seconds_at_a_fixed_rate_with_a_canary_running(gunicorn_server, worker_pool, served_model, engineer):
    from tests.conftest import token_for

    v1, v2 = served_model.versions.order_by("number")
    deploy(served_model, v1, actor=engineer)
    worker_pool.start("analyst", beat=True, env={"GLASSBOX_ROLLOUT_TICK_SECONDS": "2"})
    token = token_for(engineer)
    server = gunicorn_server(workers=1, threads=4)
    texts = chinese_reviews(200)
    client = server.connect()

    def warm(key: str) -> str:
        status, _, body = client.request(
            "POST", f"/api/v1/models/{served_model.name}/predict/", token=token, body={"inputs": [texts[0]], "key": key}
        )
        assert status == 200, body
        return json.loads(body)["predictions"][0]["route"]

    warm_rows = sum(1 for _ in range(5) if warm("warm-stable"))
    # Loose bounds: the two versions are the same pipeline, and this test is
    # about serving under a running analysis, not about the analysis' verdict.
    # The rollout starts just before the load, so that its first analysis
    # (after 10 s; an interval with no candidate traffic would pause it) sees traffic.
    rollout = rollout_services.rollout_start(
        actor=engineer,
        model=served_model,
        candidate=v2,
        analysis_interval_seconds=10,
        steps=[
            {"weight": 50, "shadow": False, "bake_seconds": 3600},
            {"weight": 100, "shadow": False, "bake_seconds": 3600},
        ],
        thresholds={"max_latency_p95_ratio": 50.0, "max_label_divergence": 0.5, "failure_limit": 100},
    )
    assert rollout.status == Rollout.Status.PROGRESSING
    deadline = time.monotonic() + 30
    while warm(f"warm-{warm_rows}") != "candidate" and time.monotonic() < deadline:  # gunicorn sees the rollout
        warm_rows += 1
    warm_rows += 1
    client.close()

    total = RATE * SECONDS
    statuses, routes, latencies, lock = Counter(), Counter(), [], threading.Lock()
    failures = []
    start_at = time.monotonic() + 0.5

    def sender(first: int) -> None:
        connection = server.connect()
        for slot in range(first, total, SENDERS):
            delay = start_at + slot / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.monotonic()
            try:
                status, _, body = connection.request(
                    "POST",
                    f"/api/v1/models/{served_model.name}/predict/",
                    token=token,
                    body={"inputs": [texts[slot % len(texts)]], "key": f"user-{slot}"},
                )
            except OSError as exc:
                status, body = type(exc).__name__, b""
            elapsed = time.monotonic() - sent
            with lock:
                statuses[status] += 1
                latencies.append(elapsed * 1000)
                if status == 200:
                    routes[json.loads(body)["predictions"][0]["route"]] += 1
                elif len(failures) < 5:
                    failures.append((status, body[:300]))
        connection.close()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + 120)
    achieved = total / (time.monotonic() - start_at)
    server.stop()  # the worker flushes its log buffer as it exits

    logged = PredictionLog.objects.filter(model=served_model, shadow=False).count() - warm_rows
    runs = AnalysisRun.objects.filter(rollout=rollout)
    rollout.refresh_from_db()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    note = (
        f"routes {dict(routes)}; mean {statistics.mean(latencies):.1f} ms; {runs.count()} analysis runs "
        f"{dict(Counter(runs.values_list('verdict', flat=True)))}; rollout {rollout.status}"
    )
    summary.load(
        f"{RATE}/s for {SECONDS} s, 50 % canary",
        requests=total,
        ok=statuses[200],
        errors=total - statuses[200],
        logged=logged,
        rate=achieved,
        p50_ms=p50,
        p99_ms=p99,
        note=note,
    )

    assert statuses == {200: total}, failures
    assert logged == total
    assert not PredictionLog.objects.filter(model=served_model).exclude(error="").exists()
    assert routes["stable"] > 0 and routes["candidate"] > 0
    assert runs.exists(), worker_pool.log("analyst")[-3000:]
    assert rollout.status == Rollout.Status.PROGRESSING, list(runs.values("verdict", "action", "measurements"))
