"""MLflow model directories uploaded as-is: a transformers flavor with
safetensors weights and a sklearn flavor saved with skops load and predict
like the plain upload of the same weights, their MLmodel facts land on the
version's card, and every pickle, code or hostile-YAML variant is refused with
a 400 naming the fix, leaving no row, no file and a `denied` audit event.

The directories are built here the way MLflow writes them (MLflow 2.x/3.x
transformers: MLmodel + model/ + components/tokenizer/; MLflow 3.x sklearn:
MLmodel + model.skops), from the quick demo models."""

import io
import shutil

import numpy as np
import pytest

from governance.models import AuditEvent
from registry.artifacts import cache_dir, local_model_path
from registry.models import ModelVersion
from registry.predictors import load_predictor
from registry.selectors import version_predictor
from tests.conftest import RegisteredModelFactory, make_tar_gz, make_zip, page_client_for, stored_files, unpack_zip
from tests.registry.mlflow_layouts import (
    ENVIRONMENT_FILES,
    MODEL_UUID,
    PICKLE_BYTES,
    RUN_ID,
    SKLEARN_MLMODEL,
    TEXTS,
    TRANSFORMERS_MLMODEL,
    archive,
    in_folder,
    mlflow_sklearn,
    mlflow_transformers,
)


def upload(client, data: bytes, filename: str, flavor: str, model: str = "zh-sentiment"):
    handle = io.BytesIO(data)
    handle.name = filename
    return client.post(f"/api/v1/models/{model}/versions/", {"artifact": handle, "flavor": flavor}, format="multipart")


@pytest.fixture(scope="module")
def bert_members(demo_models) -> dict[str, bytes]:
    return unpack_zip(demo_models["bert_zip"].read_bytes())


@pytest.fixture(scope="module")
def accepted_archives(bert_members, demo_models) -> dict[str, bytes]:
    """Built once: the same bytes in every test, so the load check's
    per-digest memo saves the repeats. Between them they cover both flavors,
    both containers and both places MLmodel may be."""
    return {
        "transformers": make_zip(mlflow_transformers(bert_members)),
        "sklearn": make_tar_gz(in_folder(mlflow_sklearn(demo_models["sklearn_skops"].read_bytes()), "tfidf-model")),
    }


@pytest.mark.django_db
def test_mlflow_transformers_model_predicts_like_the_plain_upload_of_its_weights(
    api, engineer, sentiment_model, demo_models, accepted_archives
):
    plain = upload(api(engineer), demo_models["bert_zip"].read_bytes(), "bert.zip", "transformers")
    assert plain.status_code == 201, plain.json()

    response = upload(api(engineer), accepted_archives["transformers"], "bert-mlflow.zip", "mlflow")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["flavor"], body["artifact_format"], body["labels"]) == ("transformers", "zip", plain.json()["labels"])
    assert {"MLmodel", "model/model.safetensors", "components/tokenizer/vocab.txt"} <= {
        f["name"] for f in body["files"]
    }
    plain_version, mlflow_version = ModelVersion.objects.order_by("number")
    expected = version_predictor(plain_version).predict_proba(TEXTS)
    assert np.array_equal(version_predictor(mlflow_version).predict_proba(TEXTS), expected)

    # A worker that never saw the artifact fetches it from the store and lays it out the same way.
    shutil.rmtree(cache_dir() / mlflow_version.artifact_sha256)
    path = local_model_path(
        sha256=mlflow_version.artifact_sha256, artifact_key=mlflow_version.artifact_key, flavor="transformers"
    )
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert np.array_equal(load_predictor(path, "transformers").predict_proba(TEXTS), expected)

    # Naming the flavor the MLmodel says is accepted too.
    RegisteredModelFactory(name="zh-sentiment-2", created_by=engineer)
    again = upload(
        api(engineer), accepted_archives["transformers"], "bert-mlflow.zip", "transformers", "zh-sentiment-2"
    )
    assert (again.status_code, again.json()["flavor"]) == (201, "transformers")


