"""Faults of the artifact store, on a real S3 server (moto_server): a
missing bucket and refused credentials are reported by /readyz and stop a
worker from starting; an unreachable store answers an upload with 503 and
leaves nothing behind; a report whose worker loses the store retries, then
fails saying why."""

import io
import subprocess
import sys

import pytest
from django.conf import settings

from governance.models import AuditEvent
from registry.models import Dataset, ModelVersion
from tests.conftest import RegisteredModelFactory, WorkerPool, api_client_for, service_env, stored_files, wait_for
from tests.explanations.reporting import finished
from tests.storage.conftest import free_port, start_s3_server, stop_s3_server


@pytest.fixture
def fresh_readiness():
    from glassbox import views

    views._storage_checked.clear()
    yield
    views._storage_checked.clear()


@pytest.mark.django_db
def test_readyz_reports_a_missing_bucket_and_refused_credentials(client, settings, s3_server, fresh_readiness):
    settings.STORAGES = {**settings.STORAGES, "artifacts": s3_server.storage_backend()}
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json()["storage"] == "ok", response.json()

    settings.STORAGES = {**settings.STORAGES, "artifacts": s3_server.storage_backend(bucket_name="no-such-bucket")}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "ok",
        "broker": "ok",
        "storage": "error: no_such_bucket",
    }

    wrong_key = s3_server.storage_backend(secret_key="not-the-secret")
    settings.STORAGES = {**settings.STORAGES, "artifacts": wrong_key}
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["storage"] == "error: access_denied"

    closed = s3_server.storage_backend(endpoint_url=f"http://127.0.0.1:{free_port()}")
    settings.STORAGES = {**settings.STORAGES, "artifacts": closed}
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json()["storage"] == "error: unreachable"


@pytest.mark.django_db
def test_a_worker_refuses_to_start_without_its_bucket_or_with_wrong_credentials(s3_server, tmp_path):
    command = [sys.executable, "-m", "celery", "-A", "glassbox", "worker", "--concurrency=1", "--without-mingle"]
    cases = {
        "no bucket": (s3_server.env(ARTIFACT_S3_BUCKET="no-such-bucket"), "bucket does not exist"),
        "wrong key": (s3_server.env(AWS_SECRET_ACCESS_KEY="not-the-secret"), "refused our credentials"),
    }
    started = {
        name: subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=service_env(GLASSBOX_DATA_DIR=str(tmp_path / name.replace(" ", "-")), **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, (env, _) in cases.items()
    }
    for name, process in started.items():
        try:
            output, _ = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"the worker with {name} kept running:\n{process.communicate()[0][-3000:]}")
        assert process.returncode != 0, output[-3000:]
        assert "the worker cannot start" in output and cases[name][1] in output, output[-3000:]
        assert "ready." not in output


@pytest.mark.django_db
def test_an_unreachable_store_answers_an_upload_with_503_and_keeps_nothing(settings, s3_storage, engineer, demo_models):
    model = RegisteredModelFactory(name="zh-outage", created_by=engineer)
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": s3_storage.storage_backend(endpoint_url=f"http://127.0.0.1:{free_port()}"),
    }
    keys_before, files_before = s3_storage.keys(), stored_files()
    events_before = AuditEvent.objects.count()
    client = api_client_for(engineer)

    handle = io.BytesIO(demo_models["sklearn_skops"].read_bytes())
    handle.name = "model.skops"
    response = client.post(
        f"/api/v1/models/{model.name}/versions/", {"artifact": handle, "flavor": "sklearn"}, format="multipart"
    )
    assert response.status_code == 503, response.json()
    assert response.json()["code"] == "storage_unavailable" and "cannot be reached" in response.json()["detail"]

    handle = io.BytesIO(b"text,label\nhello,positive\n")
    handle.name = "rows.csv"
    response = client.post("/api/v1/datasets/", {"file": handle, "name": "outage-rows"}, format="multipart")
    assert response.status_code == 503 and response.json()["code"] == "storage_unavailable", response.json()

    assert not ModelVersion.objects.filter(model=model).exists() and not Dataset.objects.exists()
    assert AuditEvent.objects.count() == events_before
    assert s3_storage.keys() == keys_before
    assert stored_files() == files_before  # no upload, staging folder or cache entry left


@pytest.mark.worker
@pytest.mark.usefixtures("committed_db")
def test_a_report_whose_worker_loses_the_store_retries_then_fails_saying_why(
    s3_storage, engineer, demo_models, tmp_path, serving_env
):
    from glassbox.celery import app
    from tests.conftest import upload_skops

    # The worker's store: a server of its own, stopped once the worker runs.
    doomed = start_s3_server(with_credentials=False)
    app.control.purge()
    pool = WorkerPool(tmp_path)
    try:
        pool.start("cut-off", env=doomed.env(GLASSBOX_DATA_DIR=str(tmp_path / "cut-off-host")))
        stop_s3_server(doomed)
        model = RegisteredModelFactory(name="zh-cut-off", created_by=engineer)
        version = upload_skops(uploader=engineer, model_name=model.name, skops_path=demo_models["sklearn_skops"])
        response = api_client_for(engineer).post(
            f"/api/v1/models/{model.name}/versions/{version.number}/explanations/",
            {"method": "shap", "texts": ["很好", "太差了"], "params": {"max_evals": 40}},
            format="json",
        )
        assert response.status_code == 202, response.json()
        report_id = response.json()["id"]
        state = wait_for(
            lambda: finished(report_id), timeout=120, what=f"the report to fail\n{pool.log('cut-off')[-3000:]}"
        )
        # The chunk (which loads the model from the store) was retried, then the report failed saying why.
        assert state["status"] == "failed"
        assert state["error"] == "run_chunk failed: The artifact store cannot be reached.", state["error"]
        log = pool.log("cut-off")
        retries = [
            line for line in log.splitlines() if "explanations.tasks.run_chunk" in line and "retry: Retry" in line
        ]
        assert len(retries) == 2, log[-3000:]
    finally:
        pool.stop_all()
        stop_s3_server(doomed)
