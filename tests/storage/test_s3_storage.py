"""Artifacts and datasets on a real S3 server (moto_server on loopback),
with a real Celery worker that shares no disk with this (web) process: its
GLASSBOX_DATA_DIR is another, empty folder, as on another host. Everything
it loads comes from the bucket, checked against the registered SHA-256."""

import hashlib
import io
import os

import pytest
from django.conf import settings

from governance.models import AuditEvent
from registry import artifacts
from registry.models import Dataset, ModelVersion
from rollouts import routing, services
from rollouts.models import Alert, AnalysisRun, Rollout
from tests.conftest import (
    RegisteredModelFactory,
    WorkerPool,
    api_client_for,
    page_client_for,
    stored_files,
    upload_skops,
    wait_for,
)
from tests.explanations.reporting import finished
from tests.rollouts.rollout_helpers import deploy, send_traffic
from tests.storage.conftest import cache_of

pytestmark = pytest.mark.worker

TEXTS = ["这个手机质量很好，物流也快！", "太差了，用了两天就坏了。", "一般般吧，还可以", "非常失望，不会再买"]


@pytest.fixture(scope="module")
def remote_worker(django_db_setup, s3_server, tmp_path_factory):
    """One worker for the module, on the bucket, with a data directory of its
    own that starts empty (no artifact cache, no upload area)."""
    from glassbox.celery import app

    app.control.purge()
    data_dir = tmp_path_factory.mktemp("remote-host")
    pool = WorkerPool(tmp_path_factory.mktemp("remote-logs"))
    pool.start(
        "remote",
        env=s3_server.env(GLASSBOX_DATA_DIR=str(data_dir), GLASSBOX_ROLLOUT_MIN_INTERVAL_SECONDS="1"),
    )
    pool.data_dir = data_dir
    yield pool
    pool.stop_all()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dataset_upload(uploader, rows, name: str):
    body = "text,label\n" + "".join(f"{text},{label}\n" for text, label in rows)
    handle = io.BytesIO(body.encode())
    handle.name = f"{name}.csv"
    return api_client_for(uploader).post("/api/v1/datasets/", {"file": handle, "name": name}, format="multipart")


@pytest.mark.usefixtures("committed_db")
def test_uploads_stream_to_the_bucket_and_a_worker_on_another_host_warms_and_explains(
    s3_storage, remote_worker, engineer, demo_models
):
    model = RegisteredModelFactory(name="zh-s3", created_by=engineer)
    local_before = stored_files()

    version = upload_skops(uploader=engineer, model_name=model.name, skops_path=demo_models["sklearn_skops"])
    response = _dataset_upload(
        engineer, [(text, "positive" if i % 2 == 0 else "negative") for i, text in enumerate(TEXTS)], "s3-rows"
    )
    assert response.status_code == 201, response.json()
    dataset = Dataset.objects.get(pk=response.json()["id"])

    # In the bucket, under the digest, and the object hashes to it.
    bucket = s3_storage.client()
    stored = bucket.get_object(Bucket=s3_storage.bucket, Key=version.artifact_key)["Body"].read()
    assert _sha256(stored) == version.artifact_sha256 == _sha256(demo_models["sklearn_skops"].read_bytes())
    assert (
        _sha256(bucket.get_object(Bucket=s3_storage.bucket, Key=dataset.storage_key)["Body"].read()) == dataset.sha256
    )
    assert version.labels == ["negative", "positive"]  # the load check ran on the uploaded bytes
    # Nothing went to the local artifact folder: the store is the bucket.
    assert not any(path.startswith(str(settings.ARTIFACT_ROOT)) for path in stored_files() - local_before)

    # Warm-up: the worker fetched the artifact into its own cache, verified.
    log = remote_worker.log
    wait_for(lambda: "warmed zh-s3 v1" in log("remote"), timeout=60, what=f"warm-up\n{log('remote')[-3000:]}")
    assert (cache_of(remote_worker.data_dir) / version.artifact_sha256).is_dir()

    # An explanation report over the dataset, computed by the worker from the bucket.
    response = api_client_for(engineer).post(
        f"/api/v1/models/{model.name}/versions/{version.number}/explanations/",
        {"method": "shap", "dataset": dataset.pk, "params": {"max_evals": 40, "chunk_size": 2}},
        format="json",
    )
    assert response.status_code == 202, response.json()
    report_id = response.json()["id"]
    state = wait_for(lambda: finished(report_id), timeout=120, what=f"report {report_id}\n{log('remote')[-3000:]}")
    assert state["status"] == "succeeded", state["error"]
    assert len(state["results"]["texts"]) == len(TEXTS)
    assert (cache_of(remote_worker.data_dir) / "datasets" / dataset.sha256).is_file()

    # The dossier names the artifact by the digest the bucket holds.
    dossier = page_client_for(engineer).get(f"/models/{model.name}/versions/{version.number}/dossier.json")
    assert dossier.status_code == 200
    assert version.artifact_sha256 in dossier.content.decode()


