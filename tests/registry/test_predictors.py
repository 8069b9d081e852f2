"""Predictors against real, locally trained demo models (quick mode)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from registry.demo_training import train_demo_models
from registry.predictors import (
    ArtifactLoadError,
    clear_predictor_cache,
    get_predictor,
    load_predictor,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


class Tripwire:
    """A non-sklearn type: loading it would run __setstate__ and flip the flag."""

    constructed = False

    def __init__(self) -> None:
        self.armed = True  # skops only restores state that is not empty

    def __setstate__(self, state: dict) -> None:
        Tripwire.constructed = True
        self.__dict__.update(state)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    out_dir = tmp_path_factory.mktemp("demo")
    manifest = train_demo_models(out_dir, quick=True)
    print("quick demo manifest:", json.dumps(manifest))
    return out_dir, manifest


@pytest.fixture(scope="module")
def bert_dir(demo, tmp_path_factory) -> Path:
    out_dir, manifest = demo
    target = tmp_path_factory.mktemp("bert")
    with zipfile.ZipFile(out_dir / manifest["bert"]["artifact"]) as archive:
        archive.extractall(target)
    return target


@pytest.fixture
def skops_file(demo) -> Path:
    out_dir, manifest = demo
    return out_dir / manifest["sklearn"]["artifact"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_predictor_cache()
    yield
    clear_predictor_cache()


def _run_load_check(path: Path, flavor: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    completed = subprocess.run(
        [sys.executable, "-m", "registry.load_check", str(path), flavor],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, completed.stdout
    return json.loads(lines[0])


def test_demo_outputs_are_cached_and_complete(demo):
    out_dir, manifest = demo
    started = time.monotonic()
    assert train_demo_models(out_dir, quick=True) == manifest
    assert time.monotonic() - started < 1.0
    with open(out_dir / manifest["holdout"], encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["text", "label"]
    assert len(rows) == 201 and {label for _, label in rows[1:]} == {"negative", "positive"}


def test_bert_predictor_classifies_chinese(demo, bert_dir):
    _, manifest = demo
    with zipfile.ZipFile(demo[0] / manifest["bert"]["artifact"]) as archive:
        assert "config.json" in archive.namelist()  # files sit at the archive root
    predictor = load_predictor(bert_dir, "transformers")
    assert predictor.flavor == "transformers"
    assert predictor.labels == ["negative", "positive"]
    assert predictor.max_length == 128
    probs = predictor.predict_proba(["这本书很好，推荐！", "质量太差了，很失望", "好"], batch_size=2)
    assert probs.shape == (3, 2) and probs.dtype == np.float64
    assert np.allclose(probs.sum(axis=1), 1.0) and (probs >= 0).all()
    assert predictor.predict_proba([]).shape == (0, 2)
    assert predictor.tokenize("很好") == ["很", "好"]
    # Truncated to what the model accepts, minus [CLS] and [SEP].
    assert len(predictor.tokenize("好" * 500)) == 126
    assert predictor.predict_proba(["好" * 500]).shape == (1, 2)


def test_sklearn_predictor_classifies_chinese(demo, skops_file):
    _, manifest = demo
    assert manifest["sklearn"]["accuracy"] > 0.6
    predictor = load_predictor(skops_file, "sklearn")
    assert predictor.labels == ["negative", "positive"] and predictor.max_length is None
    probs = predictor.predict_proba(["这本书很好，推荐！", "质量太差了，很失望"])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1.0)
    assert predictor.labels[int(probs[0].argmax())] == "positive"
    assert predictor.labels[int(probs[1].argmax())] == "negative"
    assert predictor.predict_proba([]).shape == (0, 2)
    assert predictor.tokenize("很好") == ["很", "好"]


def test_sklearn_predictor_from_directory(skops_file, tmp_path):
    shutil.copy(skops_file, tmp_path / "model.skops")
    assert load_predictor(tmp_path, "sklearn").labels == ["negative", "positive"]
    shutil.copy(skops_file, tmp_path / "second.skops")
    with pytest.raises(ArtifactLoadError, match="exactly one"):
        load_predictor(tmp_path, "sklearn")


def test_pickle_weights_beside_safetensors_are_refused(bert_dir, tmp_path):
    model_dir = shutil.copytree(bert_dir, tmp_path / "model")
    (model_dir / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ArtifactLoadError, match="pytorch_model.bin"):
        load_predictor(model_dir, "transformers")


def test_truncated_safetensors_are_refused(bert_dir, tmp_path):
    model_dir = shutil.copytree(bert_dir, tmp_path / "model")
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ArtifactLoadError, match="^weights failed to load: "):
        load_predictor(model_dir, "transformers")


def test_transformers_dir_without_id2label_is_refused(bert_dir, tmp_path):
    model_dir = shutil.copytree(bert_dir, tmp_path / "model")
    config = json.loads((model_dir / "config.json").read_text())
    del config["id2label"]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactLoadError, match="id2label"):
        load_predictor(model_dir, "transformers")


def test_skops_with_disallowed_function_is_refused(tmp_path):
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "evil.skops"
    skops.io.dump(Pipeline([("run", FunctionTransformer(func=os.system)), ("clf", LogisticRegression())]), path)
    with pytest.raises(ArtifactLoadError, match=r"does not allow: \w+\.system"):
        load_predictor(path, "sklearn")


def test_skops_with_foreign_class_is_refused_before_loading(tmp_path):
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    path = tmp_path / "foreign.skops"
    skops.io.dump(Pipeline([("trip", Tripwire()), ("clf", LogisticRegression())]), path)
    Tripwire.constructed = False
    with pytest.raises(ArtifactLoadError, match="Tripwire"):
        load_predictor(path, "sklearn")
    assert not Tripwire.constructed
    # The tripwire is real: loading the file does construct the object.
    skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    assert Tripwire.constructed


def test_get_predictor_caches_by_digest_and_evicts_lru(skops_file, settings):
    settings.GLASSBOX_PREDICTOR_CACHE_SIZE = 2
    first = get_predictor("a" * 64, skops_file, "sklearn")
    assert get_predictor("a" * 64, skops_file, "sklearn") is first
    second = get_predictor("b" * 64, skops_file, "sklearn")
    assert second is not first
    get_predictor("a" * 64, skops_file, "sklearn")  # "a" is now the most recent
    get_predictor("c" * 64, skops_file, "sklearn")  # evicts "b"
    assert get_predictor("a" * 64, skops_file, "sklearn") is first
    assert get_predictor("b" * 64, skops_file, "sklearn") is not second


def test_get_predictor_loads_once_for_concurrent_callers(bert_dir):
    barrier = threading.Barrier(4)
    results: list[object] = []

    def ask() -> None:
        barrier.wait()
        results.append(get_predictor("d" * 64, bert_dir, "transformers"))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(result is results[0] for result in results)


def test_get_predictor_does_not_cache_failures(bert_dir, tmp_path):
    broken = tmp_path / "missing"
    with pytest.raises(ArtifactLoadError):
        get_predictor("e" * 64, broken, "transformers")
    assert get_predictor("e" * 64, bert_dir, "transformers").labels == ["negative", "positive"]


def test_load_check_reports_good_and_broken_models(bert_dir, skops_file, tmp_path):
    assert _run_load_check(bert_dir, "transformers") == {
        "ok": True,
        "labels": ["negative", "positive"],
        "max_length": 128,
    }
    assert _run_load_check(skops_file, "sklearn") == {
        "ok": True,
        "labels": ["negative", "positive"],
        "max_length": None,
    }

    broken = shutil.copytree(bert_dir, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not safetensors at all")
    result = _run_load_check(broken, "transformers")
    assert result["ok"] is False and result["detail"].startswith("weights failed to load: ")
