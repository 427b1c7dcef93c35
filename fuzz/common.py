"""What every atheris harness shares: the crash rule, the per-input memory budget, limits and signatures.

A crash is any exception that is not one of the project's `ServingError`s (those become clear
4xx/5xx answers), and any input whose decoding allocates more than `MEMORY_BUDGET_BYTES`
(numpy reports its buffers to tracemalloc, so the peak covers the tensors). libFuzzer's own
`-rss_limit_mb` backs this up for whole-process growth.
"""

from __future__ import annotations

import json
import os
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import atheris

MEMORY_BUDGET_BYTES = 256 * 1024 * 1024
SIGNATURES_ENV = "RTSERVE_FUZZ_SIGNATURES"


class MemoryBudgetExceeded(Exception):
    """One small input made the decoder allocate more than the budget: a denial-of-service bug."""


def load_signatures() -> dict:
    """model name -> Signature, from the JSON file the runner writes from the model store
    (so the harness process does not import BentoML)."""
    from models.signature import Signature

    path = os.environ.get(SIGNATURES_ENV)
    if not path:
        raise SystemExit(f"set {SIGNATURES_ENV} to the signatures file that fuzz/run.py writes")
    return {name: Signature.from_metadata(meta) for name, meta in json.loads(Path(path).read_text()).items()}


def guarded(target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """The libFuzzer entry point: runs `target`, lets ServingError pass, measures the memory peak."""
    from core.errors import ServingError

    tracemalloc.start()

    def one_input(data: bytes) -> None:
        tracemalloc.reset_peak()
        try:
            target(data)
        except ServingError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
        if peak > MEMORY_BUDGET_BYTES:
            raise MemoryBudgetExceeded(f"{peak / 2**20:.0f} MiB allocated for an input of {len(data)} bytes")

    return one_input


def main(target: Callable[[bytes], None]) -> None:
    atheris.Setup(sys.argv, guarded(target))
    atheris.Fuzz()
