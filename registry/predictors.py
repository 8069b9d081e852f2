"""One predictor interface over the two model flavors Glassbox serves.

The web process imports this module, so torch, transformers, sklearn and skops
are imported only inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from registry.batching import batch_token_budget, plan_batches, run_halving

if TYPE_CHECKING:
    import numpy

logger = logging.getLogger(__name__)

FLAVORS = ("transformers", "sklearn")
# How a transformers model is run; scikit-learn models are always their own.
BACKENDS = ("torch", "onnx")
DEVICES = ("auto", "cpu", "cuda")

# Files that would be unpickled by torch/joblib. A directory holding any of
# them is refused even when safetensors are present, so that nothing down the
# line can ever fall back to them.
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")

# Types skops may report as untrusted that we still accept: plain data
# containers only. Callables such as builtins.eval are never on this list.
SAFE_BUILTIN_TYPES = frozenset(
    f"builtins.{name}"
    for name in (
        "bool",
        "bytearray",
        "bytes",
        "complex",
        "dict",
        "float",
        "frozenset",
        "int",
        "list",
        "NoneType",
        "object",
        "range",
        "set",
        "slice",
        "str",
        "tuple",
    )
)
# Under these prefixes only classes are accepted (see _allowed_skops_type):
# a module-level function such as numpy.load, numpy.save,
# numpy.ctypeslib.load_library or sklearn.datasets.fetch_openml would run as
# a FunctionTransformer's func on every prediction.
TRUSTED_MODULE_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.")
# The few numpy functions accepted as a FunctionTransformer's func: pure array
# reshaping, no files, no memory tricks.
SAFE_NUMPY_FUNCTIONS = frozenset(
    f"numpy.{name}" for name in ("vstack", "hstack", "column_stack", "ravel", "squeeze", "asarray", "atleast_2d")
)


class ArtifactLoadError(Exception):
    """The artifact cannot be served; the message is shown to the API user."""


class Predictor:
    flavor: str
    labels: list[str]
    max_length: int | None

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> numpy.ndarray:
        """Class probabilities, shape (len(texts), len(labels)), float64."""
        raise NotImplementedError

    def tokenize(self, text: str) -> list[str]:
        """The tokens the model sees for ``text`` (without special tokens)."""
        raise NotImplementedError

    # What replaces a hidden token when an explainer masks it ("" deletes it).
    mask_text: str = ""
    # Padded tokens per forward pass (batch rows x longest row); None: rows only.
    batch_tokens: int | None = None
    backend: str = "torch"
    device: str = "cpu"
    # How many tokens of a text the model reads (special tokens excluded); None: all.
    max_tokens: int | None = None

    def tokenize_with_offsets(self, text: str) -> list[tuple[str, int, int]]:
        """Every token of ``text`` (not truncated) with its character span in ``text``."""
        raise NotImplementedError

    def known_characters(self) -> frozenset[str] | None:
        """The single characters the model has a feature for (drift monitoring
        counts the others as unknown); None when the model cannot tell."""
        return None


def _short(exc: BaseException, limit: int = 200) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _normalized(probs: numpy.ndarray) -> numpy.ndarray:
    import numpy as np

    probs = np.asarray(probs, dtype=np.float64)
    sums = probs.sum(axis=1, keepdims=True)
    sums[sums == 0] = 1.0
    return probs / sums


class TransformersPredictor(Predictor):
    """A sequence classifier served by torch or, after export, by ONNX Runtime
    (``backend``), on the CPU or a CUDA device (``device``). The torch model is
    always loaded: it is what an ONNX graph is checked against, and what
    gradient-based explainers need."""

    flavor = "transformers"

    def __init__(
        self,
        model_dir: Path,
        *,
        backend: str = "torch",
        device: str = "cpu",
        onnx_file: Path | None = None,
        threads: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        if backend not in BACKENDS:
            raise ValueError(f"unknown inference backend {backend!r} (expected one of {', '.join(BACKENDS)})")
        self._torch = torch
        self.backend = backend
        self.device = device
        # local_files_only: never reach a hub; trust_remote_code stays False.
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            model_dir,
            config=config,
            local_files_only=True,
            use_safetensors=True,
            output_loading_info=True,
        )
        # transformers only warns about missing weights and fills them with
        # random values; a governed model must be exactly what was uploaded.
        missing = list(info.get("missing_keys") or []) + [
            str(item[0]) if isinstance(item, (tuple, list)) else str(item) for item in info.get("mismatched_keys") or []
        ]
        if missing:
            raise ValueError(f"{len(missing)} weight tensors missing or mis-shaped (e.g. {sorted(missing)[0]})")
        self.model = model.eval().to(device)

        id2label = {int(k): str(v) for k, v in config.id2label.items()}
        if sorted(id2label) != list(range(len(id2label))):
            raise ValueError("config id2label ids must be 0..n-1")
        self.labels = [id2label[i] for i in range(len(id2label))]
        if config.num_labels != len(self.labels):
            raise ValueError("config num_labels does not match id2label")

        limits = [self.tokenizer.model_max_length, getattr(config, "max_position_embeddings", None)]
        # model_max_length is a huge sentinel when the tokenizer does not know.
        known = [int(n) for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
        self.max_length = min(known) if known else 512
        self.max_tokens = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)
        # Explainers hide a token by writing the model's own mask token in its place.
        self.mask_text = self.tokenizer.mask_token or self.tokenizer.unk_token or ""
        # Fast tokenizers mutate their truncation/padding state per call and
        # raise "Already borrowed" when shared between threads.
        self._tokenizer_lock = threading.Lock()
        self.batch_tokens = batch_token_budget()
        self._session = None
        if backend == "onnx":
            if onnx_file is None:
                raise ValueError("the onnx backend needs the exported graph (onnx_file)")
            self._session = onnx_session(Path(onnx_file), device=device, threads=threads)
            self._session_inputs = [i.name for i in self._session.get_inputs()]

    def _encode(self, texts: list[str], **kwargs):
        with self._tokenizer_lock:
            return self.tokenizer(texts, truncation=True, max_length=self.max_length, **kwargs)

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> numpy.ndarray:
        import numpy as np

        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        if not texts:
            return out
        # Tokenize once, then batch rows of similar token length together, as
        # many as the token budget allows: far less padding to compute.
        encoded = self._encode(texts)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        for batch in plan_batches(lengths, max_rows=batch_size, token_budget=self.batch_tokens):
            for rows, probs in run_halving(
                batch, lambda rows: self._forward(encoded, rows), on_out_of_memory=self._shrink_after_oom
            ):
                out[rows] = probs
        return _normalized(out)

    def torch_parts(self):
        """(model, tokenizer, device) of the torch model, for explainers that
        need gradients (integrated gradients), whichever backend serves."""
        return self.model, self.tokenizer, next(self.model.parameters()).device

    def _padded(self, encoded, rows: list[int]) -> dict[str, numpy.ndarray]:
        """The rows' model inputs as int64 arrays padded to the longest row."""
        import numpy as np

        longest = max(len(encoded["input_ids"][i]) for i in rows)
        left = self.tokenizer.padding_side == "left"
        pad_id = self.tokenizer.pad_token_id or 0
        arrays = {"input_ids": np.full((len(rows), longest), pad_id, dtype=np.int64)}
        arrays["attention_mask"] = np.zeros((len(rows), longest), dtype=np.int64)
        if "token_type_ids" in encoded:
            arrays["token_type_ids"] = np.zeros((len(rows), longest), dtype=np.int64)
        for r, i in enumerate(rows):
            n = len(encoded["input_ids"][i])
            where = slice(longest - n, longest) if left else slice(0, n)
            arrays["input_ids"][r, where] = encoded["input_ids"][i]
            arrays["attention_mask"][r, where] = 1
            if "token_type_ids" in encoded:
                arrays["token_type_ids"][r, where] = encoded["token_type_ids"][i]
        return arrays

    def _forward(self, encoded, rows: list[int]) -> numpy.ndarray:
        """Probabilities (float64) of the given rows, by this predictor's backend."""
        import numpy as np

        arrays = self._padded(encoded, rows)
        if self._session is not None:
            logits = self._session.run(["logits"], {name: arrays[name] for name in self._session_inputs})[0]
            logits = logits.astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            exp = np.exp(logits)
            return exp / exp.sum(axis=1, keepdims=True)
        torch = self._torch
        names = [name for name in self.tokenizer.model_input_names if name in arrays]
        with torch.inference_mode():
            inputs = {name: torch.from_numpy(arrays[name]).to(self.device) for name in names}
            logits = self.model(**inputs).logits.double()
            return torch.softmax(logits, dim=-1).cpu().numpy()

    def _shrink_after_oom(self, rows: int) -> None:
        # Later batches start from the size that failed, halved; free what the
        # failed attempt left in the CUDA allocator's cache.
        self.batch_tokens = max(1, self.batch_tokens // 2)
        if self.device == "cuda":
            self._torch.cuda.empty_cache()
        logger.warning("out of memory on a batch of %s rows: the token budget is now %s", rows, self.batch_tokens)

    def tokenize(self, text: str) -> list[str]:
        enc = self._encode([str(text)], return_special_tokens_mask=True)
        ids, special = enc["input_ids"][0], enc["special_tokens_mask"][0]
        kept = [i for i, s in zip(ids, special) if not s]
        return list(self.tokenizer.convert_ids_to_tokens(kept))

    def tokenize_with_offsets(self, text: str) -> list[tuple[str, int, int]]:
        text = str(text)
        with self._tokenizer_lock:
            enc = self.tokenizer(
                [text], add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
            )
        tokens = self.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
        return [(token, int(start), int(end)) for token, (start, end) in zip(tokens, enc["offset_mapping"][0])]

    def known_characters(self) -> frozenset[str]:
        if not hasattr(self, "_known_characters"):
            vocab = self.tokenizer.get_vocab()
            # A WordPiece vocabulary knows a character alone or as a continuation piece.
            singles = {token for token in vocab if len(token) == 1}
            singles |= {token[2:] for token in vocab if len(token) == 3 and token.startswith("##")}
            self._known_characters = frozenset(singles)
        return self._known_characters


class SklearnPredictor(Predictor):
    flavor = "sklearn"
    backend = "sklearn"
    max_length = None

    def __init__(self, skops_file: Path) -> None:
        import skops.io

        # Inspect the types first: skops instantiates whatever it is told to
        # trust, so anything outside the allowlist is refused unloaded.
        try:
            untrusted = skops.io.get_untrusted_types(file=skops_file)
        except Exception as exc:
            raise ArtifactLoadError(f"not a readable .skops file: {_short(exc)}") from exc
        refused = sorted(t for t in untrusted if not _allowed_skops_type(t))
        if refused:
            raise ArtifactLoadError(f"the .skops file uses types Glassbox does not allow: {', '.join(refused)}")
        try:
            model = skops.io.load(skops_file, trusted=list(untrusted))
        except Exception as exc:
            raise ArtifactLoadError(f"model failed to load: {_short(exc)}") from exc
        if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
            raise ArtifactLoadError("the sklearn model has no predict_proba (a fitted classifier is required)")
        self.model = model
        self.labels = [str(c) for c in model.classes_]

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> numpy.ndarray:
        import numpy as np

        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float64)
        batch = max(1, batch_size)
        parts = [self.model.predict_proba(texts[i : i + batch]) for i in range(0, len(texts), batch)]
        return _normalized(np.concatenate(parts, axis=0))

    def tokenize(self, text: str) -> list[str]:
        return list(str(text))

    def tokenize_with_offsets(self, text: str) -> list[tuple[str, int, int]]:
        # One span per character; whitespace only separates and is never explained.
        return [(ch, i, i + 1) for i, ch in enumerate(str(text)) if not ch.isspace()]

    def known_characters(self) -> frozenset[str] | None:
        # The vectorizer of the pipeline (e.g. TF-IDF over characters) holds
        # the features; single-character entries are the characters it knows.
        steps = getattr(self.model, "steps", None) or [(None, self.model)]
        for _, step in steps:
            vocabulary = getattr(step, "vocabulary_", None)
            if isinstance(vocabulary, dict):
                return frozenset(term for term in vocabulary if isinstance(term, str) and len(term) == 1)
        return None


