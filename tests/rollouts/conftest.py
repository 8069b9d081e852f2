"""Shared fixtures of the rollout and serving tests: a model with real,
approved versions (the quick TF-IDF demo pipeline: it loads in milliseconds)
that went through the same upload and review services as everyone's."""

import io

import pytest

from governance import services as review_services
from registry.models import ModelVersion, RegisteredModel
from rollouts import prediction_log, routing, serving_cache
from tests.conftest import RegisteredModelFactory, api_client_for


def upload_skops(*, uploader, model_name: str, skops_path, **card) -> ModelVersion:
    """Upload a .skops file as a new version through the API."""
    handle = io.BytesIO(skops_path.read_bytes())
    handle.name = skops_path.name
    response = api_client_for(uploader).post(
        f"/api/v1/models/{model_name}/versions/",
        {"artifact": handle, "flavor": "sklearn", **card},
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    return ModelVersion.objects.get(model__name=model_name, number=response.json()["version"])


def approve(version: ModelVersion, *, submitter, reviewer) -> ModelVersion:
    """Take a registered version through review to approved (low risk: one approval)."""
    review_services.review_submit(actor=submitter, version=version)
    review_services.decision_record(actor=reviewer, version=version, decision="approve", comment="looks fine")
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.APPROVED
    return version


def resaved_skops(skops_path, folder):
    """The same pipeline saved again with zip compression: other bytes (a
    registry refuses an artifact it already holds), the same predictions."""
    import zipfile

    import skops.io

    from registry.predictors import load_predictor

    copy = folder / f"resaved-{skops_path.name}"
    skops.io.dump(load_predictor(skops_path, "sklearn").model, copy, compression=zipfile.ZIP_DEFLATED)
    return copy


@pytest.fixture(scope="session")
def resaved_demo_skops(demo_models, tmp_path_factory):
    """The demo pipeline saved again once per session: the same bytes in
    every test, so the registry's per-digest load-check memo applies."""
    return resaved_skops(demo_models["sklearn_skops"], tmp_path_factory.mktemp("resaved"))


@pytest.fixture
def served_model(engineer, engineer2, reviewer, demo_models, resaved_demo_skops) -> RegisteredModel:
    """`zh-serving` (low risk) with two approved versions of the demo TF-IDF
    pipeline, v1 and v2 (the same pipeline saved twice), neither deployed yet."""
    model = RegisteredModelFactory(name="zh-serving", created_by=engineer)
    for path in (demo_models["sklearn_skops"], resaved_demo_skops):
        version = upload_skops(uploader=engineer, model_name=model.name, skops_path=path)
        approve(version, submitter=engineer2, reviewer=reviewer)
    return model


@pytest.fixture
def serving_env(settings):
    """No background log thread (rows are written by flush_prediction_logs()
    in the test's own transaction) and no routing cached from other tests."""
    settings.GLASSBOX_PREDICTION_LOG_FLUSH_SECONDS = 0
    prediction_log.reset_writer()
    routing.clear_routing_cache()
    serving_cache.clear_permission_cache()
    yield
    prediction_log.reset_writer()
    routing.clear_routing_cache()
    serving_cache.clear_permission_cache()
