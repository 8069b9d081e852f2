"""A small, deterministic text classifier with the Predictor interface: a
logistic model over keyword weights. Its words interact through the sigmoid
and through multi-character keywords, so Owen values are not trivial, yet it
runs in microseconds, so brute-force enumeration stays cheap."""

from __future__ import annotations

import math

import numpy as np

KEYWORDS = {"不好": -3.0, "好": 1.5, "很": 0.5, "差": -2.0, "退款": -2.5, "喜欢": 2.0, "不": -0.7, "服务": 0.3}


class KeywordModel:
    flavor = "test"
    labels = ["negative", "positive"]
    max_length = None

    def __init__(self, *, mask_text: str = "", max_tokens: int | None = None, bias: float = 0.2) -> None:
        self.mask_text = mask_text
        self.max_tokens = max_tokens
        self.bias = bias
        self.rows_seen = 0

    def score(self, text: str) -> float:
        return self.bias + sum(weight * text.count(word) for word, weight in KEYWORDS.items())

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.rows_seen += len(texts)
        positive = np.array([1.0 / (1.0 + math.exp(-self.score(str(t)))) for t in texts], dtype=np.float64)
        return np.stack([1.0 - positive, positive], axis=1).reshape(len(texts), 2)

    def tokenize(self, text: str) -> list[str]:
        return [token for token, _, _ in self.tokenize_with_offsets(text)]

    def tokenize_with_offsets(self, text: str) -> list[tuple[str, int, int]]:
        return [(ch, i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]
