"""Inference and explanation at real model size: torch vs ONNX Runtime on the
demo char BERT and on a BERT-base-sized model built here.

    .venv/bin/python bench/scale.py [--quick] [--models demo,base] [--skip-explain]

The BERT-base-sized model (12 layers, hidden 768, 12 heads, intermediate 3072,
vocabulary 21,128, 512 positions, about 102 M parameters) gets random weights
and the demo's character-level tokenizer: nothing is downloaded, and random
weights cost the same time as trained ones. Texts are 50–80-character reviews
of the demo's held-out split. Per model it prints:

- raw batched forward rows/s with torch and with ONNX Runtime, and their ratio
  (ONNX only after registry/onnx_export.py's agreement check passed; the check's
  figures are printed);
- one-text predict latency p50/p99, torch vs ONNX;
- seconds per text of SHAP@500 (each backend), LIME@1000 and integrated
  gradients at its default steps, and each method's projected time for a
  100-text report on one worker;
- report efficiency: model rows/s inside the SHAP/LIME run ÷ raw rows/s of
  the same backend.

Full run: a few texts per method, bounded to about 15 minutes on two cores;
--quick: fewer texts and calls (a smoke run of a few minutes).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bert_base import build_bert_base  # noqa: E402

from explanations.explainers import get_explainer  # noqa: E402
from registry.demo_training import load_reviews, split_reviews  # noqa: E402
from registry.onnx_export import AGREEMENT_TOLERANCE, agreement_texts, check_agreement, export_onnx  # noqa: E402
from registry.predictors import TransformersPredictor, worker_threads  # noqa: E402

DEMO_DIR = ROOT / "var" / "demo-models"
QUICK_DEMO_DIR = ROOT / "var" / "test-demo-models"
IG_FALLBACK_STEPS = 32  # the ig explainer's default (h6's branch) when it is not on this one


def log(message: str) -> None:
    print(message, flush=True)


def heldout_texts(n: int) -> list[str]:
    _, holdout = split_reviews(load_reviews())
    texts = [text for text, _ in holdout if 50 <= len(text) <= 80]
    return texts[:n]


def demo_model_dir(work: Path, train_full: bool) -> tuple[Path, str]:
    """The full demo model where var/demo-models holds one (or --train-full
    trains it, minutes on a busy machine), else the quick one the tests train
    (same 2-layer, hidden-128 architecture: the same cost per row)."""
    from registry.demo_training import MANIFEST_FILE, train_demo_models

    if train_full or (DEMO_DIR / MANIFEST_FILE).is_file():
        folder, quick = DEMO_DIR, False
    else:
        folder, quick = QUICK_DEMO_DIR, True
    manifest = train_demo_models(folder, quick=quick)  # cached after the first run
    target = work / "demo"
    with zipfile.ZipFile(folder / manifest["bert"]["artifact"]) as archive:
        archive.extractall(target)
    return target, "quick" if quick else "full"


def base_model_dir(work: Path) -> Path:
    return build_bert_base(work / "base")


class Clock:
    """Wall seconds and this process's CPU seconds (every thread) of a block.

    On a machine shared with other work, wall time depends on the load of the
    moment while CPU seconds barely do: ratios of CPU seconds (ONNX vs torch,
    IG vs SHAP, inside a report vs raw) stay comparable between runs, and
    CPU seconds ÷ cores is what the block would take on an idle machine."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def rows_per_second(predictor, texts: list[str], rows: int) -> tuple[float, float]:
    """Rows per wall second and rows per CPU second of one batched pass."""
    batch = [texts[i % len(texts)] for i in range(rows)]
    predictor.predict_proba(batch[: min(32, rows)], batch_size=64)  # warm-up
    with Clock() as clock:
        predictor.predict_proba(batch, batch_size=64)
    return rows / clock.wall, rows / clock.cpu


def latency(predictor, texts: list[str], calls: int) -> tuple[float, float]:
    predictor.predict_proba(texts[:1])
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        predictor.predict_proba([texts[i % len(texts)]])
        samples.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 99))


def run_method(method: str, predictor, texts: list[str], params: dict | None = None) -> tuple[float, float, int]:
    """Wall seconds per text, CPU seconds per text and model rows of a report
    over ``texts``, run as the workers run it (plan_chunks, run_chunk)."""
    explainer = get_explainer(method)
    params = explainer.validate_params(params or {})
    with Clock() as clock:
        parts = [
            explainer.run_chunk(predictor, texts, [None] * len(texts), chunk, params)
            for chunk in explainer.plan_chunks(len(texts), params)
        ]
    rows = sum(int(part.get("model_rows", 0)) for part in parts)
    return clock.wall / len(texts), clock.cpu / len(texts), rows


