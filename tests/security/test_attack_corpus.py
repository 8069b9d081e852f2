"""The attack corpus: the failure classes that hit other model registries,
each sent through the real API (or page) as an attacker would. Every one
must be refused with a 4xx JSON `detail`, leave no row and no file behind,
and, for artifact uploads, leave a `denied` event in the audit trail.

At the end of the module a table of inputs tried and accepted per class is
printed (accepted must be 0) and kept in $GLASSBOX_DATA_DIR/attack-corpus-summary.json."""

import io
import os
import re
import subprocess
from datetime import timedelta

import numpy
import numpy.ctypeslib
import pytest
import scipy.sparse
import sklearn.datasets
from django.test import Client
from django.utils import timezone

from explanations.models import ExplanationReport
from governance import services as review_services
from governance.models import AuditEvent
from registry.models import Dataset, ModelVersion, RegisteredModel
from rollouts import services as rollout_services
from rollouts.aggregation import rebuild_aggregates
from rollouts.models import PredictionLog, Rollout
from tests.conftest import ModelVersionFactory, api_client_for, page_client_for, stored_files, unpack_zip
from tests.explanations.reporting import local_results, make_report
from tests.registry.mlflow_layouts import SKLEARN_MLMODEL, TRANSFORMERS_MLMODEL, mlflow_sklearn, mlflow_transformers
from tests.security import corpus
from tests.security.corpus import (
    PICKLE_PROTOCOL_0,
    PICKLE_PROTOCOL_2,
    PICKLE_PROTOCOL_4,
    PYTHON_SOURCE,
    archive_of,
    tally,
    tar_of,
    torch_style_zip,
    upload_dataset,
    upload_version,
    with_auto_map,
    zip_of,
)

pytestmark = pytest.mark.usefixtures("corpus_summary")


def _rows() -> dict[str, int]:
    return {
        "models": RegisteredModel.objects.count(),
        "versions": ModelVersion.objects.count(),
        "datasets": Dataset.objects.count(),
        "reports": ExplanationReport.objects.count(),
        "rollouts": Rollout.objects.count(),
    }


class Unchanged:
    """Snapshot of rows and files; `refused()` checks a response against it."""

    def __init__(self):
        self.rows = _rows()
        self.files = stored_files()

    def refused(self, response, kind: str, *, statuses=(400,)) -> str:
        tally(kind, accepted=response.status_code < 400)
        assert response.status_code in statuses, (response.status_code, response.content[:500])
        assert response["Content-Type"].startswith("application/json")
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail.strip()
        assert _rows() == self.rows
        assert stored_files() == self.files
        return detail


def _upload_refusal_recorded(detail: str) -> None:
    refusal = AuditEvent.objects.filter(action="version.create").latest("id")
    assert (refusal.outcome, refusal.detail["reason"]) == ("denied", detail)


# --- archive members ---------------------------------------------------------------------

TRAVERSAL_NAMES = [
    "../evil.py",
    "a/../../evil.py",
    "./../evil.py",
    "/etc/cron.d/evil",
    "..\\evil.py",
    "a\\..\\..\\evil.py",
    "C:\\x.dll",
    "C:/x.dll",
    "\\\\server\\share\\x.dll",
    "%2e%2e%2fevil.py",
    "..%2fevil.py",
    "a/%2e%2e/%2e%2e/evil.py",
    "evil\x00.py",
    "line\nbreak.py",
]


@pytest.mark.parametrize("container", ["zip", "tar.gz"])
@pytest.mark.parametrize("member", TRAVERSAL_NAMES, ids=repr)
def test_archive_member_outside_the_archive_is_refused(engineer, sentiment_model, container, member):
    members = {"config.json": b'{"id2label": {"0": "a"}}', "model.safetensors": b"x", member: b"print('owned')"}
    data = archive_of(members, container)
    before = Unchanged()

    response = upload_version(engineer, "zh-sentiment", data, f"model.{container}", "transformers")

    detail = before.refused(response, "archive: member path")
    _upload_refusal_recorded(detail)