@pytest.mark.django_db
def test_mlflow_sklearn_model_saved_with_skops_predicts_like_the_plain_skops_upload(
    api, engineer, sentiment_model, demo_models, accepted_archives
):
    plain = upload(api(engineer), demo_models["sklearn_skops"].read_bytes(), "model.skops", "sklearn")
    assert plain.status_code == 201, plain.json()

    response = upload(api(engineer), accepted_archives["sklearn"], "tfidf-mlflow.tar.gz", "sklearn")

    assert response.status_code == 201, response.json()
    assert (response.json()["flavor"], response.json()["artifact_format"]) == ("sklearn", "tar.gz")
    assert response.json()["mlflow"]["flavor_details"]["serialization_format"] == "skops"
    plain_version, mlflow_version = ModelVersion.objects.order_by("number")
    expected = version_predictor(plain_version).predict_proba(TEXTS)
    assert np.array_equal(version_predictor(mlflow_version).predict_proba(TEXTS), expected)
    shutil.rmtree(cache_dir() / mlflow_version.artifact_sha256)
    path = local_model_path(
        sha256=mlflow_version.artifact_sha256, artifact_key=mlflow_version.artifact_key, flavor="sklearn"
    )
    assert np.array_equal(load_predictor(path, "sklearn").predict_proba(TEXTS), expected)

    RegisteredModelFactory(name="zh-sentiment-2", created_by=engineer)
    again = upload(api(engineer), accepted_archives["sklearn"], "tfidf-mlflow.tar.gz", "mlflow", "zh-sentiment-2")
    assert (again.status_code, again.json()["flavor"]) == (201, "sklearn")


@pytest.mark.django_db
def test_mlmodel_facts_land_on_the_version_card_in_the_api_and_on_the_page(
    api, engineer, sentiment_model, accepted_archives
):
    response = upload(api(engineer), accepted_archives["transformers"], "bert.zip", "mlflow")
    assert response.status_code == 201, response.json()

    detail = api(engineer).get("/api/v1/models/zh-sentiment/versions/1/").json()
    mlflow = detail["mlflow"]
    assert (mlflow["flavor"], mlflow["run_id"], mlflow["model_uuid"]) == ("transformers", RUN_ID, MODEL_UUID)
    assert (mlflow["mlflow_version"], mlflow["utc_time_created"]) == ("2.17.2", "2024-11-20 09:41:07.123456")
    assert mlflow["signature"]["inputs"] == [{"type": "string", "required": True}]
    assert [column["name"] for column in mlflow["signature"]["outputs"]] == ["label", "score"]
    assert "params" not in mlflow["signature"]
    assert mlflow["metadata"] == {"team": "nlp", "dataset": "weibo-demo"}
    assert mlflow["flavor_details"]["pipeline_model_type"] == "BertForSequenceClassification"
    event = AuditEvent.objects.get(action="version.create", outcome="ok")
    assert event.detail["mlflow"]["run_id"] == RUN_ID

    page = page_client_for(engineer).get("/models/zh-sentiment/versions/1/")
    html = page.content.decode()
    assert page.status_code == 200
    for shown in ("MLflow model", RUN_ID, MODEL_UUID, "2.17.2", "2024-11-20 09:41:07.123456", "weibo-demo", "score"):
        assert shown in html


@pytest.mark.django_db
def test_a_plain_upload_has_no_mlflow_card(api, engineer, sentiment_model, demo_models):
    response = upload(api(engineer), demo_models["sklearn_skops"].read_bytes(), "model.skops", "sklearn")

    assert response.status_code == 201
    assert response.json()["mlflow"] is None
    assert "MLflow model" not in page_client_for(engineer).get("/models/zh-sentiment/versions/1/").content.decode()


def _sklearn_with(mlmodel: str, model_file: str = "model.pkl", data: bytes = PICKLE_BYTES):
    return lambda bert, skops: {"MLmodel": mlmodel.encode(), model_file: data, **ENVIRONMENT_FILES}


def _transformers_with(change):
    def build(bert, skops):
        return change(mlflow_transformers(bert))

    return build


def _mlmodel(text: str):
    return _transformers_with(lambda members: {**members, "MLmodel": text.encode()})