@pytest.mark.usefixtures("committed_db")
def test_serving_and_a_rollout_analysis_on_another_host_read_the_bucket(
    s3_storage, remote_worker, served_model, engineer, demo_models, serving_env
):
    settings.GLASSBOX_ROLLOUT_MIN_INTERVAL_SECONDS = 1
    v1, v2 = served_model.versions.order_by("number")
    deploy(served_model, v1, actor=engineer)
    rollout = services.rollout_start(
        actor=engineer,
        model=served_model,
        candidate=v2,
        steps=[{"weight": 50, "bake_seconds": 600}, {"weight": 100, "bake_seconds": 600}],
        thresholds={"min_requests": 5, "max_latency_p95_ratio": 50.0, "max_label_divergence": 0.5},
        analysis_interval_seconds=1,
    )
    routing.warm_versions(served_model)

    # Serving in this process: both versions came from the bucket into its empty cache.
    # One routing key per two texts: 16 keys at 50 % all landing on one version is a 1-in-32,768 event
    # (with the default 16 texts per key there were 2 keys, and they landed on one version once in a full run).
    answers = send_traffic(served_model, TEXTS * 8, actor=engineer, batch=2)
    assert {answer["version"] for answer in answers} == {1, 2}
    assert {p.name for p in settings.ARTIFACT_CACHE_DIR.iterdir() if not p.name.startswith(".")} >= {
        v1.artifact_sha256,
        v2.artifact_sha256,
    }
    response = api_client_for(engineer).post(
        f"/api/v1/models/{served_model.name}/predict/", {"inputs": TEXTS[:2]}, format="json"
    )
    assert response.status_code == 200, response.json()

    from rollouts.tasks import analyse_rollout

    wait_for(lambda: services.selectors.rollout_is_due(Rollout.objects.get(pk=rollout.pk), now=_now()), timeout=10)
    analyse_rollout.delay(rollout.pk)
    log = remote_worker.log
    run = wait_for(
        lambda: AnalysisRun.objects.filter(rollout=rollout).first(),
        timeout=60,
        what=f"an analysis run\n{log('remote')[-3000:]}",
    )
    assert run.verdict == "successful", run.measurements
    assert "rollouts.tasks.analyse_rollout" in log("remote")


def _now():
    from django.utils import timezone

    return timezone.now()