LINKS_AND_SPECIAL_FILES = {
    "tar symlink to /etc/passwd": lambda: tar_of(
        [("config.json", "file", b"{}"), ("model.safetensors", "symlink", "/etc/passwd")]
    ),
    "tar symlink out by ../": lambda: tar_of(
        [("config.json", "file", b"{}"), ("model.safetensors", "symlink", "../../../../etc/passwd")]
    ),
    "tar symlink to a dir then a file through it": lambda: tar_of(
        [("config.json", "file", b"{}"), ("up", "symlink", "/tmp"), ("up/evil.py", "file", b"x")]
    ),
    "tar hard link to /etc/passwd": lambda: tar_of(
        [("config.json", "file", b"{}"), ("model.safetensors", "hardlink", "/etc/passwd")]
    ),
    "tar hard link out by ../": lambda: tar_of(
        [("config.json", "file", b"{}"), ("model.safetensors", "hardlink", "../outside")]
    ),
    "tar character device": lambda: tar_of([("config.json", "file", b"{}"), ("model.safetensors", "chardev", None)]),
    "tar block device": lambda: tar_of([("config.json", "file", b"{}"), ("model.safetensors", "blockdev", None)]),
    "tar fifo": lambda: tar_of([("config.json", "file", b"{}"), ("model.safetensors", "fifo", None)]),
    "uncompressed tar symlink": lambda: tar_of(
        [("config.json", "file", b"{}"), ("model.safetensors", "symlink", "/etc/passwd")], mode="w"
    ),
    "zip symlink to /etc/passwd": lambda: corpus.zip_with_symlink("/etc/passwd"),
}


@pytest.mark.parametrize("case", sorted(LINKS_AND_SPECIAL_FILES))
def test_links_and_special_files_in_archives_are_refused(engineer, sentiment_model, case):
    data = LINKS_AND_SPECIAL_FILES[case]()
    filename = "model.zip" if case.startswith("zip") else "model.tar.gz"
    before = Unchanged()

    response = upload_version(engineer, "zh-sentiment", data, filename, "transformers")

    detail = before.refused(response, "archive: link or special file")
    assert re.search("link|special", detail), detail
    _upload_refusal_recorded(detail)


BOMBS = {
    # ~64 KiB that unpacks to 64 MiB: refused by ratio before a byte is written.
    "zip bomb": (corpus.zip_bomb, "model.zip", "compression ratio"),
    "tar bomb": (corpus.tar_bomb, "model.tar.gz", "compression ratio"),
    # Headers declaring 1000 bytes for a 16 MiB stream: stopped while extracting.
    "zip member lying about its size": (corpus.zip_lying_about_its_size, "model.zip", "damaged|more than it declares"),
    # Millions of tiny members: the zip64 end record says 2,000,000, refused before the directory is read.
    "zip of 2,000,000 members": (lambda: corpus.zip_claiming_members(2_000_000), "model.zip", "more than 1000 members"),
    "zip of 1001 members": (lambda: corpus.zip_of_many_members(1001), "model.zip", "more than 1000 members"),
    "zip of 1500 members claiming 3": (
        lambda: corpus.zip_of_many_members(1500, claim=3),
        "model.zip",
        "more than 1000 members",
    ),
    "tar of 1001 members": (
        lambda: tar_of([(f"f{i}", "file", b"") for i in range(1001)]),
        "model.tar.gz",
        "more than 1000 members",
    ),
}


@pytest.mark.parametrize("case", sorted(BOMBS))
def test_archive_bombs_are_refused(engineer, sentiment_model, case):
    build, filename, reason = BOMBS[case]
    data = build()
    assert len(data) < 1024 * 1024  # small to send; the harm is in what it claims or unpacks to
    before = Unchanged()

    response = upload_version(engineer, "zh-sentiment", data, filename, "transformers")

    detail = before.refused(response, "archive: bomb or member count")
    assert re.search(reason, detail), detail
    _upload_refusal_recorded(detail)


# --- pickles under any name --------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_members(demo_models) -> dict[str, bytes]:
    return unpack_zip(demo_models["bert_zip"].read_bytes())


def _without(members: dict[str, bytes], suffix: str) -> dict[str, bytes]:
    return {name: data for name, data in members.items() if not name.endswith(suffix)}


