"""How an optimized version's agreement with its source is counted (models/optimize/compare.py), on arrays
whose answer is known by hand."""

from __future__ import annotations

import numpy as np

from models.optimize.compare import agreement, batch_of


def test_classifiers_agree_on_the_top_1_label_and_report_the_largest_difference():
    source = {"probabilities": np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]], np.float32), "label": np.array([0, 1, 0])}
    optimized = {"probabilities": np.array([[0.8, 0.2], [0.6, 0.4], [0.5, 0.5]], np.float32), "label": np.array([0, 0, 0])}
    got = agreement("classification", source, optimized, 0.0)
    assert got["agreement"] == 2 / 3 and got["counted_as"] == "top-1 label" and got["rows"] == 3
    assert np.isclose(got["max_abs_diff"]["probabilities"], 0.2)


def test_tensors_agree_row_by_row_within_the_tolerance_relative_to_one_plus_the_value():
    source = {"logits": np.array([[10.0, 0.0], [1.0, 2.0]], np.float32)}
    optimized = {"logits": np.array([[10.5, 0.0], [1.0, 2.1]], np.float32)}
    # |diff| <= 0.05 * (1 + |source|): 0.5 <= 0.55 holds; 0.1 <= 0.15 holds.
    assert agreement("tensors", source, optimized, 0.05)["agreement"] == 1.0
    # At 0.04: 0.5 > 0.44 fails the first row, 0.1 <= 0.12 keeps the second.
    assert agreement("tensors", source, optimized, 0.04)["agreement"] == 0.5
    assert agreement("regression", {"predictions": np.array([1.0])}, {"predictions": np.array([1.0])}, 0.0)["agreement"] == 1.0


def test_a_batch_repeats_the_sample_to_the_size_asked():
    sample = {"x": np.arange(3, dtype=np.float32).reshape(3, 1)}
    assert batch_of(sample, 7)["x"].ravel().tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert batch_of(sample, 2)["x"].ravel().tolist() == [0, 1]
