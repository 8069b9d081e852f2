"""Explanation benchmark: Glassbox SHAP / LIME against the libraries' defaults
on the demo Chinese BERT and texts from its held-out data.

    .venv/bin/python bench/explain.py [--texts 100] [--lime-default-texts 100] [--worker-texts 400]

(a) shap.Explainer(f, shap.maskers.Text(tokenizer)) at its defaults vs
    Glassbox SHAP: seconds per text, distinct values per text,
    comprehensiveness (ERASER AOPC) and the speed ratio;
(b) lime's LimeTextExplainer at its defaults vs Glassbox LIME, likewise;
(c) efficiency: model rows/s inside Glassbox SHAP ÷ the model's raw batched
    forward rows/s on the same texts;
(d) one worker process vs two (torch.set_num_threads(1) each) on a report
    of --worker-texts texts, each worker running run_chunk over its half.

Comprehensiveness of every method is computed by the same code
(explanations.fidelity), each token hidden by the model's [MASK], ranking
the tokens by their value for the predicted label. Targets from the issue:
≥3× faster than shap's defaults with equal-or-better comprehensiveness and
one value per token; efficiency ≥ 0.8; two workers ≥ 1.8× one.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explanations.explainers import get_explainer  # noqa: E402
from explanations.fidelity import FidelityCase, eraser  # noqa: E402
from explanations.masking import prepare_text  # noqa: E402
from registry.predictors import load_predictor  # noqa: E402

DEMO_DIR = ROOT / "var" / "demo-models"


def demo_model_dir(work: Path) -> Path:
    from registry.demo_training import train_demo_models

    manifest = train_demo_models(DEMO_DIR, quick=False)  # cached after the first run
    target = work / "bert"
    with zipfile.ZipFile(DEMO_DIR / manifest["bert"]["artifact"]) as archive:
        archive.extractall(target)
    return target


def holdout(n: int) -> tuple[list[str], list[str]]:
    with open(DEMO_DIR / "holdout.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[:n]
    return [row["text"] for row in rows], [row["label"] for row in rows]


def distinct(values) -> int:
    # Rounded so that float noise does not count as a different value.
    return len(np.unique(np.round(np.asarray(values, dtype=np.float64), 12)))


def token_cases(
    predictor, texts: list[str], per_token_values: list[np.ndarray], predicted: list[int]
) -> list[FidelityCase]:
    cases = []
    for i, (text, values) in enumerate(zip(texts, per_token_values)):
        prepared = prepare_text(predictor, text)
        ranking = sorted(range(prepared.n), key=lambda t: (-values[t], t))
        cases.append(
            FidelityCase(
                index=i,
                prepared=prepared,
                groups=[[t] for t in range(prepared.n)],
                ranking=ranking,
                label_index=predicted[i],
            )
        )
    return cases


def run_report(explainer, predictor, texts, labels, params) -> tuple[dict, float, int]:
    started = time.perf_counter()
    parts = [
        explainer.run_chunk(predictor, texts, labels, chunk, params)
        for chunk in explainer.plan_chunks(len(texts), params)
    ]
    seconds = time.perf_counter() - started
    results = explainer.combine(predictor, texts, labels, parts, params)
    return results, seconds, sum(part["model_rows"] for part in parts)


def bench_shap(predictor, texts, labels, n_default: int) -> dict:
    import shap

    label_names = list(predictor.labels)
    all_texts, texts = texts, texts[:n_default]

    def f(batch):
        return predictor.predict_proba([str(t) for t in batch])

    library = shap.Explainer(f, shap.maskers.Text(predictor.tokenizer))
    started = time.perf_counter()
    explained = library(texts, silent=True)
    lib_seconds = time.perf_counter() - started

    lib_values, lib_pred, lib_distinct, lib_tokens = [], [], [], []
    for i, text in enumerate(texts):
        prepared = prepare_text(predictor, text)
        probs = predictor.predict_proba([prepared.text])[0]
        k = int(np.argmax(probs))
        # shap's rows are [CLS] tokens… [SEP]; the model reads the first n of them.
        row = np.asarray(explained.values[i])[1 : 1 + prepared.n, k]
        lib_values.append(row)
        lib_pred.append(k)
        lib_distinct.append(distinct(row))
        lib_tokens.append(prepared.n)
    lib_fid = eraser(predictor, token_cases(predictor, texts, lib_values, lib_pred))

    explainer = get_explainer("shap")
    params = explainer.validate_params({})
    texts = all_texts
    results, gb_seconds, rows = run_report(explainer, predictor, texts, labels, params)
    gb_fid = explainer.fidelity(predictor, texts, labels, results, params)
    same = {**results, "texts": results["texts"][:n_default]}
    gb_fid_same = explainer.fidelity(predictor, texts, labels, same, params)
    gb_distinct = [distinct(e["values"][e["predicted_label"]]) for e in results["texts"]]
    gb_tokens = [len(e["tokens"]) for e in results["texts"]]
    return {
        "library": {
            "seconds_per_text": lib_seconds / n_default,
            "distinct": lib_distinct,
            "tokens": lib_tokens,
            "fidelity": lib_fid,
            "texts": n_default,
        },
        "glassbox": {
            "seconds_per_text": gb_seconds / len(texts),
            "fidelity_same": gb_fid_same,
            "distinct": gb_distinct,
            "tokens": gb_tokens,
            "fidelity": gb_fid,
            "rows": rows,
            "seconds": gb_seconds,
            "evaluations": [e["evaluations"] for e in results["texts"]],
            "exact": sum(e["exact"] for e in results["texts"]),
        },
        "labels": label_names,
    }


def bench_lime(predictor, texts, labels, n_default: int) -> dict:
    from lime.lime_text import LimeTextExplainer

    lib_texts = texts[:n_default]
    library = LimeTextExplainer(random_state=0)
    lib_values, lib_pred, lib_distinct = [], [], []
    started = time.perf_counter()
    explanations = [library.explain_instance(text, predictor.predict_proba, labels=(0, 1)) for text in lib_texts]
    lib_seconds = time.perf_counter() - started
    for text, exp in zip(lib_texts, explanations):
        prepared = prepare_text(predictor, text)
        k = int(np.argmax(exp.predict_proba))
        indexed = exp.domain_mapper.indexed_string
        # Each model token takes the weight of the lime feature (a \W+ piece) it lies in; 0 if not in its top 10.
        weight_at = np.zeros(len(text) + 1)
        for feature, weight in exp.as_map()[k]:
            word = indexed.word(feature)
            for start in indexed.string_position(feature):
                weight_at[start : start + len(word)] = weight
        row = np.array([weight_at[start] for start, _ in prepared.spans])
        lib_values.append(row)
        lib_pred.append(k)
        lib_distinct.append(distinct(row))
    lib_fid = eraser(predictor, token_cases(predictor, lib_texts, lib_values, lib_pred))

    explainer = get_explainer("lime")
    params = explainer.validate_params({})
    results, gb_seconds, rows = run_report(explainer, predictor, texts, labels, params)
    gb_fid = explainer.fidelity(predictor, texts, labels, results, params)
    gb_fid_same = explainer.fidelity(
        predictor, texts, labels, {**results, "texts": results["texts"][:n_default]}, params
    )
    return {
        "library": {
            "seconds_per_text": lib_seconds / len(lib_texts),
            "distinct": lib_distinct,
            "fidelity": lib_fid,
            "texts": len(lib_texts),
        },
        "glassbox": {
            "seconds_per_text": gb_seconds / len(texts),
            "distinct": [distinct(e["values"][e["predicted_label"]]) for e in results["texts"]],
            "units": [len(e["tokens"]) for e in results["texts"]],
            "fidelity": gb_fid,
            "fidelity_same": gb_fid_same,
        },
    }


def raw_rows_per_second(predictor, texts: list[str], rows: int) -> float:
    batch = [texts[i % len(texts)] for i in range(rows)]
    predictor.predict_proba(batch[:256], batch_size=128)  # warm-up
    started = time.perf_counter()
    predictor.predict_proba(batch, batch_size=128)
    return rows / (time.perf_counter() - started)


def _worker(model_dir: str, texts: list[str], chunks: list[dict], ready, go, results) -> None:
    import torch

    torch.set_num_threads(1)
    predictor = load_predictor(Path(model_dir), "transformers")
    explainer = get_explainer("shap")
    params = explainer.validate_params({})
    explainer.run_chunk(predictor, texts, None, {"start": 0, "stop": 1}, params)  # warm-up (jieba, torch)
    ready.put(os.getpid())
    go.wait()
    for chunk in chunks:
        explainer.run_chunk(predictor, texts, None, chunk, params)
    results.put(time.perf_counter())


def bench_workers(model_dir: Path, texts: list[str], workers: int) -> float:
    """Wall seconds for ``workers`` processes to run a SHAP report's chunks, split in contiguous halves."""
    ctx = multiprocessing.get_context("spawn")  # fork after torch threads have started can deadlock
    explainer = get_explainer("shap")
    chunks = explainer.plan_chunks(len(texts), explainer.validate_params({}))
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    shares = [chunks[w::workers] for w in range(workers)]
    processes = [
        ctx.Process(target=_worker, args=(str(model_dir), texts, share, ready, go, results)) for share in shares
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get()
    started = time.perf_counter()
    go.set()
    ends = [results.get() for _ in processes]
    for process in processes:
        process.join()
    return max(ends) - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=100)
    parser.add_argument(
        "--shap-default-texts", type=int, default=100, help="of --texts, how many shap's defaults explain"
    )
    parser.add_argument(
        "--lime-default-texts",
        type=int,
        default=100,
        help="of --texts, how many lime's defaults (5000 samples each) explain",
    )
    parser.add_argument("--worker-texts", type=int, default=400)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: a,b,c,d")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import torch

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as work:
        model_dir = demo_model_dir(Path(work))
        predictor = load_predictor(model_dir, "transformers")
        texts, labels = holdout(max(args.texts, args.worker_texts))
        sample, sample_labels = texts[: args.texts], labels[: args.texts]
        lengths = [prepare_text(predictor, t).n for t in sample]
        print(
            f"{len(sample)} held-out texts: tokens per text mean {np.mean(lengths):.1f}, max {max(lengths)}, "
            f"truncated {sum(prepare_text(predictor, t).truncated for t in sample)}"
        )
        predictor.predict_proba(sample, batch_size=128)  # warm-up
        from explanations.hierarchy import word_spans

        word_spans("预热")  # jieba loads its dictionary once per process: not part of any timing

        def show():
            start = max(i for i, line in enumerate(lines) if line[0].startswith("("))
            section = lines[start:]
            widths = [max(len(str(line[i])) for line in section) for i in range(4)]
            print()
            for line in section:
                print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)))
            print(f"(load average {os.getloadavg()})", flush=True)

        lines = []
        if "a" not in skip:
            s = bench_shap(predictor, sample, sample_labels, min(args.shap_default_texts, len(sample)))
            lib, gb = s["library"], s["glassbox"]
            full = sum(d == n for d, n in zip(gb["distinct"], gb["tokens"]))
            lines += [
                ("(a) SHAP", f"shap defaults ({lib['texts']} texts)", f"Glassbox ({len(sample)} texts)", "ratio"),
                (
                    "seconds per text",
                    f"{lib['seconds_per_text']:.3f}",
                    f"{gb['seconds_per_text']:.3f}",
                    f"{lib['seconds_per_text'] / gb['seconds_per_text']:.2f}x faster",
                ),
                (
                    "distinct values per text (mean)",
                    f"{np.mean(lib['distinct']):.1f}",
                    f"{np.mean(gb['distinct']):.1f}",
                    f"tokens per text {np.mean(gb['tokens']):.1f}",
                ),
                (
                    "texts with one value per token",
                    f"{sum(d == n for d, n in zip(lib['distinct'], lib['tokens']))}/{lib['texts']}",
                    f"{full}/{len(sample)}",
                    "",
                ),
                (
                    "comprehensiveness AOPC, same texts",
                    f"{lib['fidelity']['comprehensiveness']['aopc']:.4f}",
                    f"{gb['fidelity_same']['comprehensiveness']['aopc']:.4f}",
                    f"random {gb['fidelity_same']['random_baseline']['comprehensiveness']['aopc']:.4f}",
                ),
                (
                    "sufficiency AOPC (lower better), same texts",
                    f"{lib['fidelity']['sufficiency']['aopc']:.4f}",
                    f"{gb['fidelity_same']['sufficiency']['aopc']:.4f}",
                    f"random {gb['fidelity_same']['random_baseline']['sufficiency']['aopc']:.4f}",
                ),
                (
                    "comprehensiveness / sufficiency AOPC, all texts",
                    "",
                    f"{gb['fidelity']['comprehensiveness']['aopc']:.4f} / {gb['fidelity']['sufficiency']['aopc']:.4f}",
                    f"random {gb['fidelity']['random_baseline']['comprehensiveness']['aopc']:.4f} / {gb['fidelity']['random_baseline']['sufficiency']['aopc']:.4f}",
                ),
                (
                    "Glassbox evaluations per text",
                    "",
                    f"mean {np.mean(gb['evaluations']):.0f}, max {max(gb['evaluations'])}",
                    f"exact {gb['exact']}/{len(sample)}",
                ),
                ("Glassbox additivity max error", "", f"{gb['fidelity']['additivity_max_error']:.2e}", ""),
            ]
            show()
        if "c" not in skip:
            # The machine is shared: the raw rate is measured right before and
            # right after the report, and their mean is the reference.
            before = raw_rows_per_second(predictor, sample, 3_000)
            explainer = get_explainer("shap")
            _, seconds, rows = run_report(explainer, predictor, sample, sample_labels, explainer.validate_params({}))
            after = raw_rows_per_second(predictor, sample, 3_000)
            raw, inside = (before + after) / 2, rows / seconds
            lines += [
                ("(c) efficiency", "raw batched forward", "inside Glassbox SHAP", "ratio"),
                (
                    "model rows per second",
                    f"{raw:.0f} ({before:.0f} before, {after:.0f} after)",
                    f"{inside:.0f} ({rows} rows in {seconds:.1f}s)",
                    f"{inside / raw:.2f}",
                ),
            ]
            show()
        if "b" not in skip:
            b = bench_lime(predictor, sample, sample_labels, min(args.lime_default_texts, len(sample)))
            lib, gb = b["library"], b["glassbox"]
            lines += [
                ("(b) LIME", f"lime defaults ({lib['texts']} texts)", "Glassbox (jieba words)", "ratio"),
                (
                    "seconds per text",
                    f"{lib['seconds_per_text']:.3f}",
                    f"{gb['seconds_per_text']:.3f}",
                    f"{lib['seconds_per_text'] / gb['seconds_per_text']:.2f}x faster",
                ),
                (
                    "distinct values per text (mean)",
                    f"{np.mean(lib['distinct']):.1f}",
                    f"{np.mean(gb['distinct']):.1f}",
                    f"words per text {np.mean(gb['units']):.1f}",
                ),
                (
                    "comprehensiveness AOPC, same texts",
                    f"{lib['fidelity']['comprehensiveness']['aopc']:.4f}",
                    f"{gb['fidelity_same']['comprehensiveness']['aopc']:.4f}",
                    f"random {gb['fidelity_same']['random_baseline']['comprehensiveness']['aopc']:.4f}",
                ),
                (
                    "sufficiency AOPC (lower better), same texts",
                    f"{lib['fidelity']['sufficiency']['aopc']:.4f}",
                    f"{gb['fidelity_same']['sufficiency']['aopc']:.4f}",
                    f"R² mean {gb['fidelity']['r2_mean']:.3f}",
                ),
                (
                    "comprehensiveness / sufficiency AOPC, all texts",
                    "",
                    f"{gb['fidelity']['comprehensiveness']['aopc']:.4f} / {gb['fidelity']['sufficiency']['aopc']:.4f}",
                    f"random {gb['fidelity']['random_baseline']['comprehensiveness']['aopc']:.4f} / {gb['fidelity']['random_baseline']['sufficiency']['aopc']:.4f}",
                ),
            ]
            show()
        if "d" not in skip:
            worker_texts = texts[: args.worker_texts]
            print(f"load average before (d): {os.getloadavg()}")
            one = bench_workers(model_dir, worker_texts, 1)
            two = bench_workers(model_dir, worker_texts, 2)
            lines += [
                (f"(d) workers, {len(worker_texts)}-text SHAP report", "1 worker", "2 workers", "speed-up"),
                ("wall seconds", f"{one:.1f}", f"{two:.1f}", f"{one / two:.2f}x"),
            ]
            show()
        print("\nsummary:")
        widths = [max(len(str(line[i])) for line in lines) for i in range(4)] if lines else []
        for line in lines:
            if line[0].startswith("("):
                print()
            print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)))


if __name__ == "__main__":
    main()