PICKLED_TRANSFORMERS = {
    "pytorch_model.bin beside safetensors": lambda m: {**m, "pytorch_model.bin": PICKLE_PROTOCOL_4},
    "model.pt": lambda m: {**m, "model.pt": PICKLE_PROTOCOL_4},
    "model.pth": lambda m: {**m, "model.pth": PICKLE_PROTOCOL_2},
    "weights.pkl": lambda m: {**m, "weights.pkl": PICKLE_PROTOCOL_0},
    "model.ckpt": lambda m: {**m, "model.ckpt": PICKLE_PROTOCOL_4},
    "model.joblib": lambda m: {**m, "model.joblib": PICKLE_PROTOCOL_4},
    "embeddings.npy": lambda m: {**m, "embeddings.npy": PICKLE_PROTOCOL_4},
    "upper-case PYTORCH_MODEL.BIN": lambda m: {**m, "PYTORCH_MODEL.BIN": PICKLE_PROTOCOL_4},
    "nested sub/pytorch_model.bin": lambda m: {**m, "sub/pytorch_model.bin": PICKLE_PROTOCOL_4},
    "pickle in model.safetensors": lambda m: {**_without(m, ".safetensors"), "model.safetensors": PICKLE_PROTOCOL_4},
    "pickle as config.json": lambda m: {**m, "config.json": PICKLE_PROTOCOL_4},
    "protocol-0 pickle as config.json": lambda m: {**m, "config.json": PICKLE_PROTOCOL_0},
    "pickle as tokenizer_config.json": lambda m: {**m, "tokenizer_config.json": PICKLE_PROTOCOL_2},
    "pickle under a harmless name": lambda m: {**m, "weights.data": PICKLE_PROTOCOL_4},
    "torch.save zip under a harmless name": lambda m: {**m, "weights.data": torch_style_zip()},
}


@pytest.mark.parametrize("case", sorted(PICKLED_TRANSFORMERS))
def test_pickle_payloads_in_a_transformers_upload_are_refused(engineer, sentiment_model, bert_members, case):
    data = zip_of(PICKLED_TRANSFORMERS[case](bert_members))
    before = Unchanged()

    response = upload_version(engineer, "zh-sentiment", data, "model.zip", "transformers")

    detail = before.refused(response, "pickle payload")
    _upload_refusal_recorded(detail)


