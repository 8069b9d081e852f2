"""PostgreSQL connections dropped under load: gunicorn serves model
registrations and predictions from several client threads while another
thread keeps terminating that server's database backends (and no one
else's). Every answer is a success, a 409 for a registration retried after
its commit, or a 503 with a JSON `detail`; afterwards every model exists
exactly once with exactly one audit event, the chain verifies, and every
prediction answered 200 is in the log (buffered through the outage,
written after it)."""

import json
import threading
import time
from collections import Counter

import pytest
from django.db import connection

from governance.audit_integrity import verify_chain
from governance.models import AuditEvent
from registry.models import RegisteredModel
from rollouts.models import PredictionLog
from tests.faults import summary
from tests.rollouts.rollout_helpers import chinese_reviews, deploy

pytestmark = pytest.mark.faults

REGISTER_THREADS = 4
PREDICT_THREADS = 2
DROP_SECONDS = 15
DROP_EVERY_SECONDS = 0.2
DEADLINE_SECONDS = 90


def token_for(user) -> str:
    from tests.conftest import token_for as new_token

    return new_token(user)


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.statuses = Counter()
        self.by_kind = Counter()
        self.bad_503 = []
        self.unexpected = []
        self.transport_errors = Counter()
        self.first_try_409 = []
        self.predicted_ids = []

    def note(self, status: int, content_type: str, body: bytes, what: str) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.by_kind[(what.split()[0], status)] += 1
            if status == 503:
                try:
                    detail = json.loads(body).get("detail")
                except ValueError:
                    detail = None
                if not content_type.startswith("application/json") or not detail:
                    self.bad_503.append((what, content_type, body[:200]))
            elif status not in (200, 201, 409):
                self.unexpected.append((what, status, body[:300]))


def register_models(
    server, token: str, prefix: str, names: list[str], tally: Tally, stop: threading.Event, deadline: float
) -> None:
    """Register fresh names until told to stop, each retried through 503s
    and lost answers until it is answered for good."""
    client = server.connect()
    while not stop.is_set() and time.monotonic() < deadline:
        name = f"{prefix}-{len(names)}"
        names.append(name)
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            try:
                status, content_type, body = client.request(
                    "POST", "/api/v1/models/", token=token, body={"name": name, "risk_tier": "low"}
                )
            except OSError as exc:  # the answer may be lost after the commit: a retry then gets 409
                with tally.lock:
                    tally.transport_errors[type(exc).__name__] += 1
                time.sleep(0.05)
                continue
            tally.note(status, content_type, body, f"register {name}")
            if status == 409 and attempt == 1:
                with tally.lock:
                    tally.first_try_409.append(name)
            if status != 503:
                break
            time.sleep(0.05)  # back off a little, as Retry-After asks
    client.close()


def predict(server, token: str, model_name: str, texts: list[str], tally: Tally, stop: threading.Event) -> None:
    client = server.connect()
    index = 0
    while not stop.is_set():
        text = texts[index % len(texts)]
        index += 1
        try:
            status, content_type, body = client.request(
                "POST",
                f"/api/v1/models/{model_name}/predict/",
                token=token,
                body={"inputs": [text], "key": f"k{index}"},
            )
        except OSError as exc:
            with tally.lock:
                tally.transport_errors[type(exc).__name__] += 1
            continue
        tally.note(status, content_type, body, f"predict {index}")
        if status == 200:
            with tally.lock:
                tally.predicted_ids += [p["prediction_id"] for p in json.loads(body)["predictions"]]
    client.close()


def warm_up(server, token: str, model_name: str, texts: list[str]) -> None:
    """Load the model in every gunicorn worker before the faults start
    (concurrent requests spread over the workers)."""

    def send(n: int) -> None:
        client = server.connect()
        for text in texts[n * 3 : n * 3 + 3]:
            status, _, body = client.request(
                "POST", f"/api/v1/models/{model_name}/predict/", token=token, body={"inputs": [text]}
            )
            assert status == 200, body
        client.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)


def drop_connections(server, stop: threading.Event, counts: Counter) -> None:
    try:
        while not stop.wait(DROP_EVERY_SECONDS):
            counts["rounds"] += 1
            counts["backends"] += server.terminate_backends()
    finally:
        connection.close()  # this thread's own connection


