"""The ONNX Runtime backend: exported and checked at warm time, serving only
where it agrees with torch, torch serving (with the reason on the version)
everywhere else. The rest of the suite runs with GLASSBOX_INFERENCE_BACKEND=torch;
these tests switch it to auto for themselves."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from governance.models import AuditEvent
from registry.models import ModelVersion
from registry.onnx_export import MODEL_FILE
from registry.predictors import cached_predictor_keys, clear_predictor_cache, get_predictor
from registry.selectors import onnx_export_dir, version_predictor
from registry.tasks import warm_version
from tests.conftest import api_client_for
from tests.explanations.reporting import uploaded_bert


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    # Shared by the module's tests: the demo model is exported once, by digest.
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(autouse=True)
def _onnx_on(settings, onnx_cache):
    settings.GLASSBOX_INFERENCE_BACKEND = "auto"
    settings.GLASSBOX_DEVICE = "cpu"
    settings.ONNX_CACHE_DIR = onnx_cache
    clear_predictor_cache()
    yield
    clear_predictor_cache()


def _holdout_texts(demo_models, n: int = 60) -> list[str]:
    with open(demo_models["holdout_csv"], encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)][:n]


def _torch_predictor(version: ModelVersion):
    from registry.artifacts import local_model_path

    path = local_model_path(sha256=version.artifact_sha256, artifact_key=version.artifact_key, flavor=version.flavor)
    return get_predictor(version.artifact_sha256, path, version.flavor, backend="torch", device="cpu")


def test_onnx_agrees_with_torch_on_the_demo_model_and_serves_it(engineer, demo_models):
    version = uploaded_bert(uploader=engineer, demo_models=demo_models)
    assert version.inference_backend == ""  # the upload itself exports nothing

    result = warm_version(version.pk)

    version.refresh_from_db()
    assert result["backend"] == "onnx" and result["device"] == "cpu"
    assert version.inference_backend == ModelVersion.InferenceBackend.ONNX
    assert version.inference_backend_reason.startswith("ONNX Runtime serves on cpu: max |p_onnx − p_torch| = ")
    assert "≤ 1e-04 on 202 texts, same top label on every text" in version.inference_backend_reason
    assert (onnx_export_dir(version.artifact_sha256) / MODEL_FILE).is_file()

    served = version_predictor(version)
    assert served.backend == "onnx"
    texts = _holdout_texts(demo_models)
    onnx_probs = served.predict_proba(texts)
    torch_probs = _torch_predictor(version).predict_proba(texts)
    assert np.abs(onnx_probs - torch_probs).max() <= 1e-4
    assert (onnx_probs.argmax(axis=1) == torch_probs.argmax(axis=1)).all()

    event = AuditEvent.objects.get(action="version.inference_backend", object_id=str(version.pk))
    assert event.actor_id is None
    assert event.changes["after"] == {"inference_backend": "onnx"}
    assert event.detail["texts"] == 202 and event.detail["max_difference"] <= 1e-4

    body = api_client_for(engineer).get(f"/api/v1/models/{version.model.name}/versions/{version.number}/").json()
    assert body["inference_backend"] == "onnx"
    assert body["inference_backend_reason"] == version.inference_backend_reason

    # Warming again changes nothing and records nothing.
    warm_version(version.pk)
    assert AuditEvent.objects.filter(action="version.inference_backend").count() == 1


def test_onnx_outside_the_tolerance_is_refused_and_torch_serves_with_the_reason(
    engineer, demo_models, settings, client
):
    # The export is fine; a tolerance of 1e-12 turns float32 rounding
    # differences (about 1e-8 here) into a refusal, as a real mismatch would be.
    settings.GLASSBOX_ONNX_TOLERANCE = 1e-12
    version = uploaded_bert(uploader=engineer, demo_models=demo_models)

    result = warm_version(version.pk)

    version.refresh_from_db()
    assert result["backend"] == "torch"
    assert version.inference_backend == ModelVersion.InferenceBackend.TORCH
    assert version.inference_backend_reason.startswith("torch serves: ONNX Runtime refused, max |p_onnx − p_torch| = ")
    assert "> 1e-12 on 202 texts" in version.inference_backend_reason
    assert version_predictor(version).backend == "torch"
    client.force_login(engineer)
    response = client.get(f"/models/{version.model.name}/versions/{version.number}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Inference" in page and "torch serves: ONNX Runtime refused" in page


def test_backend_torch_exports_nothing(engineer, demo_models, settings, client, tmp_path):
    settings.GLASSBOX_INFERENCE_BACKEND = "torch"
    settings.ONNX_CACHE_DIR = tmp_path
    version = uploaded_bert(uploader=engineer, demo_models=demo_models, name="torch-only")
    assert warm_version(version.pk)["backend"] == "torch"
    version.refresh_from_db()
    assert version.inference_backend == ""
    assert not onnx_export_dir(version.artifact_sha256).exists()
    client.force_login(engineer)
    page = client.get(f"/models/{version.model.name}/versions/{version.number}/").content.decode()
    assert "no ONNX check has run for this version" in page


def test_predictor_cache_key_holds_digest_backend_and_device(engineer, demo_models):
    version = uploaded_bert(uploader=engineer, demo_models=demo_models)
    warm_version(version.pk)
    version.refresh_from_db()
    onnx = version_predictor(version)
    torch = _torch_predictor(version)
    assert onnx is not torch
    assert (onnx.backend, torch.backend) == ("onnx", "torch")
    keys = cached_predictor_keys()
    assert (version.artifact_sha256, "onnx", "cpu") in keys
    assert (version.artifact_sha256, "torch", "cpu") in keys
    assert version_predictor(version) is onnx


def test_a_broken_export_never_fails_a_prediction(engineer, demo_models):
    version = uploaded_bert(uploader=engineer, demo_models=demo_models)
    warm_version(version.pk)
    version.refresh_from_db()
    assert version.inference_backend == "onnx"
    # The graph on disk is damaged after the check: loading it fails, torch answers.
    (onnx_export_dir(version.artifact_sha256) / MODEL_FILE).write_bytes(b"not an onnx graph")
    clear_predictor_cache()
    try:
        predictor = version_predictor(version)
        assert predictor.backend == "torch"
        assert predictor.predict_proba(["很好"]).shape == (1, 2)
    finally:
        # The module's later tests export afresh.
        import shutil

        shutil.rmtree(onnx_export_dir(version.artifact_sha256))


@pytest.fixture
def onnx_worker_env(monkeypatch, tmp_path):
    # Set before worker_process starts the worker, which inherits the environment.
    monkeypatch.setenv("GLASSBOX_INFERENCE_BACKEND", "auto")
    monkeypatch.setenv("GLASSBOX_DEVICE", "cpu")
    monkeypatch.setenv("ONNX_CACHE_DIR", str(tmp_path / "worker-onnx-cache"))
    return tmp_path / "worker-onnx-cache"


def test_a_worker_exports_and_checks_a_new_version_after_upload(onnx_worker_env, worker_process, demo_models):
    from governance import roles
    from tests.conftest import UserFactory, wait_for

    engineer = UserFactory(username="erin", role=roles.ENGINEER)
    version = uploaded_bert(uploader=engineer, demo_models=demo_models, name="warm-onnx")

    def decided():
        version.refresh_from_db()
        return version.inference_backend

    assert wait_for(decided, timeout=300, what="the worker's backend check") == "onnx", worker_process()[-3000:]
    assert "202 texts, same top label on every text" in version.inference_backend_reason
    assert (onnx_worker_env / version.artifact_sha256 / MODEL_FILE).is_file()
    log = wait_for(lambda: "warmed warm-onnx v1 (2 labels) with onnx on cpu" in worker_process() and worker_process())
    assert "registry.tasks.warm_version" in log
