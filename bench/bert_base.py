"""The BERT-base-sized model every benchmark that times inference also runs:
12 layers, hidden 768, 12 heads, intermediate 3072, 512 positions, a
vocabulary of 21,128 entries (the demo corpus' characters, then filler) —
about 102 M parameters. Random weights: nothing is downloaded, and random
weights cost the same time as trained ones. Saved as an upload is."""

from __future__ import annotations

from pathlib import Path

BASE_VOCAB = 21128


def build_bert_base(target: Path) -> Path:
    """Write the model and its tokenizer to `target` (a folder) and return it."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from registry.demo_training import LABELS, SPECIAL_TOKENS, load_reviews

    chars = sorted({ch for text, _ in load_reviews() for ch in text if not ch.isspace()})
    vocab = list(SPECIAL_TOKENS) + [ch for ch in chars if ch not in SPECIAL_TOKENS]
    vocab += [f"[unused{i}]" for i in range(BASE_VOCAB - len(vocab))]
    vocab = vocab[:BASE_VOCAB]
    tokenizer = BertTokenizerFast(
        vocab={token: i for i, token in enumerate(vocab)},
        do_lower_case=False,
        tokenize_chinese_chars=True,
        model_max_length=512,
    )
    config = BertConfig(
        vocab_size=BASE_VOCAB,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
