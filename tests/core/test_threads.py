"""One thread cap reaches every framework's pool in the process."""

from __future__ import annotations

import pytest
import torch
import xgboost  # noqa: F401 - its OpenMP runtime is loaded, as in a worker serving boosters
from threadpoolctl import threadpool_info

from core.threads import cap_threads, intra_op_threads
from runners.onnx_runner import SessionSettings


def test_cap_threads_sets_torch_openmp_blas_and_onnxruntime_together():
    try:
        cap_threads(2)
        assert intra_op_threads() == 2
        assert torch.get_num_threads() == 2
        assert {pool["num_threads"] for pool in threadpool_info()} == {2}
        assert SessionSettings().to_ort().intra_op_num_threads == 2  # a session that names no count of its own
        assert SessionSettings(intra_op_num_threads=1).to_ort().intra_op_num_threads == 1
    finally:
        cap_threads(1)
    assert torch.get_num_threads() == 1 and {pool["num_threads"] for pool in threadpool_info()} == {1}


def test_a_cap_under_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        cap_threads(0)