@pytest.mark.parametrize(
    "case, data, filename",
    [
        ("raw pickle named model.skops", PICKLE_PROTOCOL_4, "model.skops"),
        ("raw pickle named model.pkl", PICKLE_PROTOCOL_2, "model.pkl"),
        ("torch.save zip named model.skops", torch_style_zip(), "model.skops"),
        ("pickle beside a .skops in a zip", None, "model.zip"),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else "",
)
def test_pickle_payloads_in_a_sklearn_upload_are_refused(engineer, sentiment_model, demo_models, case, data, filename):
    if data is None:
        data = zip_of({"model.skops": demo_models["sklearn_skops"].read_bytes(), "model.pkl": PICKLE_PROTOCOL_4})
    before = Unchanged()

    response = upload_version(engineer, "zh-sentiment", data, filename, "sklearn")

    detail = before.refused(response, "pickle payload")
    _upload_refusal_recorded(detail)


# --- code under any name -----------------------------------------------------------------

# case -> (members from the demo BERT's, the member the refusal must name)
CODE_IN_TRANSFORMERS = {
    "modeling_evil.py at the root": (lambda m: {**m, "modeling_evil.py": PYTHON_SOURCE}, "modeling_evil.py"),
    "__init__.py deep in a folder": (lambda m: {**m, "a/b/c/__init__.py": PYTHON_SOURCE}, "a/b/c/__init__.py"),
    "upper-case TOKENIZATION.PY": (lambda m: {**m, "TOKENIZATION.PY": PYTHON_SOURCE}, "TOKENIZATION.PY"),
    "hidden .x.py": (lambda m: {**m, ".x.py": PYTHON_SOURCE}, ".x.py"),
    "windowed evil.pyw": (lambda m: {**m, "evil.pyw": PYTHON_SOURCE}, "evil.pyw"),
    "bytecode in __pycache__": (lambda m: {**m, "__pycache__/x.cpython-311.pyc": b"\xa7\r\r\n"}, "x.cpython-311.pyc"),
    "auto_map in config.json": (
        lambda m: with_auto_map(m, "config.json", {"AutoModelForSequenceClassification": "modeling_evil.Evil"}),
        "config.json",
    ),
    "auto_map to another repository in config.json": (
        lambda m: with_auto_map(m, "config.json", {"AutoModel": "attacker/repo--modeling.Evil"}),
        "config.json",
    ),
    "auto_map nested in a sub-config": (
        lambda m: with_auto_map(m, "config.json", {"AutoModel": "modeling_evil.Evil"}, nested="text_config"),
        "config.json",
    ),
    "auto_map in tokenizer_config.json": (
        lambda m: with_auto_map(m, "tokenizer_config.json", {"AutoTokenizer": ["tokenization_evil.Evil", None]}),
        "tokenizer_config.json",
    ),
    "auto_map in tokenizer_config.json with its .py": (
        lambda m: {
            **with_auto_map(m, "tokenizer_config.json", {"AutoTokenizer": ["tokenization_evil.Evil", None]}),
            "tokenization_evil.py": PYTHON_SOURCE,
        },
        "tokenization_evil.py",
    ),
}


@pytest.mark.parametrize("container", ["zip", "tar.gz"])
@pytest.mark.parametrize("case", sorted(CODE_IN_TRANSFORMERS))
def test_code_in_a_transformers_upload_is_refused(engineer, sentiment_model, bert_members, case, container):
    build, named = CODE_IN_TRANSFORMERS[case]
    data = archive_of(build(bert_members), container)
    before = Unchanged()

    response = upload_version(engineer, "zh-sentiment", data, f"model.{container}", "transformers")

    detail = before.refused(response, "code in an artifact")
    assert named in detail
    _upload_refusal_recorded(detail)


# --- .skops files asking for untrusted types ---------------------------------------------


class Tripwire:
    """A class from outside sklearn/numpy: skops would construct it."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


UNTRUSTED_CALLABLES = {
    "builtins.eval": eval,
    "builtins.exec": exec,
    "builtins.getattr": getattr,
    "builtins.__import__": __import__,
    "io.open": open,
    "posix.system": os.system,
    "subprocess.Popen": subprocess.Popen,
    "numpy.load": numpy.load,
    "numpy.save": numpy.save,
    "numpy.fromfile": numpy.fromfile,
    "numpy.memmap": numpy.memmap,
    "numpy.frompyfunc": numpy.frompyfunc,
    "numpy.ctypeslib.load_library": numpy.ctypeslib.load_library,
    "numpy.ctypeslib.as_array": numpy.ctypeslib.as_array,
    "scipy.sparse.save_npz": scipy.sparse.save_npz,
    "sklearn.datasets.fetch_openml": sklearn.datasets.fetch_openml,
    "sklearn.datasets.dump_svmlight_file": sklearn.datasets.dump_svmlight_file,
}


@pytest.mark.parametrize("type_name", [*sorted(UNTRUSTED_CALLABLES), "Tripwire"])
def test_skops_file_asking_for_untrusted_types_is_refused(engineer, sentiment_model, tmp_path, type_name):
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    first = Tripwire() if type_name == "Tripwire" else FunctionTransformer(func=UNTRUSTED_CALLABLES[type_name])
    path = tmp_path / "hostile.skops"
    skops.io.dump(Pipeline([("first", first), ("clf", LogisticRegression())]), path)
    before = Unchanged()

    response = upload_version(engineer, "zh-sentiment", path.read_bytes(), "model.skops", "sklearn")

    detail = before.refused(response, "skops untrusted type")
    assert "does not allow" in detail and type_name.rsplit(".", 1)[-1] in detail, detail
    _upload_refusal_recorded(detail)


# --- MLflow model directories ------------------------------------------------------------

MLFLOW_ATTACKS = {
    # kind -> case -> (the MLflow directory's members, built from the demo BERT's and the demo .skops)
    "MLmodel YAML constructing objects": {
        "!!python/object/apply:os.system": lambda bert, skops: mlflow_transformers(
            bert, "flavors: !!python/object/apply:os.system ['id']\n"
        ),
        "!!python/name:os.system": lambda bert, skops: mlflow_transformers(
            bert, TRANSFORMERS_MLMODEL + "loader: !!python/name:os.system\n"
        ),
        "!!python/object/new:subprocess.Popen": lambda bert, skops: mlflow_transformers(
            bert, TRANSFORMERS_MLMODEL + "metadata: !!python/object/new:subprocess.Popen [['id']]\n"
        ),
        "!!python/module:os": lambda bert, skops: mlflow_transformers(bert, "flavors: !!python/module:os ''\n"),
        "alias bomb in metadata": lambda bert, skops: mlflow_sklearn(
            skops,
            SKLEARN_MLMODEL
            + 'metadata:\n  a0: &a0 ["lol"]\n'
            + "".join(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)),
        ),
    },
    "pickle payload": {
        "MLflow sklearn with cloudpickle": lambda bert, skops: {
            **mlflow_sklearn(
                skops, SKLEARN_MLMODEL.replace("serialization_format: skops", "serialization_format: cloudpickle")
            ),
            "model.skops": PICKLE_PROTOCOL_4,
        },
        "MLflow pyfunc with a cloudpickled python_model": lambda bert, skops: {
            "MLmodel": b"flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
            b"    python_model: python_model.pkl\n",
            "python_model.pkl": PICKLE_PROTOCOL_4,
        },
        "MLflow transformers with pytorch_model.bin": lambda bert, skops: {
            **{name: data for name, data in mlflow_transformers(bert).items() if not name.endswith(".safetensors")},
            "model/pytorch_model.bin": PICKLE_PROTOCOL_4,
        },
    },
    "code in an artifact": {
        "MLflow code/ folder": lambda bert, skops: {**mlflow_transformers(bert), "code/loader.py": PYTHON_SOURCE},
        "MLflow pyfunc loader_module of its own": lambda bert, skops: mlflow_transformers(
            bert, TRANSFORMERS_MLMODEL.replace("loader_module: mlflow.transformers", "loader_module: loader")
        ),
    },
    "archive member outside the archive": {
        "MLflow model_binary ../..": lambda bert, skops: mlflow_transformers(
            bert, TRANSFORMERS_MLMODEL.replace("model_binary: model", "model_binary: ../../etc")
        ),
        "MLflow pickled_model /etc/passwd": lambda bert, skops: mlflow_sklearn(
            skops, SKLEARN_MLMODEL.replace("pickled_model: model.skops", "pickled_model: /etc/passwd")
        ),
    },
}


@pytest.mark.parametrize(
    "kind, case", [(kind, case) for kind, cases in MLFLOW_ATTACKS.items() for case in sorted(cases)]
)
def test_hostile_mlflow_model_directories_are_refused(engineer, sentiment_model, bert_members, demo_models, kind, case):
    members = MLFLOW_ATTACKS[kind][case](bert_members, demo_models["sklearn_skops"].read_bytes())
    before = Unchanged()

    response = upload_version(engineer, "zh-sentiment", zip_of(members), "mlflow-model.zip", "mlflow")

    detail = before.refused(response, kind)
    _upload_refusal_recorded(detail)


def test_skops_types_an_mlmodel_trusts_are_not_trusted(engineer, sentiment_model, tmp_path):
    """MLflow records `skops_trusted_types` beside the model; Glassbox's own allowlist decides."""
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "model.skops"
    skops.io.dump(Pipeline([("first", FunctionTransformer(func=os.system)), ("clf", LogisticRegression())]), path)
    mlmodel = SKLEARN_MLMODEL.replace("skops_trusted_types: null", "skops_trusted_types:\n    - posix.system")
    before = Unchanged()

    response = upload_version(
        engineer, "zh-sentiment", zip_of(mlflow_sklearn(path.read_bytes(), mlmodel)), "m.zip", "mlflow"
    )

    detail = before.refused(response, "skops untrusted type")
    assert "does not allow" in detail and "system" in detail, detail
    _upload_refusal_recorded(detail)


# --- names ---------------------------------------------------------------------------------

HOSTILE_NAMES = {
    "traversal": "../../etc/passwd",
    "encoded traversal": "..%2f..%2fetc",
    "slash": "a/b",
    "backslash": "a\\b",
    "absolute": "/etc/passwd",
    "dot-dot": "..",
    "NUL": "evil\x00name",
    "tab": "tab\tname",
    "newline": "new\nline",
    "escape sequence": "red\x1b[31mname",
    "bell": "bell\x07",
    "10,000 characters": "x" * 10_000,
    "markup": "<script>alert(1)</script>",
    "unicode right-to-left override": "abc\u202egnp.exe",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_NAMES))