def test_dropped_database_connections_answer_503_and_lose_nothing(gunicorn_server, served_model, engineer):
    v1 = served_model.versions.get(number=1)
    deploy(served_model, v1, actor=engineer)
    token = token_for(engineer)
    # Persistent connections, as production runs them: a dropped one is met by the next request.
    server = gunicorn_server(workers=2, threads=4, env={"DATABASE_CONN_MAX_AGE": "60"})
    texts = chinese_reviews(200)
    warm_up(server, token, served_model.name, texts)
    names: list[list[str]] = [[] for _ in range(REGISTER_THREADS)]
    tally, drops = Tally(), Counter()
    stop_drops, stop_load = threading.Event(), threading.Event()
    deadline = time.monotonic() + DEADLINE_SECONDS

    started = time.monotonic()
    killer = threading.Thread(target=drop_connections, args=(server, stop_drops, drops))
    registrars = [
        threading.Thread(
            target=register_models, args=(server, token, f"fault-drop-{t}", names[t], tally, stop_load, deadline)
        )
        for t in range(REGISTER_THREADS)
    ]
    predictors = [
        threading.Thread(target=predict, args=(server, token, served_model.name, texts, tally, stop_load))
        for _ in range(PREDICT_THREADS)
    ]
    for thread in [killer, *registrars, *predictors]:
        thread.start()
    time.sleep(DROP_SECONDS)
    stop_drops.set()
    killer.join(timeout=30)
    stop_load.set()
    for thread in registrars + predictors:
        thread.join(timeout=DEADLINE_SECONDS)
    drop_seconds = time.monotonic() - started
    all_names = [name for group in names for name in group]

    # Recovered: the next requests are served without a single 503.
    client = server.connect()
    after = [
        client.request("POST", f"/api/v1/models/{served_model.name}/predict/", token=token, body={"inputs": [text]})
        for text in texts[:20]
    ]
    status, _, body = client.request(
        "POST", "/api/v1/models/", token=token, body={"name": "fault-drop-after", "risk_tier": "low"}
    )
    client.close()
    server.stop()  # graceful: the workers flush their prediction log buffers on the way out

    assert drops["backends"] > 0, "no backend was ever terminated: the fault was not injected"
    assert not tally.unexpected, tally.unexpected[:5]
    assert not tally.bad_503, tally.bad_503[:5]
    assert not tally.first_try_409, tally.first_try_409
    assert tally.statuses[503] > 0, f"no request met a dropped connection: {tally.statuses}"
    assert [a[0] for a in after] == [200] * 20 and status == 201, (after[:3], body)
    tally.predicted_ids += [p["prediction_id"] for a in after for p in json.loads(a[2])["predictions"]]

    # No lost and no duplicated rows; one audit event per model; the chain intact.
    created = Counter(RegisteredModel.objects.filter(name__in=all_names).values_list("name", flat=True))
    assert set(created) == set(all_names) and set(created.values()) == {1}
    events = Counter(
        AuditEvent.objects.filter(action="model.create", model_name__in=all_names).values_list("model_name", flat=True)
    )
    assert set(events) == set(all_names) and set(events.values()) == {1}, events
    checked, broken = verify_chain()
    assert broken is None, broken
    logged = set(map(str, PredictionLog.objects.filter(model=served_model).values_list("prediction_id", flat=True)))
    assert len(tally.predicted_ids) == len(set(tally.predicted_ids)) > 0
    missing = set(tally.predicted_ids) - logged
    assert not missing, f"{len(missing)} of {len(tally.predicted_ids)} answered predictions were not logged"

    answers = ", ".join(f"{kind} {status}: {count}" for (kind, status), count in sorted(tally.by_kind.items()))
    summary.fault(
        f"terminate gunicorn's PostgreSQL backends every {DROP_EVERY_SECONDS} s",
        injected=drops["backends"],
        outcome=f"{drop_seconds:.0f} s of drops; {answers}; {sum(tally.transport_errors.values())} lost answers; "
        f"{len(all_names)} models each once, audit chain of {checked} intact, "
        f"{len(tally.predicted_ids)} predictions all logged",
        survived=True,
    )
