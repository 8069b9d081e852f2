"""Cross-request batching in a serving process: concurrent predict calls on
a transformers model share forward passes, each caller gets exactly its own
rows, and one call whose input breaks the model fails alone."""

import io
import threading

import numpy
import pytest
import skops.io
from django.db import connection
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from registry.predictors import SklearnPredictor
from registry.selectors import version_predictor
from rollouts.models import PredictionLog
from rollouts.prediction_log import flush_prediction_logs
from rollouts.request_batching import CrossRequestBatcher, batched
from rollouts.serving import predict
from tests.conftest import RegisteredModelFactory, api_client_for, approve
from tests.rollouts.rollout_helpers import deploy

CALLERS = 12


@pytest.fixture
def served_bert(engineer, engineer2, reviewer, demo_models, settings):
    """`zh-bert` serving the demo BERT, committed so caller threads see it."""
    settings.GLASSBOX_BATCH_WAIT_MS = 200  # wide enough that every caller joins one pass
    settings.GLASSBOX_BATCH_MAX = 64
    model = RegisteredModelFactory(name="zh-bert", created_by=engineer)
    handle = io.BytesIO(demo_models["bert_zip"].read_bytes())
    handle.name = "bert.zip"
    response = api_client_for(engineer).post(
        f"/api/v1/models/{model.name}/versions/", {"artifact": handle, "flavor": "transformers"}, format="multipart"
    )
    assert response.status_code == 201, response.json()
    version = approve(model.versions.get(number=1), submitter=engineer2, reviewer=reviewer)
    deploy(model, version, actor=engineer)
    return model, version


@pytest.mark.usefixtures("committed_db")
def test_concurrent_callers_share_forward_passes_and_each_gets_its_own_rows(served_bert, engineer, holdout_texts):
    model, version = served_bert
    # Different texts and different row counts per caller: 1, 2 or 3 rows.
    calls = [holdout_texts[3 * n : 3 * n + 1 + n % 3] for n in range(CALLERS)]
    alone = [version_predictor(version).predict_proba(texts) for texts in calls]
    batcher = batched(version_predictor(version))
    passes_before = batcher.passes
    answers: list = [None] * CALLERS
    start = threading.Barrier(CALLERS)

    def caller(n: int) -> None:
        try:
            start.wait()
            answers[n] = predict(actor=engineer, model=model, inputs=calls[n])
        finally:
            connection.close()

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    passes = batcher.passes - passes_before
    assert 1 <= passes < CALLERS, f"{CALLERS} calls took {passes} forward passes"
    for n, texts in enumerate(calls):
        assert len(answers[n]) == len(texts)
        for row, expected in zip(answers[n], alone[n]):
            got = [row["probabilities"][label] for label in version_predictor(version).labels]
            numpy.testing.assert_allclose(got, expected, atol=1e-5)
    assert flush_prediction_logs(timeout=30)
    logged = PredictionLog.objects.filter(model=model)
    assert logged.count() == sum(len(texts) for texts in calls)
    # Each call's rows carry that call's own latency (its wait for the shared pass included).
    assert logged.values("created_at", "latency_ms").distinct().count() == CALLERS


def _lookup_predictor(tmp_path, known: list[str]) -> SklearnPredictor:
    """A real skops pipeline that answers only texts it has seen: any other
    text raises "unknown categories", as a model with a serving bug does."""
    labels = ["negative", "positive"] * (len(known) // 2) + ["positive"] * (len(known) % 2)
    lookup = Pipeline(
        [
            ("column", FunctionTransformer(numpy.vstack)),
            ("lookup", OneHotEncoder(handle_unknown="error")),
            ("classifier", LogisticRegression()),
        ]
    ).fit(known, labels)
    path = tmp_path / "lookup.skops"
    skops.io.dump(lookup, path)
    return SklearnPredictor(path)


def test_a_call_whose_input_breaks_the_shared_pass_fails_alone(tmp_path):
    known = ["很好", "太差", "一般", "喜欢", "失望", "满意"]
    predictor = _lookup_predictor(tmp_path, known)
    batcher = CrossRequestBatcher(predictor, max_rows=64, wait_seconds=0.3)
    calls = [["很好", "太差"], ["从没见过的句子"], ["一般"], ["喜欢", "失望", "满意"]]
    results: list = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def caller(n: int) -> None:
        start.wait()
        try:
            results[n] = batcher.predict_proba(calls[n])
        except Exception as exc:  # the failing call's own error, raised in its own thread
            results[n] = exc

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert isinstance(results[1], ValueError) and "unknown categories" in str(results[1])
    for n in (0, 2, 3):
        numpy.testing.assert_allclose(results[n], predictor.predict_proba(calls[n]))
    # How the calls met depends on thread timing; at worst one shared pass
    # failed and each call then ran on its own.
    assert batcher.passes <= 1 + len(calls)


def test_a_call_larger_than_the_batch_limit_still_gets_all_its_rows(tmp_path):
    known = [f"评论{n}" for n in range(10)]
    predictor = _lookup_predictor(tmp_path, known)
    batcher = CrossRequestBatcher(predictor, max_rows=4, wait_seconds=0.0)

    answer = batcher.predict_proba(known)

    numpy.testing.assert_allclose(answer, predictor.predict_proba(known))


def test_a_lone_caller_never_waits_for_company(tmp_path):
    known = ["很好", "太差"]
    predictor = _lookup_predictor(tmp_path, known)
    # An hour's wait: a lone caller that waited for others would never return.
    batcher = CrossRequestBatcher(predictor, max_rows=64, wait_seconds=3600)
    results = []
    caller = threading.Thread(target=lambda: results.append(batcher.predict_proba(known)))

    caller.start()
    caller.join(timeout=60)

    assert not caller.is_alive(), "a lone call waited for others to join its pass"
    numpy.testing.assert_allclose(results[0], predictor.predict_proba(known))
