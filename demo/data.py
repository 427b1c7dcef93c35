"""Training data: scikit-learn's bundled digits, and token sequences made by a documented rule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEQ_VOCAB = 20  # token ids 1..20; 0 is padding
SEQ_GROUPS = 4  # group of token t is (t - 1) // 5
SEQ_MAX_LEN = 64


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits() -> Split:
    """load_digits pixels (0..16) as FP32, a fixed stratified 80/20 split."""
    data = load_digits()
    x = data.data.astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return Split(x_tr, y_tr, x_te, y_te)


def seq_label(tokens: np.ndarray) -> int:
    """The task: which of the four token groups occurs most often (ties go to the lower group)."""
    valid = tokens[tokens > 0]
    counts = np.bincount((valid - 1) // 5, minlength=SEQ_GROUPS)
    return int(np.argmax(counts))


def sequences(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` sequences of lengths 1..SEQ_MAX_LEN, right-padded with 0, and their labels.

    Group frequencies per sequence come from a Dirichlet draw so that every group wins often.
    """
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, SEQ_MAX_LEN), dtype=np.int64)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        length = int(rng.integers(1, SEQ_MAX_LEN + 1))
        group_p = rng.dirichlet(np.ones(SEQ_GROUPS) * 0.7)
        groups = rng.choice(SEQ_GROUPS, size=length, p=group_p)
        tokens[i, :length] = groups * 5 + rng.integers(1, 6, size=length)
        labels[i] = seq_label(tokens[i])
    return tokens, labels
