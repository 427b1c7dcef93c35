"""The atheris harnesses: their crash rule, and a short coverage-guided run of every target
(`make fuzz` runs them for a minute each)."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from core.errors import BadRequest, InvalidInput
from fuzz.common import MEMORY_BUDGET_BYTES, MemoryBudgetExceeded, guarded
from fuzz.run import ROOT, TARGETS

SECONDS = int(os.environ.get("RTSERVE_ATHERIS_SECONDS", "3"))


@pytest.fixture(autouse=True)
def _stop_tracing():
    """`guarded` starts tracemalloc for the harness process; the test session must not keep paying for it."""
    yield
    tracemalloc.stop()


def _raise(exc: BaseException):
    def target(data: bytes) -> None:
        raise exc

    return target


def test_serving_errors_are_answers_not_crashes():
    guarded(_raise(BadRequest("not JSON")))(b"x")
    guarded(_raise(InvalidInput("wrong shape")))(b"x")


def test_any_other_exception_is_a_crash():
    with pytest.raises(KeyError):
        guarded(_raise(KeyError("inputs")))(b"x")


def test_a_large_allocation_for_a_small_input_is_a_crash():
    one_input = guarded(lambda data: np.zeros(MEMORY_BUDGET_BYTES // 8 + 1024))
    with pytest.raises(MemoryBudgetExceeded):
        one_input(b"tiny")
    guarded(lambda data: np.zeros(1024))(b"tiny")  # the peak is per input, so a small one passes after it


def test_every_target_survives_a_short_run(model_store, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.run", "--seconds", str(SECONDS), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120 + 30 * SECONDS, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for target in TARGETS:
        row = next(line for line in proc.stdout.splitlines() if f"`{target}`" in line)
        executions = int(row.split("|")[3].replace(",", ""))
        assert executions > 100 * SECONDS, row  # the harness really ran, not stopped at its first input