@pytest.mark.usefixtures("committed_db")
def test_a_corrupted_object_is_refused_by_digest_with_an_alert_and_an_audit_event(
    s3_storage, remote_worker, engineer, demo_models, resaved_demo_skops, serving_env, settings, tmp_path
):
    model = RegisteredModelFactory(name="zh-tampered", created_by=engineer)
    version = upload_skops(uploader=engineer, model_name=model.name, skops_path=demo_models["sklearn_skops"])
    response = _dataset_upload(engineer, [(text, "positive") for text in TEXTS], "tampered-rows")
    dataset = Dataset.objects.get(pk=response.json()["id"])
    bucket = s3_storage.client()
    original = bucket.get_object(Bucket=s3_storage.bucket, Key=version.artifact_key)["Body"].read()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0xFF
    try:
        bucket.put_object(Bucket=s3_storage.bucket, Key=version.artifact_key, Body=bytes(tampered))
        bucket.put_object(Bucket=s3_storage.bucket, Key=dataset.storage_key, Body=b"text,label\nchanged,positive\n")

        # A process with a fresh cache refuses it: never serves.
        _deployable(version, engineer)
        settings.ARTIFACT_CACHE_DIR = tmp_path / "fresh-cache"
        response = api_client_for(engineer).post(
            f"/api/v1/models/{model.name}/predict/", {"inputs": TEXTS[:1]}, format="json"
        )
        assert response.status_code == 503, response.json()
        assert response.json()["code"] == "artifact_integrity" and "SHA-256" in response.json()["detail"]
        assert not (settings.ARTIFACT_CACHE_DIR / version.artifact_sha256).exists()
        alert = Alert.objects.get(version=version, metric=Alert.ARTIFACT_INTEGRITY, cleared_at__isnull=True)
        assert alert.severity == Alert.Severity.CRITICAL and version.artifact_key in alert.message
        # Written by this process (the worker's warm-up may have refused it too, if it came second).
        refused = AuditEvent.objects.get(
            action="artifact.refused", object_type="registry.modelversion", detail__pid=os.getpid()
        )
        assert refused.object_id == str(version.pk) and refused.detail["registered_sha256"] == version.artifact_sha256
        assert refused.detail["found_sha256"] == _sha256(bytes(tampered))
        assert AuditEvent.objects.filter(action="monitor.alert_raised", object_id=str(alert.pk)).exists()

        # The worker on the other host refuses the tampered dataset: the report fails saying why.
        other = RegisteredModelFactory(name="zh-clean", created_by=engineer)
        clean = upload_skops(uploader=engineer, model_name=other.name, skops_path=resaved_demo_skops)
        response = api_client_for(engineer).post(
            f"/api/v1/models/{other.name}/versions/{clean.number}/explanations/",
            {"method": "shap", "dataset": dataset.pk, "params": {"max_evals": 40}},
            format="json",
        )
        assert response.status_code == 202, response.json()
        state = wait_for(lambda: finished(response.json()["id"]), timeout=90, what="the report to fail")
        assert state["status"] == "failed" and "SHA-256" in state["error"], state["error"]
        assert AuditEvent.objects.filter(action="artifact.refused", object_type="registry.dataset").exists()

        # Restored from a backup: the next fetch verifies, serves, and clears the alert.
        bucket.put_object(Bucket=s3_storage.bucket, Key=version.artifact_key, Body=original)
        artifacts._recently_refused.clear()  # this process would wait a minute before fetching it again
        response = api_client_for(engineer).post(
            f"/api/v1/models/{model.name}/predict/", {"inputs": TEXTS[:1]}, format="json"
        )
        assert response.status_code == 200, response.json()
        alert.refresh_from_db()
        assert alert.cleared_at is not None
        assert AuditEvent.objects.filter(action="monitor.alert_cleared", object_id=str(alert.pk)).exists()
    finally:
        bucket.put_object(Bucket=s3_storage.bucket, Key=version.artifact_key, Body=original)


def _deployable(version: ModelVersion, engineer) -> None:
    """Approve and deploy the version (rows only: deploying loads nothing)."""
    from governance import roles
    from tests.conftest import UserFactory, approve
    from tests.rollouts.rollout_helpers import deploy_first

    approve(
        version,
        submitter=UserFactory(username="eli", role=roles.ENGINEER),
        reviewer=UserFactory(username="rita", role=roles.REVIEWER),
    )
    deploy_first(version.model, actor=engineer)