def test_hostile_model_name_is_refused(engineer, case):
    before = Unchanged()

    response = api_client_for(engineer).post(
        "/api/v1/models/", {"name": HOSTILE_NAMES[case], "risk_tier": "low"}, format="json"
    )

    before.refused(response, "hostile name")


@pytest.mark.parametrize("case", sorted(HOSTILE_NAMES))
def test_hostile_dataset_name_is_refused(engineer, case):
    before = Unchanged()

    response = upload_dataset(engineer, HOSTILE_NAMES[case], "text,label\n很好,positive\n很差,negative\n".encode())

    before.refused(response, "hostile name")


# --- script payloads, rendered inert on every page ----------------------------------------

PAYLOADS = {
    "script": "<script>alert('{}')</script>",
    "attribute break": "\"><img src=x onerror=alert('{}')>",
    "svg": "<svg/onload=alert('{}')>",
    "javascript url": "javascript:alert('{}')",
}
JAVASCRIPT_URL = re.compile(r"""(href|src|action|formaction|xlink:href)\s*=\s*["']?\s*javascript:""", re.IGNORECASE)


def _payloads(field: str) -> str:
    # Every field carries all payloads at once, marked with its name.
    return " ".join(template.format(field) for template in PAYLOADS.values())


@pytest.fixture
def hostile_world(engineer, engineer2, reviewer, reviewer2, manager, demo_models):
    """A model whose every user-written text carries the payloads: model
    description, model card, review comments, dataset texts and labels,
    version labels (labels come from the uploaded model), explanation
    texts, rollout reasons, prediction logs."""
    api = api_client_for(engineer)
    assert (
        api.post(
            "/api/v1/models/",
            {"name": "xss", "risk_tier": "low", "description": _payloads("model-description")},
            format="json",
        ).status_code
        == 201
    )
    card = {
        field: _payloads(f"card-{field}")
        for field in ("description", "intended_use", "limitations", "training_data", "evaluation_data")
    }
    response = upload_version(
        engineer, "xss", demo_models["sklearn_skops"].read_bytes(), "model.skops", "sklearn", **card
    )
    assert response.status_code == 201, response.content
    v1 = ModelVersion.objects.get(model__name="xss", number=1)
    assert api.post("/api/v1/models/xss/versions/1/submit/").status_code in (200, 201)
    decided = api_client_for(reviewer).post(
        "/api/v1/models/xss/versions/1/decisions/",
        {"decision": "approve", "comment": _payloads("review-comment")},
        format="json",
    )
    assert decided.status_code in (200, 201), decided.content

    v2 = ModelVersionFactory(
        model=v1.model,
        labels=[_payloads("label"), "fine"],
        created_by=engineer,
        description=_payloads("v2-description"),
    )
    review_services.review_submit(actor=engineer, version=v2)
    review_services.decision_record(actor=reviewer2, version=v2, decision="approve", comment=_payloads("comment-2"))

    rows = "".join(
        f'"{_payloads("dataset-text").replace(chr(34), chr(34) * 2)}",{label}\n'
        for label in ("positive", "negative", PAYLOADS["script"].format("dataset-label"))
    )
    dataset = upload_dataset(
        engineer, "xss-holdout", f"text,label\n{rows}".encode(), description=_payloads("dataset-description")
    )
    assert dataset.status_code == 201, dataset.content

    texts = [_payloads("explained-text"), "很好"]
    report = make_report(
        version=v2, requested_by=engineer, texts=texts, results=local_results(texts, labels=tuple(v2.labels))
    )

    v1.refresh_from_db()
    rollout_services.rollout_start(actor=engineer, model=v1.model, candidate=v1)  # first deployment
    rollout = rollout_services.rollout_start(actor=engineer, model=v1.model, candidate=v2)
    client = page_client_for(engineer)
    paused = client.post(f"/rollouts/{rollout.pk}/pause/", {"confirm": "on", "reason": _payloads("rollout-reason")})
    assert paused.status_code == 302, paused.content

    now = timezone.now()
    PredictionLog.objects.bulk_create(
        PredictionLog(
            model=v1.model,
            version=v2,
            route="candidate",
            label=v2.labels[0],
            confidence=0.7,
            latency_ms=3.0,
            input_text=_payloads("predicted-text"),
            input_length=40,
            created_at=now,
        )
        for _ in range(3)
    )
    # Rows written around the log writer: the monitoring page reads their aggregates.
    rebuild_aggregates(since=now, until=now + timedelta(seconds=1))
    return {"v1": v1, "v2": v2, "report": report, "rollout": rollout, "dataset_id": dataset.json()["id"]}