CLOUDPICKLE_SKLEARN = SKLEARN_MLMODEL.replace("model.skops", "model.pkl").replace(
    "serialization_format: skops", "serialization_format: cloudpickle"
)
PYFUNC_PYTHON_MODEL = """flavors:
  python_function:
    cloudpickle_version: 3.0.0
    env: {conda: conda.yaml, virtualenv: python_env.yaml}
    loader_module: mlflow.pyfunc.model
    python_model: python_model.pkl
    python_version: 3.11.9
mlflow_version: 2.17.2
run_id: abc
"""
BILLION_LAUGHS = "\n".join(
    ["flavors: {sklearn: {pickled_model: model.skops, serialization_format: skops}}", 'metadata:\n  a0: &a0 ["lol"]']
    + [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
)

# case -> (members built from the demo BERT's and the demo .skops, upload flavor, text the detail must hold)
REFUSALS = {
    "sklearn flavor serialized with cloudpickle": (_sklearn_with(CLOUDPICKLE_SKLEARN), "mlflow", 'format="skops"'),
    "sklearn flavor serialized with pickle": (
        _sklearn_with(CLOUDPICKLE_SKLEARN.replace("cloudpickle", "pickle")),
        "sklearn",
        "serialized with pickle",
    ),
    "sklearn flavor of an MLflow before skops (no serialization_format)": (
        _sklearn_with(CLOUDPICKLE_SKLEARN.replace("    serialization_format: cloudpickle\n", "")),
        "mlflow",
        "cloudpickle",
    ),
    "transformers flavor with pytorch_model.bin weights": (
        _transformers_with(
            lambda m: {
                **{name: data for name, data in m.items() if not name.endswith(".safetensors")},
                "model/pytorch_model.bin": PICKLE_BYTES,
            }
        ),
        "mlflow",
        "safe_serialization=True",
    ),
    "python_function flavor with a cloudpickled python_model": (
        lambda bert, skops: {"MLmodel": PYFUNC_PYTHON_MODEL.encode(), "python_model.pkl": PICKLE_BYTES},
        "mlflow",
        "cloudpickle",
    ),
    "python_function with a custom loader_module beside transformers": (
        _mlmodel(TRANSFORMERS_MLMODEL.replace("loader_module: mlflow.transformers", "loader_module: my_loader")),
        "mlflow",
        "loader_module 'my_loader'",
    ),
    "malformed YAML": (_mlmodel("flavors: [transformers\nrun_id: : :\n"), "mlflow", "not valid YAML"),
    "MLmodel that is a list": (_mlmodel("- flavors\n- run_id\n"), "mlflow", "YAML mapping"),
    "no supported flavor": (
        _mlmodel("flavors:\n  keras:\n    keras_version: 3.0.0\n  onnx:\n    onnx_version: 1.16\n"),
        "mlflow",
        "keras, onnx",
    ),
    "a tag that would call os.system": (
        _mlmodel("flavors: !!python/object/apply:os.system ['touch /tmp/glassbox-mlflow-pwned']\n"),
        "mlflow",
        "plain YAML",
    ),
    "a tag that would import a name": (
        _mlmodel(TRANSFORMERS_MLMODEL.replace("run_id:", "loader: !!python/name:os.system\nrun_id:")),
        "mlflow",
        "plain YAML",
    ),
    "a tag that would build an object": (
        _mlmodel(TRANSFORMERS_MLMODEL + "metadata: !!python/object/new:subprocess.Popen [['id']]\n"),
        "mlflow",
        "plain YAML",
    ),
    "alias bomb (billion laughs) in metadata": (
        lambda bert, skops: {"MLmodel": BILLION_LAUGHS.encode(), "model.skops": skops},
        "mlflow",
        "expand",
    ),
    "a 5000-digit integer": (
        _mlmodel(TRANSFORMERS_MLMODEL + "model_size_bytes: " + "9" * 5000 + "\n"),
        "mlflow",
        "cannot be read",
    ),
    "transformers saved with save_pretrained=False": (
        _mlmodel(TRANSFORMERS_MLMODEL.replace("model_binary: model", "source_model_revision: abc123")),
        "mlflow",
        "save_pretrained=True",
    ),
    "model_binary pointing outside the archive": (
        _mlmodel(TRANSFORMERS_MLMODEL.replace("model_binary: model", "model_binary: ../../etc")),
        "mlflow",
        "not a safe relative path",
    ),
    "Python code in the MLflow code/ folder": (
        _transformers_with(lambda m: {**m, "code/helpers.py": b"import os\n"}),
        "mlflow",
        "code/helpers.py",
    ),
    "auto_map in the model folder's config.json": (
        _transformers_with(
            lambda m: {
                **m,
                "model/config.json": m["model/config.json"].replace(b"{", b'{"auto_map": {"AutoModel": "evil.X"}, ', 1),
            }
        ),
        "mlflow",
        "auto_map",
    ),
    "flavor=transformers naming an sklearn MLflow model": (
        lambda bert, skops: mlflow_sklearn(skops),
        "transformers",
        "flavor=transformers, but its MLmodel is of the sklearn flavor",
    ),
    "flavor=mlflow on a plain transformers archive": (lambda bert, skops: dict(bert), "mlflow", "MLmodel file"),
    "flavor=mlflow with MLmodel two folders deep": (
        lambda bert, skops: in_folder(mlflow_transformers(bert), "a/b") | {"c/README.md": b"hi"},
        "mlflow",
        "MLmodel file",
    ),
}


# Every case as a zip; the container changes nothing after the archive checks, so tar.gz runs a sample.
TAR_GZ_SAMPLE = (
    "sklearn flavor serialized with cloudpickle",
    "transformers flavor with pytorch_model.bin weights",
    "a tag that would call os.system",
)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "case, container", [(case, "zip") for case in sorted(REFUSALS)] + [(case, "tar.gz") for case in TAR_GZ_SAMPLE]
)
def test_unsafe_or_unreadable_mlflow_models_are_refused_leaving_nothing(
    api, engineer, sentiment_model, bert_members, demo_models, case, container
):
    build, flavor, expected = REFUSALS[case]
    data = archive(build(bert_members, demo_models["sklearn_skops"].read_bytes()), container)
    before = stored_files()

    response = upload(api(engineer), data, f"mlflow.{container}", flavor)

    assert response.status_code == 400, response.content[:500]
    detail = response.json()["detail"]
    assert expected in detail
    assert not ModelVersion.objects.exists()
    assert stored_files() == before
    refusal = AuditEvent.objects.get(action="version.create")
    assert (refusal.outcome, refusal.detail["reason"]) == ("denied", detail)