def _allowed_skops_type(name: str) -> bool:
    if name in SAFE_BUILTIN_TYPES or name in SAFE_NUMPY_FUNCTIONS:
        return True
    if not name.startswith(TRUSTED_MODULE_PREFIXES):
        return False
    import pydoc

    import numpy

    try:
        found = pydoc.locate(name)  # imports only modules of the trusted packages above
    except pydoc.ErrorDuringImport:
        return False
    if not isinstance(found, type):
        return False
    if name.startswith("numpy."):
        # Array data and its dtypes, and random states; not numpy.memmap (an
        # ndarray subclass that opens files) or anything else.
        return (
            found is numpy.ndarray
            or issubclass(found, (numpy.generic, numpy.dtype))
            or found.__module__.startswith("numpy.random")
        )
    return True


def _check_transformers_dir(path: Path) -> None:
    if not path.is_dir():
        raise ArtifactLoadError("a transformers model must be a directory")
    pickled = sorted(
        str(p.relative_to(path))
        for p in path.rglob("*")
        if p.is_file() and p.name.lower().endswith(PICKLE_WEIGHT_SUFFIXES)
    )
    if pickled:
        raise ArtifactLoadError(f"pickle-based files are not allowed (use safetensors): {', '.join(pickled)}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ArtifactLoadError("config.json is missing")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactLoadError(f"config.json is not valid JSON: {_short(exc)}") from exc
    if not isinstance(config, dict):
        raise ArtifactLoadError("config.json must hold a JSON object")
    if not isinstance(config.get("id2label"), dict) or not config["id2label"]:
        raise ArtifactLoadError("config.json has no id2label (the class names)")
    if not any(path.glob("*.safetensors")):
        raise ArtifactLoadError("no *.safetensors weights found")


def _find_skops_file(path: Path) -> Path:
    if path.is_file():
        if path.suffix != ".skops":
            raise ArtifactLoadError("a sklearn model must be a .skops file")
        return path
    if not path.is_dir():
        raise ArtifactLoadError("model path does not exist")
    found = sorted(p for p in path.rglob("*.skops") if p.is_file())
    if len(found) != 1:
        raise ArtifactLoadError(f"expected exactly one .skops file, found {len(found)}")
    return found[0]


def load_predictor(path: Path, flavor: str) -> Predictor:
    path = Path(path)
    if flavor == "transformers":
        _check_transformers_dir(path)
        try:
            return TransformersPredictor(path)
        except ArtifactLoadError:
            raise
        except Exception as exc:
            raise ArtifactLoadError(f"weights failed to load: {_short(exc)}") from exc
    if flavor == "sklearn":
        return SklearnPredictor(_find_skops_file(path))
    raise ArtifactLoadError(f"unknown flavor {flavor!r} (expected one of {', '.join(FLAVORS)})")


class DeviceUnavailable(Exception):
    """GLASSBOX_DEVICE asks for a device this machine does not have."""


def resolve_device(requested: str = "auto") -> str:
    """ "cpu" or "cuda" for GLASSBOX_DEVICE's value. "auto" takes CUDA when torch
    sees a device; "cuda" on a machine without one is a configuration error and
    says so (a worker silently running a GPU queue on its CPU would hide it)."""
    requested = (requested or "auto").strip().lower()
    if requested not in DEVICES:
        raise DeviceUnavailable(f"GLASSBOX_DEVICE must be one of {', '.join(DEVICES)}, not {requested!r}")
    if requested == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise DeviceUnavailable(
            "GLASSBOX_DEVICE=cuda, but torch finds no CUDA device on this machine "
            "(torch.cuda.is_available() is False); set GLASSBOX_DEVICE=auto or cpu"
        )
    return "cpu"


def worker_threads() -> int:
    """The cores this process may run on (its CPU affinity), for ONNX Runtime's intra-op pool."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def onnx_session(path: Path, *, device: str, threads: int | None = None):
    """An ONNX Runtime session over an exported graph: every graph optimisation
    on, the intra-op pool sized to this worker's cores, CUDA where asked."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or worker_threads()
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DeviceUnavailable("ONNX Runtime has no CUDA provider here (install requirements-gpu.txt)")
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


CacheKey = tuple[str, str, str]  # (artifact digest, backend, device)

_cache: OrderedDict[CacheKey, Predictor] = OrderedDict()
_cache_lock = threading.Lock()
_loading_locks: dict[CacheKey, threading.Lock] = {}


def _cache_size() -> int:
    from django.conf import settings  # this module also runs without Django (the load check)

    return max(1, settings.GLASSBOX_PREDICTOR_CACHE_SIZE)


def _load(path: Path, flavor: str, *, backend: str, device: str, onnx_file: Path | None) -> Predictor:
    if flavor != "transformers" or (backend, device) == ("torch", "cpu"):
        return load_predictor(path, flavor)
    _check_transformers_dir(Path(path))
    try:
        return TransformersPredictor(Path(path), backend=backend, device=device, onnx_file=onnx_file)
    except (ArtifactLoadError, DeviceUnavailable):
        raise
    except Exception as exc:
        raise ArtifactLoadError(f"weights failed to load: {_short(exc)}") from exc


def get_predictor(
    sha256: str,
    path: Path,
    flavor: str,
    *,
    backend: str = "torch",
    device: str = "cpu",
    onnx_file: Path | None = None,
) -> Predictor:
    """A loaded predictor for an artifact digest run by a backend on a device,
    from a small per-process LRU keyed by all three (scikit-learn models are
    always ("sklearn", "cpu"))."""
    if flavor != "transformers":
        backend, device = "sklearn", "cpu"
    key = (sha256, backend, device)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        key_lock = _loading_locks.setdefault(key, threading.Lock())
    # A per-key lock: concurrent requests for one model load it once,
    # while other models can still load in parallel.
    with key_lock:
        with _cache_lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
        try:
            predictor = _load(path, flavor, backend=backend, device=device, onnx_file=onnx_file)
        except BaseException:
            with _cache_lock:
                _loading_locks.pop(key, None)
            raise
        with _cache_lock:
            # Publish and drop the loading lock together, so no newcomer can
            # miss both and load the same model again.
            _cache[key] = predictor
            _cache.move_to_end(key)
            _loading_locks.pop(key, None)
            while len(_cache) > _cache_size():
                _cache.popitem(last=False)
        return predictor


def cached_predictor_keys() -> list[CacheKey]:
    with _cache_lock:
        return list(_cache)


def clear_predictor_cache() -> None:
    with _cache_lock:
        _cache.clear()
