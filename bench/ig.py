"""Integrated gradients on the demo Chinese BERT: the figures behind its
defaults (n_steps, the [PAD] baseline) and its comparison with SHAP.

    .venv/bin/python bench/ig.py [--texts 20] [--quick] [--threads 1]

On the same 50-80-character held-out texts, prints per configuration
(n_steps 16 / 32 / 50, baseline pad / mask): seconds per text, the worst
completeness error absolute and relative to |f(x) - f(baseline)|, and ERASER
comprehensiveness / sufficiency AOPC with their random baselines; then SHAP
at its default 500 evaluations and LIME at its 1000 samples on the same
texts (LIME's comprehensiveness ranks its words), and the cost of one IG path
point in forward rows (forward + backward vs a plain batched forward).
Targets from issue 11: worst completeness error <= 0.05 x |f(x) - f(baseline)|;
IG comprehensiveness AOPC within 0.05 of SHAP's.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explanations.explainers import get_explainer  # noqa: E402
from registry.predictors import load_predictor  # noqa: E402


def demo_model(work: Path, quick: bool) -> tuple[Path, Path]:
    from registry.demo_training import train_demo_models

    folder = ROOT / "var" / ("test-demo-models" if quick else "demo-models")
    manifest = train_demo_models(folder, quick=quick)  # cached after the first run
    target = work / "bert"
    with zipfile.ZipFile(folder / manifest["bert"]["artifact"]) as archive:
        archive.extractall(target)
    return target, folder / manifest["holdout"]


def held_out(path: Path, n: int) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    return [text for text in texts if 50 <= len(text) <= 80][:n]


def run(predictor, method: str, texts: list[str], **params) -> tuple[dict, dict, float]:
    explainer = get_explainer(method)
    params = explainer.validate_params(params)
    started = time.perf_counter()
    parts = [explainer.run_chunk(predictor, texts, None, c, params) for c in explainer.plan_chunks(len(texts), params)]
    seconds = time.perf_counter() - started
    results = explainer.combine(predictor, texts, None, parts, params)
    return results, explainer.fidelity(predictor, texts, None, results, params), seconds / len(texts)


def path_point_cost(predictor, texts: list[str], n_steps: int) -> float:
    """Seconds of one IG path point ÷ seconds of one forward row, same texts."""
    import torch

    _, _, per_text = run(predictor, "ig", texts, n_steps=n_steps)  # IG's time includes its 2 plain forward rows
    rows = [text for text in texts for _ in range(n_steps)]
    started = time.perf_counter()
    with torch.inference_mode():
        predictor.predict_proba(rows, batch_size=n_steps)
    forward_per_row = (time.perf_counter() - started) / len(rows)
    return per_text / n_steps / forward_per_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="the quick demo model (tests' cache) instead of full")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-shap", action="store_true", help="IG only (no SHAP or LIME)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        model_dir, holdout = demo_model(Path(work), args.quick)
        predictor = load_predictor(model_dir, "transformers")
        texts = held_out(holdout, args.texts)
        print(
            f"demo BERT ({'quick' if args.quick else 'full'}), {len(texts)} held-out texts of 50-80 characters, "
            f"torch threads {torch.get_num_threads()}"
        )
        run(predictor, "ig", texts[:2], n_steps=4)  # warm up
        header = f"{'method':<22}{'s/text':>8}{'max |err|':>11}{'max err/|Δ|':>13}{'min |Δ|':>9}"
        print(header + f"{'comp AOPC':>11}{'random':>8}{'suff AOPC':>11}{'random':>8}")
        ig_comp = {}
        for n_steps, baseline in [(n, b) for b in ("pad", "mask") for n in (16, 32, 50)]:
            results, fidelity, per_text = run(predictor, "ig", texts, n_steps=n_steps, baseline=baseline)
            entries = results["texts"]
            relative = max(e["completeness_error"] / max(e["completeness_delta"], 1e-12) for e in entries)
            ig_comp[(n_steps, baseline)] = fidelity["comprehensiveness"]["aopc"]
            print(
                f"{f'ig {n_steps} steps {baseline}':<22}{per_text:>8.3f}{results['completeness_max_error']:>11.2e}"
                f"{relative:>13.2e}{min(e['completeness_delta'] for e in entries):>9.4f}"
                f"{fidelity['comprehensiveness']['aopc']:>11.5f}"
                f"{fidelity['random_baseline']['comprehensiveness']['aopc']:>8.5f}"
                f"{fidelity['sufficiency']['aopc']:>11.5f}{fidelity['random_baseline']['sufficiency']['aopc']:>8.5f}"
            )
        if not args.skip_shap:
            results, fidelity, per_text = run(predictor, "shap", texts)
            print(
                f"{'shap 500 evals':<22}{per_text:>8.3f}{results['additivity_max_error']:>11.2e}{'':>13}{'':>9}"
                f"{fidelity['comprehensiveness']['aopc']:>11.5f}"
                f"{fidelity['random_baseline']['comprehensiveness']['aopc']:>8.5f}"
                f"{fidelity['sufficiency']['aopc']:>11.5f}{fidelity['random_baseline']['sufficiency']['aopc']:>8.5f}"
            )
            shap_comp = fidelity["comprehensiveness"]["aopc"]
            results, fidelity, per_text = run(predictor, "lime", texts)
            print(
                f"{'lime 1000 samples':<22}{per_text:>8.3f}{'':>11}{'':>13}{'':>9}"
                f"{fidelity['comprehensiveness']['aopc']:>11.5f}"
                f"{fidelity['random_baseline']['comprehensiveness']['aopc']:>8.5f}"
                f"{fidelity['sufficiency']['aopc']:>11.5f}{fidelity['random_baseline']['sufficiency']['aopc']:>8.5f}"
            )
            for key, comp in ig_comp.items():
                print(f"  comprehensiveness AOPC, ig {key[0]} {key[1]} - shap: {comp - shap_comp:+.5f}")
        cost = path_point_cost(predictor, texts, 16)
        print(f"one IG path point costs {cost:.2f} forward rows (forward + backward, 16 steps)")
        print(f"mean characters per text: {np.mean([len(t) for t in texts]):.1f}")


if __name__ == "__main__":
    main()