@pytest.mark.django_db
def test_yaml_tags_never_run(api, engineer, sentiment_model, bert_members, tmp_path):
    marker = tmp_path / "pwned"
    mlmodel = f"flavors: !!python/object/apply:os.system ['touch {marker}']\n"
    data = make_zip(mlflow_transformers(bert_members, mlmodel))

    response = upload(api(engineer), data, "mlflow.zip", "mlflow")

    assert response.status_code == 400
    assert not marker.exists()


@pytest.mark.django_db
def test_the_upload_form_takes_an_mlflow_model_and_shows_a_refusal_as_a_form_error(
    engineer, sentiment_model, demo_models, accepted_archives
):
    client = page_client_for(engineer)
    refused = io.BytesIO(make_zip(_sklearn_with(CLOUDPICKLE_SKLEARN)(None, None)))
    refused.name = "model.zip"

    response = client.post("/models/zh-sentiment/upload/", {"artifact": refused, "flavor": "mlflow"})

    assert response.status_code == 400
    assert "serialization_format=&quot;skops&quot;" in response.content.decode()
    assert not ModelVersion.objects.exists()

    accepted = io.BytesIO(accepted_archives["sklearn"])
    accepted.name = "model.tar.gz"
    response = client.post("/models/zh-sentiment/upload/", {"artifact": accepted, "flavor": "mlflow"})

    assert response.status_code == 302, response.content.decode()[:2000]
    assert ModelVersion.objects.get().mlflow_model["flavor"] == "sklearn"
