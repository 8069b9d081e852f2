"""A new version is loaded by a real worker process right after its upload
commits (the task is enqueued with transaction.on_commit)."""

import io

from governance import roles
from registry.models import ModelVersion
from tests.conftest import RegisteredModelFactory, UserFactory, api_client_for, wait_for


def test_worker_loads_a_new_version_after_upload(worker_process, demo_models):
    engineer = UserFactory(username="erin", role=roles.ENGINEER)
    RegisteredModelFactory(name="warm-me", created_by=engineer)
    handle = io.BytesIO(demo_models["bert_zip"].read_bytes())
    handle.name = "bert.zip"
    response = api_client_for(engineer).post(
        "/api/v1/models/warm-me/versions/", {"artifact": handle, "flavor": "transformers"}, format="multipart"
    )
    assert response.status_code == 201, response.json()
    version = ModelVersion.objects.get(model__name="warm-me")
    log = wait_for(lambda: "warmed warm-me v1 (2 labels)" in worker_process() and worker_process(), what="the worker")
    assert "registry.tasks.warm_version" in log and "succeeded" in log
    assert version.status == "registered"
