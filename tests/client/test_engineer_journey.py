"""The engineer's whole journey with the `glassbox` command against a live
server and a real Celery worker: login, upload with a progress bar, explain
and wait, submit; two reviewers approve through the Python API; rollout
start, status, abort (v1, the demo TF-IDF pipeline, stays stable); and the
audit trail of it all exported by a manager.

One test, because each step starts where the previous one ended."""

import csv
import io
import json
import os
import stat
from datetime import UTC, datetime

import pytest

from governance.models import ReviewRequest
from rollouts import prediction_log, routing, serving_cache
from tests.client.conftest import CLIENT_DIR, glassbox
from tests.conftest import token_for

pytestmark = [pytest.mark.worker]

PASSWORD = "correct horse battery staple"  # every persona's (tests/conftest.py)
MODEL = "zh-cli-bert"
# Three short texts keep the SHAP report to seconds on two cores.
SMALL_SET = "text,label\n这本书很好看,positive\n质量太差了，不推荐,negative\n物流很快，包装完好,positive\n"


@pytest.fixture
def python_client(monkeypatch):
    """The Python API from the source tree, as `pip install ./client` provides it."""
    monkeypatch.syspath_prepend(str(CLIENT_DIR))
    import glassbox_client

    return glassbox_client


@pytest.fixture
def fresh_serving_caches():
    """This process serves the live server: no routing or permission cached
    from other tests, and the prediction-log writer's rows on disk before the
    test's rows are flushed away."""
    routing.clear_routing_cache()
    serving_cache.clear_permission_cache()
    prediction_log.reset_writer()
    yield
    prediction_log.flush_prediction_logs(timeout=30)
    prediction_log.reset_writer()
    routing.clear_routing_cache()
    serving_cache.clear_permission_cache()


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