def ig_seconds(predictor, texts: list[str]) -> tuple[float, float, str]:
    """Seconds per text of integrated gradients: the ig explainer where this
    branch has it, else Captum's LayerIntegratedGradients called directly the
    same way (input embeddings, [PAD] baseline, predicted label, 32 steps)."""
    try:
        get_explainer("ig")
    except KeyError:
        pass
    else:
        per_text, cpu_per_text, _ = run_method("ig", predictor, texts)
        return per_text, cpu_per_text, "ig explainer, default parameters"
    import torch
    from captum.attr import LayerIntegratedGradients

    model, tokenizer = predictor.model, predictor.tokenizer

    def forward(input_ids, attention_mask):
        return torch.softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits, dim=-1)

    integrator = LayerIntegratedGradients(forward, model.get_input_embeddings())
    started, cpu_started = time.perf_counter(), time.process_time()
    for text in texts:
        enc = tokenizer([text], truncation=True, max_length=predictor.max_length, return_special_tokens_mask=True)
        ids = torch.tensor(enc["input_ids"])
        mask = torch.tensor(enc["attention_mask"])
        special = torch.tensor(enc["special_tokens_mask"]).bool()
        base = ids.clone()
        base[~special] = tokenizer.pad_token_id
        with torch.no_grad():
            target = int(forward(ids, mask).argmax(dim=-1))
        integrator.attribute(
            ids,
            baselines=base,
            additional_forward_args=(mask,),
            target=target,
            n_steps=IG_FALLBACK_STEPS,
            internal_batch_size=IG_FALLBACK_STEPS,
        )
    label = (
        f"Captum LayerIntegratedGradients called directly, n_steps={IG_FALLBACK_STEPS} "
        "(the ig explainer is not on this branch)"
    )
    return (time.perf_counter() - started) / len(texts), (time.process_time() - cpu_started) / len(texts), label


