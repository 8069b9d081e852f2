"""Shared fixtures of the rollout and serving tests: a model with real,
approved versions (the quick TF-IDF demo pipeline: it loads in milliseconds)
that went through the same upload and review services as everyone's."""

import io

import pytest

from governance import services as review_services
from registry.models import ModelVersion, RegisteredModel
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


@pytest.fixture
def served_model(engineer, engineer2, reviewer, demo_models) -> RegisteredModel:
    """`zh-serving` (low risk) with two approved versions of the demo TF-IDF
    pipeline, v1 and v2, neither deployed yet."""
    model = RegisteredModelFactory(name="zh-serving", created_by=engineer)
    for _ in range(2):
        version = upload_skops(uploader=engineer, model_name=model.name, skops_path=demo_models["sklearn_skops"])
        approve(version, submitter=engineer2, reviewer=reviewer)
    return model