def _hostile_pages(world) -> list[tuple[str, str]]:
    v1, v2 = world["v1"], world["v2"]
    return [
        ("engineer", "/models/"),
        ("engineer", "/models/xss/"),
        ("engineer", "/models/xss/versions/1/"),
        ("engineer", "/models/xss/versions/2/"),
        ("reviewer", "/reviews/"),
        ("reviewer", f"/models/xss/versions/{v1.number}/review/"),
        ("reviewer", f"/models/xss/versions/{v2.number}/review/"),
        ("manager", "/dashboard/"),
        ("manager", f"/models/xss/versions/{v1.number}/dossier/"),
        ("manager", f"/models/xss/versions/{v2.number}/dossier/"),
        ("reviewer", f"/explanations/{world['report'].pk}/"),
        ("reviewer", "/models/xss/explanations/compare/?a=1&b=2"),
        ("manager", "/audit/"),
        ("manager", "/audit/?model=xss"),
        ("engineer", "/datasets/"),
        ("engineer", f"/datasets/{world['dataset_id']}/"),
        ("engineer", "/models/xss/rollouts/"),
        ("engineer", f"/rollouts/{world['rollout'].pk}/"),
        ("reviewer", "/models/xss/monitoring/?window=1h"),
    ]


def test_script_payloads_render_inert_on_every_page(hostile_world, engineer, reviewer, manager):
    users = {"engineer": engineer, "reviewer": reviewer, "manager": manager}
    shown_somewhere = set()
    for role, path in _hostile_pages(hostile_world):
        client = page_client_for(users[role])
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        html = response.content.decode()
        for field in re.findall(r"alert\(&#x27;([\w-]+)&#x27;\)|alert\(&quot;([\w-]+)&quot;\)", html):
            shown_somewhere.update(name for name in field if name)
        for template in PAYLOADS.values():
            raw = template.split("{}")[0]  # the markup before the field name is what would execute
            # A javascript: URL is harmless as text; it must never land in an href or src.
            unescaped = raw in html if raw.startswith(("<", '"')) else bool(JAVASCRIPT_URL.search(html))
            tally("script payload (page x payload)", accepted=unescaped)
            assert not unescaped, (path, raw)
        # Escaped text is no use if it is escaped twice: the reader sees the real text.
        assert "&amp;lt;script" not in html, path
        if path.startswith("/explanations/"):
            # The heat map shows the explained text one token (character) at a time.
            assert re.search(r">\s*&lt;\s*<", html), "the heat map does not show the text's '<' token"
    # Every field that carries the payloads was rendered (escaped) on some page.
    expected = {
        "model-description",
        "card-description",
        "card-intended_use",
        "card-limitations",
        "card-training_data",
        "card-evaluation_data",
        "review-comment",
        "comment-2",
        "label",
        "dataset-text",
        "dataset-label",
        "dataset-description",
        "rollout-reason",
    }
    assert expected <= shown_somewhere, sorted(expected - shown_somewhere)


