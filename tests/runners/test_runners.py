from __future__ import annotations

import numpy as np
import pytest

from demo import data

DIGITS = ["digits-sklearn", "digits-torch", "digits-onnx", "digits-ensemble"]


def digit_rows(runner, n: int) -> np.ndarray:
    x = data.digits().x_test[:n]
    return x.reshape(n, *runner.input_spec.row_shape)


@pytest.mark.parametrize("name", DIGITS)
def test_batched_result_equals_row_by_row(runners, name):
    runner = runners[name]
    x = digit_rows(runner, 40)
    batched = runner.run(runner.collate([x[:7], x[7:8], x[8:]]))
    single = [runner.run(x[i : i + 1]) for i in range(len(x))]
    np.testing.assert_allclose(batched["probabilities"], np.concatenate([s["probabilities"] for s in single]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(batched["label"], np.concatenate([s["label"] for s in single]))


def test_padded_sequences_equal_unpadded(runners):
    runner = runners["seq-torch"]
    x, _ = data.sequences(30, seed=5)
    rows = [r[: max(1, int((r > 0).sum()))][None, :] for r in x]  # each at its own length
    batched = runner.run(runner.collate(rows))
    assert batched["probabilities"].shape == (30, data.SEQ_GROUPS)
    for i, row in enumerate(rows):
        np.testing.assert_allclose(batched["probabilities"][i], runner.run(row)["probabilities"][0], rtol=1e-5, atol=1e-6)


def test_collate_pads_variable_dimensions_with_zero(runners):
    runner = runners["seq-torch"]
    out = runner.collate([np.array([[1, 2, 3]]), np.array([[4], [5]])])
    np.testing.assert_array_equal(out, [[1, 2, 3], [4, 0, 0], [5, 0, 0]])


def test_ensemble_is_the_weighted_vote_of_its_members(runners):
    ens = runners["digits-ensemble"]
    x = digit_rows(ens, 10)
    expected = sum(w * m.run(x.reshape(10, *m.input_spec.row_shape))["probabilities"] for m, w in ens.members)
    np.testing.assert_allclose(ens.run(x)["probabilities"], expected, rtol=1e-5)
    # Members are the runners the service also serves directly, not private copies.
    assert ens.members[0][0] is runners["digits-sklearn"]


@pytest.mark.parametrize("name", DIGITS)
def test_warmup_times_each_size(runners, name):
    timings = runners[name].warmup((1, 4))
    assert [n for n, _ in timings] == [1, 1, 1, 4, 4, 4]
    assert all(t > 0 for _, t in timings)


def test_warmup_of_sequences_times_each_size_at_each_length_in_tokens(runners):
    seq = runners["seq-torch"]
    assert seq.varies and not runners["digits-onnx"].varies
    timings = seq.warmup((1, 4), (16, 64))
    assert [w for w, _ in timings] == [16] * 3 + [64] * 3 + [64] * 3 + [256] * 3  # rows x tokens
    assert all(t > 0 for _, t in timings)
    assert seq.work(np.ones((3, 50), dtype=np.int64)) == 150


def test_onnx_matches_the_torch_network_it_was_exported_from(runners):
    x = digit_rows(runners["digits-torch"], 20)
    np.testing.assert_allclose(runners["digits-onnx"].run(x)["probabilities"], runners["digits-torch"].run(x)["probabilities"], atol=1e-5)
