"""Prove an artifact loads and answers, in a process of its own.

    python -m registry.load_check <path> <flavor>

Prints one JSON line on stdout, {"ok": true, "labels": [...], "max_length": n}
or {"ok": false, "detail": "..."}, and exits 0 either way; a non-zero exit
means the check itself crashed. Needs no Django settings.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from registry.predictors import ArtifactLoadError, load_predictor

PROBE_TEXTS = ["测试", "很好"]


def check(path: Path, flavor: str) -> dict:
    try:
        predictor = load_predictor(path, flavor)
    except ArtifactLoadError as exc:
        return {"ok": False, "detail": str(exc)}
    try:
        probs = predictor.predict_proba(PROBE_TEXTS)
    except Exception as exc:  # the model loaded but cannot answer
        return {"ok": False, "detail": f"model failed to predict: {type(exc).__name__}: {str(exc)[:200]}"}
    expected = (len(PROBE_TEXTS), len(predictor.labels))
    if probs.shape != expected or not (probs >= 0).all() or abs(probs.sum(axis=1) - 1).max() > 1e-6:
        return {"ok": False, "detail": f"model answered with invalid probabilities (shape {list(probs.shape)})"}
    return {"ok": True, "labels": predictor.labels, "max_length": predictor.max_length}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m registry.load_check <path> <flavor>", file=sys.stderr)
        return 2
    # Libraries may print while loading; stdout carries only our JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        result = check(Path(argv[0]), argv[1])
    print(json.dumps(result, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