# --- oversized bodies ----------------------------------------------------------------------


class CountingJsonStream(io.RawIOBase):
    """A 100 MiB JSON body produced as it is read; counts what the server reads."""

    def __init__(self, size: int):
        self.size = size
        self.sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.size - self.sent)
        chunk = (b'{"inputs": ["' if self.sent == 0 else b"") + b"a" * count
        chunk = chunk[:count]
        buffer[:count] = chunk
        self.sent += count
        return count


@pytest.mark.parametrize(
    "path, role",
    [
        ("/api/v1/models/", "engineer"),
        ("/api/v1/models/zh-sentiment/predict/", "engineer"),
        ("/api/v1/models/zh-sentiment/versions/1/decisions/", "reviewer"),
        ("/api/v1/auth/token/", None),
    ],
)
def test_a_100_mib_json_body_is_refused_unread(engineer, reviewer, sentiment_model, settings, path, role):
    version = ModelVersionFactory(model=sentiment_model)
    review_services.review_submit(actor=engineer, version=version)
    size = 100 * 1024 * 1024
    stream = CountingJsonStream(size)
    client = api_client_for({"engineer": engineer, "reviewer": reviewer, None: None}[role])
    before = Unchanged()

    response = client.generic(
        "POST", path, b"{}", content_type="application/json", CONTENT_LENGTH=str(size), **{"wsgi.input": stream}
    )

    before.refused(response, "100 MiB JSON body", statuses=(413,))
    assert "limit" in response.json()["detail"]
    assert stream.sent <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE


