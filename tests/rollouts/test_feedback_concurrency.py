"""Feedback under concurrency, on committed transactions: senders in
parallel threads (one label per call, some on the same predictions) while
summaries run beside them. Nothing is lost, nothing is stored twice, and
every stored row is in exactly one audited summary."""

import threading
import time
import uuid
from collections import Counter

from django.db import connection
from django.utils import timezone

from governance import roles
from governance.audit_integrity import verify_chain
from governance.models import AuditEvent
from registry.models import ModelVersion
from rollouts import services
from rollouts.models import Feedback, PredictionLog
from tests.conftest import ModelVersionFactory, RegisteredModelFactory, UserFactory, api_client_for

SENDERS = 8
PER_SENDER = 40
# Each sender also sends feedback on this many predictions of the next sender's share.
CONTESTED = 5


def _logged_predictions(version: ModelVersion, count: int) -> list[str]:
    # Log rows written directly: serving itself is covered in test_predict_api.py.
    rows = [
        PredictionLog(
            prediction_id=uuid.uuid4(),
            model=version.model,
            version=version,
            route="stable",
            label="positive" if n % 2 else "negative",
            confidence=0.9,
            latency_ms=1.0,
            created_at=timezone.now(),
        )
        for n in range(count)
    ]
    PredictionLog.objects.bulk_create(rows)
    return [str(row.prediction_id) for row in rows]


def test_parallel_senders_lose_nothing_and_store_nothing_twice(committed_db):
    engineer = UserFactory(username="erin", role=roles.ENGINEER, password="!")
    model = RegisteredModelFactory(name="zh-feedback", created_by=engineer)
    version = ModelVersionFactory(model=model, status=ModelVersion.Status.DEPLOYED)
    ids = _logged_predictions(version, SENDERS * PER_SENDER)
    senders = [UserFactory(username=f"sender{n}", role=roles.ENGINEER, password="!") for n in range(SENDERS)]
    clients = [api_client_for(user) for user in senders]
    shares = [ids[n * PER_SENDER : (n + 1) * PER_SENDER] for n in range(SENDERS)]
    plans = [share + shares[(n + 1) % SENDERS][:CONTESTED] for n, share in enumerate(shares)]
    answers: list[list[tuple[str, int]]] = [[] for _ in range(SENDERS)]
    barrier = threading.Barrier(SENDERS + 1)
    sending = threading.Event()
    summary_events: list[AuditEvent] = []

    def send(n: int) -> None:
        try:
            barrier.wait()
            for prediction_id in plans[n]:
                response = clients[n].post(
                    "/api/v1/models/zh-feedback/feedback/",
                    {"items": [{"prediction_id": prediction_id, "label": "positive"}]},
                    format="json",
                )
                answers[n].append((prediction_id, response.status_code))
        finally:
            connection.close()

    def summarize() -> None:
        try:
            barrier.wait()
            while sending.is_set():
                summary_events.extend(services.feedback_summarize())
                time.sleep(0.01)
        finally:
            connection.close()

    sending.set()
    threads = [threading.Thread(target=send, args=(n,)) for n in range(SENDERS)]
    summarizer = threading.Thread(target=summarize)
    for thread in [*threads, summarizer]:
        thread.start()
    for thread in threads:
        thread.join()
    sending.clear()
    summarizer.join()
    summary_events.extend(services.feedback_summarize())

    codes = Counter(code for sent in answers for _, code in sent)
    assert set(codes) <= {201, 409} and codes[201] == SENDERS * PER_SENDER, codes
    accepted = Counter(prediction_id for sent in answers for prediction_id, code in sent if code == 201)
    # Every prediction acknowledged exactly once, and stored exactly once, by whoever was acknowledged.
    assert set(accepted) == set(ids) and set(accepted.values()) == {1}
    stored = dict(Feedback.objects.values_list("prediction__prediction_id", "created_by__username"))
    assert {str(key) for key in stored} == set(ids) and Feedback.objects.count() == len(ids)
    acknowledged_to = {pid: senders[n].username for n, sent in enumerate(answers) for pid, code in sent if code == 201}
    assert {str(key): user for key, user in stored.items()} == acknowledged_to
    # Each row in exactly one summary; the summaries add up per sender.
    assert not Feedback.objects.filter(summarized_at__isnull=True).exists()
    per_sender = Counter()
    for event in AuditEvent.objects.filter(action="feedback.summary"):
        per_sender[event.actor_username] += event.detail["items"]
    assert sum(per_sender.values()) == len(ids)
    assert per_sender == Counter(acknowledged_to.values())
    assert len(summary_events) == AuditEvent.objects.filter(action="feedback.summary").count()
    assert verify_chain()[1] is None
