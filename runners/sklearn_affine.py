"""Fold a linear scikit-learn pipeline into one matrix product.

scikit-learn validates its input on every call (dtype, finiteness, feature names), which
costs about 0.6 ms per call whatever the batch size; for a one-row request that is nearly
all the work. Pipelines made only of affine steps (scalers, PCA, truncated SVD) ending in a
logistic regression are one affine map followed by a softmax or a sigmoid, so they are
folded into a weight matrix and a bias at load time. The folded model is used only after
it reproduces the estimator's probabilities on probe rows; anything else keeps the
estimator.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

Affine = tuple[np.ndarray, np.ndarray]  # x -> x @ weight + bias


def _diagonal(scale: np.ndarray, shift: np.ndarray) -> Affine:
    return np.diag(scale), shift


def _standard_scaler(step: StandardScaler, n: int) -> Affine:
    inv = 1.0 / step.scale_ if step.with_std else np.ones(n)
    mean = step.mean_ if step.with_mean else np.zeros(n)
    return _diagonal(inv, -mean * inv)


def _min_max_scaler(step: MinMaxScaler, n: int) -> Affine | None:
    if step.clip:  # clipping is not affine
        return None
    return _diagonal(step.scale_, step.min_)


def _max_abs_scaler(step: MaxAbsScaler, n: int) -> Affine:
    return _diagonal(1.0 / step.scale_, np.zeros(n))


def _pca(step: PCA, n: int) -> Affine:
    weight = step.components_.T.copy()
    if step.whiten:
        weight /= np.sqrt(step.explained_variance_)
    return weight, -step.mean_ @ weight


def _truncated_svd(step: TruncatedSVD, n: int) -> Affine:
    return step.components_.T.copy(), np.zeros(step.components_.shape[0])


TRANSFORMS: dict[type, Callable[..., Affine | None]] = {
    StandardScaler: _standard_scaler,
    MinMaxScaler: _min_max_scaler,
    MaxAbsScaler: _max_abs_scaler,
    PCA: _pca,
    TruncatedSVD: _truncated_svd,
}


class AffineClassifier:
    """Probabilities of a folded pipeline: softmax (or sigmoid for two classes) of x @ weight + bias."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, binary: bool) -> None:
        self.weight = weight
        self.bias = bias
        self.binary = binary

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.weight + self.bias
        if self.binary:
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1.0 - p, p], axis=1).astype(np.float32)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z.astype(np.float32)


def fold(estimator: object) -> AffineClassifier | None:
    """The folded classifier, or None when some step is not affine or the end is not a logistic regression."""
    steps = [s for _, s in estimator.steps if s not in (None, "passthrough")] if isinstance(estimator, Pipeline) else [estimator]
    if not steps or type(steps[-1]) is not LogisticRegression:
        return None
    head: LogisticRegression = steps[-1]
    n = int(steps[0].n_features_in_)
    weight, bias = np.eye(n), np.zeros(n)
    for step in steps[:-1]:
        transform = TRANSFORMS.get(type(step))
        affine = transform(step, weight.shape[1]) if transform else None
        if affine is None:
            return None
        w, b = affine
        weight, bias = weight @ w, bias @ w + b
    return AffineClassifier(weight @ head.coef_.T, bias @ head.coef_.T + head.intercept_, binary=len(head.classes_) <= 2)


def compile_classifier(estimator: object, probe: np.ndarray, atol: float = 1e-4) -> AffineClassifier | None:
    """`fold(estimator)` if it gives the estimator's probabilities on `probe` rows within `atol`, else None.

    The folded product sums in another order than the estimator's chain of float32 steps; on the demo
    pipelines the two differ by about 1e-5 depending on the BLAS build, so 1e-4 (far below any label
    change) keeps the check meaningful without making folding depend on the machine."""
    folded = fold(estimator)
    if folded is None:
        return None
    expected = estimator.predict_proba(probe)
    got = folded.predict_proba(probe)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0.0, atol=atol):
        return None
    return folded