# --- sign-in ------------------------------------------------------------------------------


@pytest.fixture
def fresh_signin_counters():
    from django.core.cache import cache  # the per-process cache of the test settings

    cache.clear()
    yield
    cache.clear()


def test_guessing_passwords_on_the_token_endpoint_is_rate_limited(engineer, settings, fresh_signin_counters):
    client = Client(REMOTE_ADDR="203.0.113.9")
    answers = [
        client.post("/api/v1/auth/token/", {"username": "erin", "password": f"guess-{i}"}).status_code
        for i in range(settings.GLASSBOX_SIGNIN_MAX_FAILURES + 3)
    ]
    # Even the right password is refused while the window lasts.
    right = client.post("/api/v1/auth/token/", {"username": "erin", "password": "correct horse battery staple"})
    for status in answers[settings.GLASSBOX_SIGNIN_MAX_FAILURES :]:
        tally("sign-in guesses past the limit", accepted=status < 400)
    tally("sign-in guesses past the limit", accepted=right.status_code < 400)
    assert answers[: settings.GLASSBOX_SIGNIN_MAX_FAILURES] == [400] * settings.GLASSBOX_SIGNIN_MAX_FAILURES
    assert answers[settings.GLASSBOX_SIGNIN_MAX_FAILURES :] == [429] * 3
    assert right.status_code == 429 and "Too many" in right.json()["detail"] and right["Retry-After"]
    assert AuditEvent.objects.filter(
        action="auth.login", outcome="denied", detail__reason="too many failed sign-ins"
    ).exists()


@pytest.mark.parametrize(
    "trusted_proxies, forwarded_for",
    [
        (0, "198.51.100.{n}"),  # no proxy: a header anyone can write is ignored
        (1, "198.51.100.{n}, 203.0.113.9"),  # one proxy: only the entry it appended counts
    ],
    ids=["no trusted proxy", "one trusted proxy"],
)
def test_spoofing_x_forwarded_for_does_not_buy_more_guesses(
    engineer, settings, fresh_signin_counters, trusted_proxies, forwarded_for
):
    settings.GLASSBOX_TRUSTED_PROXIES = trusted_proxies
    client = Client(REMOTE_ADDR="10.20.0.1")
    limit = settings.GLASSBOX_SIGNIN_MAX_FAILURES
    answers = [
        client.post(
            "/api/v1/auth/token/",
            {"username": "erin", "password": f"guess-{n}"},
            HTTP_X_FORWARDED_FOR=forwarded_for.format(n=n),
        ).status_code
        for n in range(limit + 3)
    ]
    for status in answers[limit:]:
        tally("sign-in guesses, spoofed X-Forwarded-For", accepted=status < 400)
    assert answers == [400] * limit + [429] * 3


@pytest.mark.parametrize("path", ["/api/v1/datasets/", "/api/v1/models/zh-sentiment/versions/"])
def test_an_upload_by_someone_who_may_not_upload_is_refused_unread(reviewer, sentiment_model, path):
    size = 50 * 1024 * 1024
    stream = CountingJsonStream(size)  # what it sends does not matter: none of it may be read
    before = Unchanged()

    response = api_client_for(reviewer).generic(
        "POST",
        path,
        b"",
        content_type="multipart/form-data; boundary=corpus",
        CONTENT_LENGTH=str(size),
        **{"wsgi.input": stream},
    )

    before.refused(response, "upload by a role that may not upload", statuses=(403,))
    assert stream.sent == 0
    assert AuditEvent.objects.filter(
        outcome="denied", actor_username="rita", action__in=["dataset.create", "version.create"]
    ).exists()
