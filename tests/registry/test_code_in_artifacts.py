"""An artifact holds weights and configs, never code: Python files under any
name or folder, and `auto_map` entries that point transformers at custom
model or tokenizer code, are refused at upload with a 400 naming the file,
leaving no row, no file and a `denied` audit event - like pickles."""

import io
import json

import pytest

from governance.models import AuditEvent
from registry.models import ModelVersion
from tests.conftest import make_tar_gz, make_zip, stored_files, unpack_zip

EVIL_CODE = b"import os\nos.system('id')\n"


def upload(client, data: bytes, filename: str, flavor: str):
    handle = io.BytesIO(data)
    handle.name = filename
    return client.post(
        "/api/v1/models/zh-sentiment/versions/", {"artifact": handle, "flavor": flavor}, format="multipart"
    )


@pytest.fixture(scope="module")
def bert_members(demo_models) -> dict[str, bytes]:
    return unpack_zip(demo_models["bert_zip"].read_bytes())


def with_json(members: dict[str, bytes], name: str, **extra) -> dict[str, bytes]:
    config = json.loads(members[name]) if name in members else {}
    return {**members, name: json.dumps({**config, **extra}).encode()}


AUTO_MAP_MODEL = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
AUTO_MAP_TOKENIZER = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}

# case -> (members from the demo BERT's, the file the refusal must name)
CODE_CASES = {
    "modeling .py at the root": (lambda m: {**m, "modeling_evil.py": EVIL_CODE}, "modeling_evil.py"),
    ".py in a sub-folder": (lambda m: {**m, "custom/code/__init__.py": EVIL_CODE}, "custom/code/__init__.py"),
    "upper-case .PY": (lambda m: {**m, "EVIL.PY": EVIL_CODE}, "EVIL.PY"),
    "hidden .py": (lambda m: {**m, ".evil.py": EVIL_CODE}, ".evil.py"),
    "compiled .pyc": (lambda m: {**m, "__pycache__/evil.cpython-311.pyc": b"\xa7\r\r\n"}, "evil.cpython-311.pyc"),
    "auto_map in config.json": (lambda m: with_json(m, "config.json", auto_map=AUTO_MAP_MODEL), "config.json"),
    "auto_map pointing at another repository": (
        lambda m: with_json(m, "config.json", auto_map={"AutoModel": "someone/repo--modeling.Evil"}),
        "config.json",
    ),
    "auto_map in a nested sub-config": (
        lambda m: with_json(m, "config.json", text_config={"auto_map": AUTO_MAP_MODEL}),
        "config.json",
    ),
    "auto_map in tokenizer_config.json": (
        lambda m: with_json(m, "tokenizer_config.json", auto_map=AUTO_MAP_TOKENIZER),
        "tokenizer_config.json",
    ),
    "auto_map in a processor config": (
        lambda m: with_json(m, "preprocessor_config.json", auto_map={"AutoProcessor": "processing_evil.Evil"}),
        "preprocessor_config.json",
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("container", ["zip", "tar.gz"])
@pytest.mark.parametrize("case", sorted(CODE_CASES))
def test_code_in_a_transformers_artifact_is_refused_naming_the_file(
    api, engineer, sentiment_model, bert_members, case, container
):
    build, named = CODE_CASES[case]
    members = build(bert_members)
    data = make_zip(members) if container == "zip" else make_tar_gz(members)
    before = stored_files()

    response = upload(api(engineer), data, f"bert.{container}", "transformers")

    assert response.status_code == 400, response.json()
    detail = response.json()["detail"]
    assert named in detail and "code" in detail
    assert not ModelVersion.objects.exists()
    assert stored_files() == before
    refusal = AuditEvent.objects.get(action="version.create")
    assert (refusal.outcome, refusal.detail["reason"]) == ("denied", detail)


@pytest.mark.django_db
def test_python_beside_a_skops_file_is_refused(api, engineer, sentiment_model, demo_models):
    data = make_tar_gz({"model.skops": demo_models["sklearn_skops"].read_bytes(), "hooks.py": EVIL_CODE})

    response = upload(api(engineer), data, "model.tar.gz", "sklearn")

    assert response.status_code == 400
    assert "hooks.py" in response.json()["detail"]
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_configs_without_auto_map_and_code_like_names_that_are_not_code_pass(
    api, engineer, sentiment_model, bert_members
):
    # A README that talks about auto_map, and files whose names merely contain "py".
    members = {
        **with_json(bert_members, "generation_config.json", max_length=32),
        "README.md": b"No auto_map here, and no modeling.py either.",
        "notes/python.txt": b"py",
        "copy.py.txt": b"not code",
    }

    response = upload(api(engineer), make_zip(members), "bert.zip", "transformers")

    assert response.status_code == 201, response.json()
