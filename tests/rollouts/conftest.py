"""Fixtures shared by the rollout and serving tests (the approved versions
they start from, `served_model`, live in tests/conftest.py)."""

import csv

import pytest

from tests.rollouts.rollout_helpers import deploy, upload_dataset


@pytest.fixture
def referenced_model(served_model, engineer, demo_models, serving_env):
    """zh-serving with v1 deployed, its reference the Chinese held-out set."""
    from rollouts import services

    dataset = upload_dataset(uploader=engineer, path=demo_models["holdout_csv"])
    version = served_model.versions.get(number=1)
    services.version_reference_set(actor=engineer, version=version, dataset=dataset)
    deploy(served_model, version, actor=engineer)
    return served_model


@pytest.fixture
def holdout_texts(demo_models) -> list[str]:
    """The demo held-out review texts (the traffic the rollout tests send)."""
    with open(demo_models["holdout_csv"], encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)]
