"""Batching by token length (rows come back in their order), halving on
out-of-memory, and the device a predictor runs on. CUDA tests are marked
`cuda` and skip, saying why, on machines without a CUDA device."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import numpy as np
import pytest

from explanations.masking import predict_rows
from registry.batching import OutOfMemory, plan_batches
from registry.predictors import DeviceUnavailable, TransformersPredictor, resolve_device

torch = pytest.importorskip("torch")
NO_CUDA = "needs a CUDA device: torch.cuda.is_available() is False on this machine"


@pytest.fixture(scope="module")
def bert_dir(demo_models, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("bert")
    with zipfile.ZipFile(demo_models["bert_zip"]) as archive:
        archive.extractall(target)
    return target


@pytest.fixture(scope="module")
def mixed_texts() -> list[str]:
    # Short and long texts (some past the demo model's 128 tokens), shuffled.
    rng = random.Random(3)
    base = ["很好", "质量太差了，不会再买", "物流很快，包装也不错，下次还来", "一般般"]
    texts = [rng.choice(base) * rng.choice([1, 2, 5, 20, 60]) for _ in range(40)]
    rng.shuffle(texts)
    return texts


def test_plan_batches_covers_every_row_once_within_rows_and_token_budget():
    lengths = [5, 300, 12, 12, 7, 512, 40, 3, 90, 12]
    batches = plan_batches(lengths, max_rows=3, token_budget=600)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 600
    # A row longer than the budget still gets a batch of its own.
    assert [5] in batches
    assert plan_batches([], max_rows=4, token_budget=10) == []


def test_bucketed_predictions_come_back_in_the_original_order(bert_dir, mixed_texts):
    predictor = TransformersPredictor(bert_dir)
    predictor.batch_tokens = 600  # several buckets of different sizes for these texts
    together = predictor.predict_proba(mixed_texts, batch_size=16)
    one_by_one = np.vstack([predictor.predict_proba([text]) for text in mixed_texts])
    assert np.abs(together - one_by_one).max() < 1e-6


def test_predict_rows_plans_by_token_count_and_keeps_row_order(bert_dir, mixed_texts):
    predictor = TransformersPredictor(bert_dir)
    predictor.batch_tokens = 600
    counts = [len(predictor.tokenize(text)) for text in mixed_texts]
    seen = []
    rows = predict_rows(predictor, mixed_texts, counts, batch_size=8, progress=seen.append)
    expected = np.vstack([predictor.predict_proba([text]) for text in mixed_texts])
    assert np.abs(rows - expected).max() < 1e-6
    assert seen and seen[-1] == pytest.approx(0.95)


class RunsOutOfMemory(TransformersPredictor):
    """A device that cannot hold more than ``fits`` rows: it raises torch's own
    CUDA out-of-memory error for any larger batch."""

    fits = 2

    def _forward(self, encoded, rows):
        if len(rows) > self.fits:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(rows)} rows")
        return super()._forward(encoded, rows)


def test_out_of_memory_halves_the_batch_and_the_answers_stay_the_same(bert_dir, mixed_texts):
    reference = TransformersPredictor(bert_dir).predict_proba(mixed_texts)
    predictor = RunsOutOfMemory(bert_dir)
    budget = predictor.batch_tokens
    assert np.abs(predictor.predict_proba(mixed_texts, batch_size=16) - reference).max() < 1e-6
    assert predictor.batch_tokens < budget  # later batches start smaller


def test_out_of_memory_on_a_single_text_fails_with_a_clear_reason(bert_dir):
    predictor = RunsOutOfMemory(bert_dir)
    predictor.fits = 0
    with pytest.raises(OutOfMemory, match="out of memory on a batch of one text"):
        predictor.predict_proba(["很好", "太差"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: auto picks it (see the cuda tests)")
def test_device_auto_is_cpu_without_cuda_and_cuda_asked_for_is_a_clear_error():
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(DeviceUnavailable, match="GLASSBOX_DEVICE=cuda, but torch finds no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(DeviceUnavailable, match="must be one of auto, cpu, cuda"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_worker_asked_for_cuda_without_one_refuses_to_load_with_that_reason(engineer, demo_models, settings):
    from registry.predictors import clear_predictor_cache
    from registry.selectors import version_predictor
    from tests.explanations.reporting import uploaded_bert

    settings.GLASSBOX_INFERENCE_BACKEND = "torch"
    version = uploaded_bert(uploader=engineer, demo_models=demo_models)
    settings.GLASSBOX_DEVICE = "cuda"
    clear_predictor_cache()
    with pytest.raises(DeviceUnavailable, match="set GLASSBOX_DEVICE=auto or cpu"):
        version_predictor(version)
    settings.GLASSBOX_DEVICE = "auto"
    assert version_predictor(version).device == "cpu"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_cuda_predictor_agrees_with_cpu(bert_dir, mixed_texts):
    assert resolve_device("auto") == "cuda"
    cpu = TransformersPredictor(bert_dir).predict_proba(mixed_texts)
    gpu = TransformersPredictor(bert_dir, device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    assert np.abs(gpu.predict_proba(mixed_texts) - cpu).max() <= 1e-4


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_onnx_runtime_cuda_provider_agrees_with_torch_on_cuda(bert_dir, tmp_path):
    import onnxruntime

    from registry.onnx_export import choose_backend

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("ONNX Runtime has no CUDA provider: install requirements-gpu.txt on this machine")
    reference = TransformersPredictor(bert_dir, device="cuda")
    choice = choose_backend(reference, bert_dir, tmp_path / "export", device="cuda")
    assert choice.backend == "onnx", choice.reason