@pytest.mark.usefixtures("fresh_serving_caches")
def test_engineer_journey_with_the_glassbox_command(
    live_server, worker_pool, demo_models, engineer, reviewer, reviewer2, manager, python_client, settings, tmp_path
):
    worker_pool.start("client")
    url = live_server.url
    Glassbox = python_client.Glassbox

    # Where the journey starts: a medium-risk model (two approvals) whose v1,
    # the demo TF-IDF pipeline (quick to load), serves all traffic; set up
    # through the Python API.
    erin_api = Glassbox.from_password(url, "erin", PASSWORD)
    erin_api.model_create(MODEL, risk_tier="medium", description="中文评论情感分类")
    sent = []
    v1 = erin_api.upload(
        MODEL,
        demo_models["sklearn_skops"],
        flavor="sklearn",
        progress=lambda done, total: sent.append((done, total)),
    )
    assert (v1.version, v1.status, v1.flavor) == (1, "registered", "sklearn")
    assert sent[-1][0] == sent[-1][1] and [done for done, _ in sent] == sorted(done for done, _ in sent)
    erin_api.submit(MODEL, 1)
    for name in ("rita", "ravi"):
        Glassbox.from_password(url, name, PASSWORD).approve(MODEL, 1, comment="v1 ok")
    first = erin_api.rollout_start(MODEL, 1)
    assert first.status == "promoted"  # a first deployment has nothing to compare against

    # login: the token lands in a file only its owner may read.
    config = tmp_path / "home" / "glassbox" / "config.json"
    login = ok(glassbox("login", "--url", url, "--username", "erin", "--password-stdin", config=config, stdin=PASSWORD))
    assert f"Logged in to {url} as erin" in login.stdout
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    assert json.loads(config.read_text())["url"] == url

    models = json.loads(ok(glassbox("models", "--json", config=config)).stdout)
    assert [model["name"] for model in models] == [MODEL]
    table = ok(glassbox("models", config=config)).stdout.splitlines()
    assert table[0].split() == ["NAME", "RISK", "TEAM", "TASK", "DESCRIPTION"]
    assert table[1].startswith(MODEL) and "medium" in table[1]

    # An evaluation set, then the quick demo BERT as v2, with a progress bar on stderr.
    small = tmp_path / "small.csv"
    small.write_text(SMALL_SET, encoding="utf-8")
    dataset = json.loads(
        ok(glassbox("dataset", "upload", str(small), "--name", "cli-small", "--json", config=config)).stdout
    )
    assert dataset["row_count"] == 3
    upload = ok(
        glassbox(
            "upload",
            str(demo_models["bert_zip"]),
            "--model",
            MODEL,
            "--flavor",
            "transformers",
            "--metrics",
            '{"accuracy": 0.81}',
            "--description",
            "第二版",
            config=config,
        )  # fmt: skip
    )
    assert f"Uploaded {MODEL} v2 (registered)" in upload.stdout
    progress = upload.stderr.splitlines()
    assert progress[0].startswith("Uploading bert-zh-sentiment.zip [")
    assert "100%" in progress[-1] and "MB/s" in progress[-1]

    # explain --wait: a SHAP report with a small budget, followed to the end by a progress bar.
    explain = ok(
        glassbox(
            "explain",
            MODEL,
            "2",
            "--method",
            "shap",
            "--dataset",
            str(dataset["id"]),
            "--params",
            '{"max_evals": 64, "seed": 7}',
            "--wait",
            "--json",
            config=config,
            timeout=240,
        )  # fmt: skip
    )
    report = json.loads(explain.stdout)
    assert report["status"] == "succeeded" and report["progress"] == 100 and report["text_count"] == 3
    assert f"Report #{report['id']} [" in explain.stderr and "100%  succeeded" in explain.stderr
    exported = tmp_path / "report.csv"
    ok(glassbox("report", "export", str(report["id"]), "--format", "csv", "-o", str(exported), config=config))
    rows = list(csv.DictReader(io.StringIO(exported.read_text(encoding="utf-8-sig"))))
    assert {row["text_index"] for row in rows} == {"0", "1", "2"} and rows[0]["token"] == "这"

    # submit; until two reviewers approve, `review` says "pending" with its own exit code.
    submitted = ok(glassbox("submit", MODEL, "2", config=config))
    # The review's number is the database's (other tests' reviews come first in a full run).
    review_number = ReviewRequest.objects.get(version__model__name=MODEL, version__number=2).pk
    assert submitted.stdout.strip() == f"{MODEL} v2: in_review, review #{review_number} open, 0 of 2 approvals"
    pending = glassbox("review", MODEL, "2", config=config)
    assert pending.returncode == 5 and "waiting for reviewers" in pending.stderr

    # Two reviewers approve through the Python API.
    for name, status in (("rita", "in_review"), ("ravi", "approved")):
        decision = Glassbox.from_password(url, name, PASSWORD).approve(MODEL, 2, comment=f"SHAP 热力图合理（{name}）")
        assert (decision.reviewer, decision.decision, decision.version_status) == (name, "approve", status)
    approved = ok(glassbox("review", MODEL, "2", config=config))
    assert f"{MODEL} v2: approved, review #{review_number} approved, 2 of 2 approvals" in approved.stdout

    # rollout start -> status -> abort.
    started = json.loads(ok(glassbox("rollout", "start", MODEL, "2", "--json", config=config)).stdout)
    assert (started["candidate"], started["stable"], started["status"]) == (2, 1, "progressing")
    status = ok(glassbox("rollout", "status", MODEL, config=config)).stdout
    assert status.splitlines()[0] == (
        f"rollout #{started['id']} {MODEL} v2 (stable v1): progressing, step 1/5, candidate shadow"
    )
    assert "<- now" in status.splitlines()[2]
    aborted = ok(glassbox("rollout", "abort", str(started["id"]), "--reason", "命令行测试：中止", config=config))
    assert aborted.stdout.strip() == f"rollout #{started['id']} {MODEL} v2 (stable v1): aborted (命令行测试：中止)"
    watched = glassbox("rollout", "status", str(started["id"]), "--watch", config=config)
    assert watched.returncode == 9 and "was aborted: 命令行测试：中止" in watched.stderr

    # v1 still answers everything; its answer's true label goes back as feedback.
    predicted = json.loads(ok(glassbox("predict", "--model", MODEL, "这本书很好看", "--json", config=config)).stdout)
    assert [(answer["version"], answer["route"]) for answer in predicted] == [(1, "stable")]
    assert prediction_log.flush_prediction_logs(timeout=30)
    feedback = ok(glassbox("feedback", "--model", MODEL, f"{predicted[0]['prediction_id']}=positive", config=config))
    assert feedback.stdout.startswith("Recorded 1 labels:")

    # Bad input against the real server: over the upload limit, the server's reason.
    settings.GLASSBOX_UPLOAD_LIMITS = {**settings.GLASSBOX_UPLOAD_LIMITS, "max_upload_bytes": 64 * 1024}
    too_large = glassbox(
        "upload", str(demo_models["bert_zip"]), "--model", MODEL, "--flavor", "transformers", config=config
    )
    assert too_large.returncode == 1
    assert "(HTTP 413)" in too_large.stderr.splitlines()[-1]

    # A manager exports the day's trail of this model, every page, as CSV.
    manager_config = tmp_path / "manager.json"
    ok(glassbox("login", "--url", url, "--token", token_for(manager), config=manager_config))
    today = datetime.now(UTC).date().isoformat()
    trail = ok(
        glassbox(
            "audit",
            "export",
            "--since",
            today,
            "--model",
            MODEL,
            "--page-size",
            "5",
            "--format",
            "csv",
            config=manager_config,
        )  # fmt: skip
    )
    events = list(csv.DictReader(io.StringIO(trail.stdout)))
    actions = {(event["actor_username"], event["action"]) for event in events}
    assert {("erin", "version.create"), ("ravi", "review.approve"), ("erin", "rollout.abort")} <= actions
    assert len({event["id"] for event in events}) == len(events) > 5  # more than one page, none twice
