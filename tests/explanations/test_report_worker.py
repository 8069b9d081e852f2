"""Reports computed by real Celery worker processes on the quick demo BERT:
a report runs to succeeded, and a worker SIGKILLed in the middle of a report
is replaced by another that finishes it (heartbeat + reaper)."""

import time

import pytest

from explanations.models import ExplanationReport
from governance.models import AuditEvent
from tests.conftest import api_client_for, page_client_for, wait_for
from tests.explanations.reporting import finished, running_chunk, uploaded_bert, uploaded_dataset

pytestmark = pytest.mark.worker

TEXTS = ["这个手机质量很好，物流也快！", "太差了，用了两天就坏了。", "一般般吧"]
# Longer than the quick demo BERT reads (128 tokens): explained as far as the model reads it.
LONG_TEXT = "屏幕很清晰，" * 40


def test_a_shap_report_runs_to_succeeded_in_a_real_worker(worker_process, demo_models):
    from governance import roles
    from tests.conftest import UserFactory

    engineer = UserFactory(username="erin", role=roles.ENGINEER)
    version = uploaded_bert(uploader=engineer, demo_models=demo_models)
    response = api_client_for(engineer).post(
        f"/api/v1/models/{version.model.name}/versions/{version.number}/explanations/",
        {"method": "shap", "texts": TEXTS + [LONG_TEXT], "params": {"max_evals": 60, "chunk_size": 2}},
        format="json",
    )
    assert response.status_code == 202, response.json()
    report_id = response.json()["id"]

    state = wait_for(lambda: finished(report_id), timeout=180, what=f"report {report_id}\n{worker_process()[-3000:]}")

    assert state["status"] == "succeeded", state["error"]
    assert state["progress"] == 100 and state["chunks"] == {"total": 2, "done": 2}
    texts = state["results"]["texts"]
    assert [entry["index"] for entry in texts] == [0, 1, 2, 3]
    assert [entry["truncated"] for entry in texts] == [False, False, False, True]
    assert state["results"]["truncated_count"] == 1 and len(texts[3]["tokens"]) < len(LONG_TEXT)
    for entry in texts:
        assert len(entry["values"]["positive"]) == len(entry["tokens"]) > 0
        assert entry["additivity_error"] <= 1e-6
    assert set(state["results"]["global"]) == {"negative", "positive"}
    assert "aopc" in state["fidelity"]["comprehensiveness"] and state["fidelity"]["additivity_max_error"] <= 1e-6
    assert {"queued_seconds", "chunk_seconds", "combine_seconds", "fidelity_seconds", "wall_seconds"} <= set(
        state["timings"]
    )
    log = worker_process()
    assert "explanations.tasks.run_chunk" in log and "explanations.tasks.finalize_report" in log

    # The page renders the real results: heat map, one chart per class, fidelity beside them.
    client = page_client_for(engineer)
    page = client.get(f"/explanations/{report_id}/").content.decode()
    # Every token is drawn, certain or not (the legend's sample is a "token-sample", not a token).
    drawn = page.count('class="token"') + page.count('class="token uncertain"')
    assert drawn == sum(len(entry["tokens"]) for entry in texts)
    assert page.count("<svg") == 2 and "Comprehensiveness" in page and "1 text longer than" in page


def test_an_ig_report_over_a_sample_runs_to_succeeded_in_a_real_worker(worker_process, demo_models):
    from governance import roles
    from tests.conftest import UserFactory

    engineer = UserFactory(username="erin", role=roles.ENGINEER)
    version = uploaded_bert(uploader=engineer, demo_models=demo_models)
    rows = (
        [(text, "positive") for text in TEXTS[::2]]
        + [(text * 2, "negative") for text in TEXTS]
        + [(LONG_TEXT, "positive")]
    )
    dataset = uploaded_dataset(uploader=engineer, rows=rows, name="six-rows")
    url = f"/api/v1/models/{version.model.name}/versions/{version.number}/explanations/"
    response = api_client_for(engineer).post(
        url,
        {
            "method": "ig",
            "dataset": dataset.pk,
            "sample": {"n": 4, "seed": 1},
            "params": {"n_steps": 16, "chunk_size": 2},
        },
        format="json",
    )
    assert response.status_code == 202, response.json()
    assert response.json()["estimate"]["seconds"] >= 0 and response.json()["params"]["sample"] == {"n": 4, "seed": 1}
    assert response.json()["params"]["gradients_backend"] == "torch"
    report_id = response.json()["id"]

    state = wait_for(lambda: finished(report_id), timeout=180, what=f"report {report_id}\n{worker_process()[-3000:]}")

    assert state["status"] == "succeeded", state["error"]
    assert state["progress"] == 100 and state["chunks"] == {"total": 2, "done": 2}
    texts = state["results"]["texts"]
    assert len(texts) == 4 and sorted(entry["true_label"] for entry in texts) == [
        "negative",
        "negative",
        "positive",
        "positive",
    ]
    for entry in texts:
        assert len(entry["values"]["positive"]) == len(entry["tokens"]) > 0
        assert entry["completeness_error"] <= 0.05 * entry["completeness_delta"] + 1e-6
    fidelity = state["fidelity"]
    assert fidelity["completeness_max_error"] == max(entry["completeness_error"] for entry in texts)
    assert "aopc" in fidelity["comprehensiveness"] and fidelity["texts"] == 4

    client = page_client_for(engineer)
    page = client.get(f"/explanations/{report_id}/").content.decode()
    assert "IG completeness" in page and page.count('class="token"') == sum(len(entry["tokens"]) for entry in texts)
    # The next estimate uses the speed this report measured.
    estimate = api_client_for(engineer).post(url + "estimate/", {"method": "ig", "texts": TEXTS}, format="json").json()
    assert estimate["estimate"]["basis"].startswith("measured on this version")


