"""Uploading versions over REST: both flavors end in a loaded predictor, and
every bad input is refused with a JSON detail, no row and no file."""

import hashlib
import io
import json
from pathlib import Path

import pytest

from governance.models import AuditEvent
from registry.models import ModelVersion
from registry.selectors import version_predictor
from tests.conftest import RegisteredModelFactory, make_tar_gz, make_zip, stored_files, unpack_zip


def upload(client, model_name, artifact: bytes, filename: str, flavor: str, **fields):
    return client.post(
        f"/api/v1/models/{model_name}/versions/",
        {"artifact": _named(artifact, filename), "flavor": flavor, **fields},
        format="multipart",
    )


def _named(data: bytes, filename: str):
    handle = io.BytesIO(data)
    handle.name = filename
    return handle


@pytest.mark.django_db
def test_transformers_upload_ends_in_a_predictor_that_classifies_chinese(api, engineer, sentiment_model, demo_models):
    response = upload(
        api(engineer),
        "zh-sentiment",
        demo_models["bert_zip"].read_bytes(),
        "bert.zip",
        "transformers",
        metrics=json.dumps({"accuracy": 0.81}),
        intended_use="评论情感分类",
        limitations="only reviews",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["version"] == 1 and body["status"] == "registered"
    assert body["labels"] == ["negative", "positive"]
    assert body["metrics"] == {"accuracy": 0.81}
    assert body["card"]["intended_use"] == "评论情感分类"
    assert len(body["sha256"]) == 64 and body["size"] == demo_models["bert_zip"].stat().st_size
    assert "config.json" in {f["name"] for f in body["files"]}

    version = ModelVersion.objects.get()
    predictor = version_predictor(version)
    probabilities = predictor.predict_proba(["这本书写得太好了，非常喜欢！", "质量很差，完全不值这个价。"])
    assert probabilities.shape == (2, 2)
    assert probabilities.sum(axis=1) == pytest.approx([1.0, 1.0])
    event = AuditEvent.objects.get(action="version.create")
    assert event.outcome == "ok" and event.version_number == 1 and event.actor == engineer


@pytest.mark.django_db
def test_sklearn_skops_upload_ends_in_a_predictor(api, engineer, sentiment_model, demo_models):
    response = upload(api(engineer), "zh-sentiment", demo_models["sklearn_skops"].read_bytes(), "m.skops", "sklearn")
    assert response.status_code == 201, response.json()
    assert response.json()["labels"] == ["negative", "positive"]
    predictor = version_predictor(ModelVersion.objects.get())
    labels = [predictor.labels[i] for i in predictor.predict_proba(["非常好，很满意", "太差了，很失望"]).argmax(axis=1)]
    assert labels == ["positive", "negative"]


@pytest.mark.django_db
def test_tar_gz_of_a_transformers_model_is_accepted(api, engineer, sentiment_model, demo_models):
    data = make_tar_gz(unpack_zip(demo_models["bert_zip"].read_bytes()))
    response = upload(api(engineer), "zh-sentiment", data, "bert.tar.gz", "transformers")
    assert response.status_code == 201, response.json()
    assert response.json()["artifact_format"] == "tar.gz"


def _bert_members(demo_models) -> dict[str, bytes]:
    return unpack_zip(demo_models["bert_zip"].read_bytes())


def _without(members, predicate):
    return {name: data for name, data in members.items() if not predicate(name)}


BAD_TRANSFORMERS_ARCHIVES = {
    "traversal": lambda m: make_zip({**m, "../../evil.py": b"print(1)"}),
    "absolute path": lambda m: make_zip({**m, "/tmp/evil.py": b"print(1)"}),
    "missing config.json": lambda m: make_zip(_without(m, lambda n: n == "config.json")),
    "missing weights": lambda m: make_zip(_without(m, lambda n: n.endswith(".safetensors"))),
    "pickle weights beside safetensors": lambda m: make_zip({**m, "pytorch_model.bin": b"\x80\x04K\x01."}),
    "pickle payload named safetensors": lambda m: make_zip(
        {**_without(m, lambda n: n.endswith(".safetensors")), "model.safetensors": b"\x80\x04cos\nsystem\n."}
    ),
    "truncated weights": lambda m: make_zip(
        {n: (d[: len(d) // 2] if n.endswith(".safetensors") else d) for n, d in m.items()}
    ),
    "config without labels": lambda m: make_zip({**m, "config.json": b'{"model_type": "bert"}'}),
    "not an archive": lambda m: b"hello, this is not an archive at all" * 10,
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", sorted(BAD_TRANSFORMERS_ARCHIVES))
def test_bad_transformers_artifact_is_refused_and_leaves_nothing(api, engineer, sentiment_model, demo_models, case):
    data = BAD_TRANSFORMERS_ARCHIVES[case](_bert_members(demo_models))
    before = stored_files()
    response = upload(api(engineer), "zh-sentiment", data, "bad.zip", "transformers")
    assert response.status_code == 400, (case, response.json())
    assert response.json()["detail"]
    assert not ModelVersion.objects.exists()
    assert stored_files() == before
    refusal = AuditEvent.objects.get(action="version.create")
    assert refusal.outcome == "denied" and refusal.detail["reason"] == response.json()["detail"]


@pytest.mark.django_db
def test_wrong_flavor_is_refused(api, engineer, sentiment_model, demo_models):
    response = upload(api(engineer), "zh-sentiment", demo_models["bert_zip"].read_bytes(), "bert.zip", "sklearn")
    assert response.status_code == 400
    assert ".skops" in response.json()["detail"]
    response = upload(api(engineer), "zh-sentiment", demo_models["bert_zip"].read_bytes(), "bert.zip", "onnx")
    assert response.status_code == 400
    assert "flavor" in response.json()["detail"]
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_skops_file_asking_for_untrusted_types_is_refused(api, engineer, sentiment_model, tmp_path):
    import skops.io
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    hostile = Pipeline([("run", FunctionTransformer(func=eval))])
    path = tmp_path / "hostile.skops"
    skops.io.dump(hostile, path)
    response = upload(api(engineer), "zh-sentiment", path.read_bytes(), "hostile.skops", "sklearn")
    assert response.status_code == 400
    assert "eval" in response.json()["detail"] or "untrusted" in response.json()["detail"].lower()
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_upload_over_the_size_limit_is_refused(api, engineer, sentiment_model, demo_models, settings):
    settings.GLASSBOX_UPLOAD_LIMITS = {**settings.GLASSBOX_UPLOAD_LIMITS, "max_upload_bytes": 100_000}
    before = stored_files()
    data = demo_models["bert_zip"].read_bytes()
    assert len(data) > 200_000
    response = upload(api(engineer), "zh-sentiment", data, "bert.zip", "transformers")
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert not ModelVersion.objects.exists()
    assert stored_files() == before


@pytest.mark.django_db
def test_same_artifact_twice_is_a_conflict(api, engineer, sentiment_model, demo_models):
    data = demo_models["sklearn_skops"].read_bytes()
    assert upload(api(engineer), "zh-sentiment", data, "m.skops", "sklearn").status_code == 201
    response = upload(api(engineer), "zh-sentiment", data, "m.skops", "sklearn")
    assert response.status_code == 409
    assert "already version 1" in response.json()["detail"]


@pytest.mark.django_db
def test_bad_metrics_are_refused(api, engineer, sentiment_model, demo_models):
    data = demo_models["sklearn_skops"].read_bytes()
    for metrics in ["{not json", json.dumps(["a"]), json.dumps({"acc": "high"})]:
        response = upload(api(engineer), "zh-sentiment", data, "m.skops", "sklearn", metrics=metrics)
        assert response.status_code == 400, metrics
        assert "metric" in response.json()["detail"].lower() or "json" in response.json()["detail"].lower()
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_reviewer_and_manager_cannot_upload(api, reviewer, manager, sentiment_model, demo_models):
    data = demo_models["sklearn_skops"].read_bytes()
    for user in (reviewer, manager):
        response = upload(api(user), "zh-sentiment", data, "m.skops", "sklearn")
        assert response.status_code == 403
    assert not ModelVersion.objects.exists()
    assert AuditEvent.objects.filter(action="version.create", outcome="denied").count() == 2


@pytest.mark.django_db
def test_upload_to_unknown_model_is_404(api, engineer, demo_models):
    response = upload(api(engineer), "no-such-model", b"x", "m.skops", "sklearn")
    assert response.status_code == 404
    assert response.json()["detail"] == "No model named 'no-such-model'."


@pytest.mark.django_db
def test_version_detail_shows_card_digest_and_uploader(api, engineer, reviewer, sentiment_model, demo_models):
    upload(
        api(engineer),
        "zh-sentiment",
        demo_models["sklearn_skops"].read_bytes(),
        "m.skops",
        "sklearn",
        description="基线模型",
    )
    body = api(reviewer).get("/api/v1/models/zh-sentiment/versions/1/").json()
    assert body["created_by"] == "erin" and body["card"]["description"] == "基线模型"
    import hashlib

    assert body["sha256"] == hashlib.sha256(demo_models["sklearn_skops"].read_bytes()).hexdigest()
    assert api(reviewer).get("/api/v1/models/zh-sentiment/versions/9/").status_code == 404
    stored = Path(__import__("django.conf").conf.settings.ARTIFACT_ROOT) / "models" / body["sha256"][:2]
    assert (stored / f"{body['sha256']}.zip").exists()


def test_a_passed_load_check_is_remembered_by_digest_and_a_failed_one_is_not(api, engineer, demo_models, tmp_path):
    from registry import artifacts

    RegisteredModelFactory(name="memo-a", created_by=engineer)
    RegisteredModelFactory(name="memo-b", created_by=engineer)
    skops_bytes = demo_models["sklearn_skops"].read_bytes()
    digest = hashlib.sha256(skops_bytes).hexdigest()
    artifacts._passed_load_checks.clear()

    for name in ("memo-a", "memo-b"):  # the second upload of the same bytes skips the child process
        handle = io.BytesIO(skops_bytes)
        handle.name = "model.skops"
        response = api(engineer).post(
            f"/api/v1/models/{name}/versions/", {"artifact": handle, "flavor": "sklearn"}, format="multipart"
        )
        assert response.status_code == 201, response.json()
        assert response.json()["labels"] == ["negative", "positive"]
    assert artifacts._passed_load_checks[(digest, "sklearn")] == (["negative", "positive"], None)

    broken = make_zip({"config.json": b'{"id2label": {"0": "a"}}', "model.safetensors": b"not tensors"})
    handle = io.BytesIO(broken)
    handle.name = "broken.zip"
    response = api(engineer).post(
        "/api/v1/models/memo-a/versions/", {"artifact": handle, "flavor": "transformers"}, format="multipart"
    )
    assert response.status_code == 400
    assert (hashlib.sha256(broken).hexdigest(), "transformers") not in artifacts._passed_load_checks