def bench_model(key: str, name: str, model_dir: Path, work: Path, texts: list[str], plan: dict) -> dict:
    log(f"\n=== {name} ===")
    started = time.perf_counter()
    torch_predictor = TransformersPredictor(model_dir)
    parameters = sum(p.numel() for p in torch_predictor.model.parameters())
    log(f"parameters: {parameters / 1e6:.1f} M; loaded in {time.perf_counter() - started:.1f}s")

    started = time.perf_counter()
    export_dir = work / f"onnx-{key}"
    export_onnx(torch_predictor, export_dir)
    export_seconds = time.perf_counter() - started
    size = sum(f.stat().st_size for f in export_dir.iterdir())
    onnx_predictor = TransformersPredictor(
        model_dir, backend="onnx", onnx_file=export_dir / "model.onnx", threads=worker_threads()
    )
    started = time.perf_counter()
    check = check_agreement(
        torch_predictor, onnx_predictor, agreement_texts(plan["agreement_texts"]), tolerance=AGREEMENT_TOLERANCE
    )
    log(
        f"ONNX export: {export_seconds:.1f}s, {size / 2**20:.0f} MiB; agreement check "
        f"({time.perf_counter() - started:.1f}s): {'passed' if check.ok else 'FAILED'}, {check.summary}"
    )

    out: dict = {"name": name, "agreement_ok": check.ok}
    out["torch_rows_s"], torch_rows_cpu_s = rows_per_second(torch_predictor, texts, plan["raw_rows"])
    out["onnx_rows_s"], onnx_rows_cpu_s = rows_per_second(onnx_predictor, texts, plan["raw_rows"])
    log(
        f"raw batched rows/s ({plan['raw_rows']} rows of 50–80 characters): torch {out['torch_rows_s']:.1f}, "
        f"ONNX {out['onnx_rows_s']:.1f}, ONNX/torch {out['onnx_rows_s'] / out['torch_rows_s']:.2f}×; "
        f"per CPU second: torch {torch_rows_cpu_s:.2f}, ONNX {onnx_rows_cpu_s:.2f}, "
        f"ONNX/torch {onnx_rows_cpu_s / torch_rows_cpu_s:.2f}×"
    )
    t50, t99 = latency(torch_predictor, texts, plan["latency_calls"])
    o50, o99 = latency(onnx_predictor, texts, plan["latency_calls"])
    log(
        f"one-text predict ({plan['latency_calls']} calls): torch p50 {t50:.1f} ms p99 {t99:.1f} ms; "
        f"ONNX p50 {o50:.1f} ms p99 {o99:.1f} ms"
    )
    if plan["skip_explain"]:
        return out

    serving = onnx_predictor if check.ok else torch_predictor
    serving_name = "ONNX" if check.ok else "torch"
    rows_s = {"torch": out["torch_rows_s"], "ONNX": out["onnx_rows_s"]}
    rows_cpu_s = {"torch": torch_rows_cpu_s, "ONNX": onnx_rows_cpu_s}
    cores = os.cpu_count() or 1
    lines = []
    for method, label, predictor, backend, n in (
        ("shap", "SHAP@500", torch_predictor, "torch", plan["shap_texts"]),
        ("shap", "SHAP@500", onnx_predictor, "ONNX", plan["shap_texts"]),
        ("lime", "LIME@1000", serving, serving_name, plan["lime_texts"]),
    ):
        if backend == "ONNX" and not check.ok:
            log(f"{label} with ONNX: skipped (the agreement check failed, ONNX would not serve)")
            continue
        per_text, cpu_per_text, rows = run_method(method, predictor, texts[:n])
        inside = rows / (per_text * n)
        efficiency = inside / rows_s[backend]
        cpu_efficiency = rows / (cpu_per_text * n) / rows_cpu_s[backend]
        lines.append((label, backend, per_text, cpu_per_text))
        log(
            f"{label} ({backend}, {n} texts): {per_text:.2f} s/text, {rows / n:.0f} rows/text, "
            f"{inside:.1f} rows/s inside the report, efficiency {efficiency:.2f}; "
            f"100-text report ≈ {per_text * 100 / 60:.1f} min; "
            f"CPU {cpu_per_text:.2f} s/text, efficiency per CPU second {cpu_efficiency:.2f}, "
            f"100-text report on {cores} idle cores ≈ {cpu_per_text * 100 / cores / 60:.1f} min"
        )
    ig_per_text, ig_cpu_per_text, ig_label = ig_seconds(torch_predictor, texts[: plan["ig_texts"]])
    lines.append(("IG", "torch", ig_per_text, ig_cpu_per_text))
    log(
        f"IG ({ig_label}; torch, {plan['ig_texts']} texts): {ig_per_text:.2f} s/text; "
        f"100-text report ≈ {ig_per_text * 100 / 60:.1f} min; CPU {ig_cpu_per_text:.2f} s/text, "
        f"100-text report on {cores} idle cores ≈ {ig_cpu_per_text * 100 / cores / 60:.1f} min"
    )
    shap_best = min(wall for label, _, wall, _ in lines if label == "SHAP@500")
    shap_best_cpu = min(cpu for label, _, _, cpu in lines if label == "SHAP@500")
    log(
        f"IG ÷ fastest SHAP@500 per text: {ig_per_text / shap_best:.3f} (wall), "
        f"{ig_cpu_per_text / shap_best_cpu:.3f} (CPU seconds)"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer texts and calls (a few minutes)")
    parser.add_argument("--models", default="demo,base", help="comma list: demo, base")
    parser.add_argument("--skip-explain", action="store_true", help="inference figures only")
    parser.add_argument(
        "--train-full", action="store_true", help="train the full demo model if var/demo-models lacks it"
    )
    args = parser.parse_args()

    quick = args.quick
    plans = {
        "demo": {
            "raw_rows": 512 if quick else 2048,
            "latency_calls": 50 if quick else 200,
            "agreement_texts": 50 if quick else 200,
            "shap_texts": 2 if quick else 10,
            "lime_texts": 2 if quick else 10,
            "ig_texts": 2 if quick else 10,
        },
        "base": {
            "raw_rows": 32 if quick else 128,
            "latency_calls": 10 if quick else 50,
            "agreement_texts": 20 if quick else 200,
            "shap_texts": 1 if quick else 2,
            "lime_texts": 1,
            "ig_texts": 1 if quick else 3,
        },
    }
    import torch

    log(
        f"bench/scale.py{' --quick' if quick else ''}: torch {torch.__version__} with {torch.get_num_threads()} "
        f"threads, ONNX Runtime {__import__('onnxruntime').__version__} with {worker_threads()} intra-op threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    texts = heldout_texts(40)
    log(f"{len(texts)} held-out texts of 50–80 characters (mean {np.mean([len(t) for t in texts]):.0f})")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="glassbox-scale-") as tmp:
        work = Path(tmp)
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            plan = {**plans[name], "skip_explain": args.skip_explain}
            if name == "demo":
                model_dir, training = demo_model_dir(work, args.train_full)
                title = f"demo char BERT ({training} training)"
            else:
                clock = time.perf_counter()
                model_dir = base_model_dir(work)
                title = f"BERT-base-sized, random weights (built in {time.perf_counter() - clock:.1f}s)"
            bench_model(name, title, model_dir, work, texts, plan)
    log(f"\ntotal {time.perf_counter() - started:.0f}s; load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