@pytest.mark.faults  # listed in the fault summary (tests/faults/conftest.py)
def test_a_report_survives_its_worker_being_killed(worker_pool, demo_models):
    from governance import roles
    from tests.conftest import UserFactory

    engineer = UserFactory(username="erin", role=roles.ENGINEER)
    version = uploaded_bert(uploader=engineer, demo_models=demo_models)
    fast = {
        "GLASSBOX_EXPLANATION_HEARTBEAT_SECONDS": "1",
        "GLASSBOX_EXPLANATION_STALE_SECONDS": "6",
        "GLASSBOX_REAPER_INTERVAL_SECONDS": "1",
    }
    worker_pool.start("doomed", env=fast)
    texts = [text * 3 for text in TEXTS * 2]  # six longer texts: the first chunk takes a while
    response = api_client_for(engineer).post(
        f"/api/v1/models/{version.model.name}/versions/{version.number}/explanations/",
        {"method": "shap", "texts": texts, "params": {"max_evals": 400, "chunk_size": 3}},
        format="json",
    )
    assert response.status_code == 202, response.json()
    report_id = response.json()["id"]

    running = running_chunk(report_id, log=worker_pool.log("doomed"))
    worker_pool.kill("doomed")  # SIGKILL to the whole process group: no goodbye, no ack
    killed_at = time.monotonic()
    assert ExplanationReport.objects.get(pk=report_id).status == "running"

    worker_pool.start("rescuer", beat=True, env=fast)
    state = wait_for(
        lambda: finished(report_id), timeout=180, what=f"report {report_id}\n{worker_pool.log('rescuer')[-3000:]}"
    )

    assert state["status"] == "succeeded", state["error"]
    assert len(state["results"]["texts"]) == 6
    running.refresh_from_db()
    assert running.attempts >= 2 and running.worker.startswith("rescuer-")
    # (On a loaded machine the reaper may also doubt a slow live worker; only the dead one matters here.)
    requeues = [event.detail for event in AuditEvent.objects.filter(action="explanation.requeue")]
    assert {"chunk": running.index, "reason": "worker silent"}.items() <= next(
        detail for detail in requeues if detail["worker"].startswith("doomed-")
    ).items()
    assert time.monotonic() - killed_at < 120


def test_lime_and_pfi_reports_on_a_dataset_in_a_real_worker(worker_process, demo_models):
    from governance import roles
    from tests.conftest import UserFactory

    engineer = UserFactory(username="erin", role=roles.ENGINEER)
    version = uploaded_bert(uploader=engineer, demo_models=demo_models)
    dataset = uploaded_dataset(
        uploader=engineer,
        rows=[
            ("质量很好，很喜欢", "positive"),
            ("太差了，退货", "negative"),
            ("物流很快，好评", "positive"),
            ("坏了，失望", "negative"),
        ],
    )
    client = api_client_for(engineer)
    path = f"/api/v1/models/{version.model.name}/versions/{version.number}/explanations/"
    lime = client.post(
        path, {"method": "lime", "dataset": dataset.pk, "params": {"num_samples": 60}}, format="json"
    ).json()
    pfi = client.post(
        path,
        {"method": "pfi", "dataset": dataset.pk, "params": {"top_k": 4, "repeats": 2, "fidelity_texts": 4}},
        format="json",
    ).json()

    lime_state = wait_for(lambda: finished(lime["id"]), timeout=180, what=f"lime\n{worker_process()[-3000:]}")
    pfi_state = wait_for(lambda: finished(pfi["id"]), timeout=180, what=f"pfi\n{worker_process()[-3000:]}")

    assert lime_state["status"] == "succeeded", lime_state["error"]
    assert all(entry["true_label"] in ("positive", "negative") for entry in lime_state["results"]["texts"])
    assert "r2_mean" in lime_state["fidelity"]
    assert pfi_state["status"] == "succeeded", pfi_state["error"]
    assert len(pfi_state["results"]["features"]) == 4 and pfi_state["results"]["repeats"] == 2
    csv_export = client.get(f"/api/v1/explanations/{pfi['id']}/export.csv")
    assert csv_export.status_code == 200 and len(csv_export.content.decode("utf-8-sig").splitlines()) == 5
