"""One cap on every thread pool of a worker process: torch, OpenMP and BLAS, onnxruntime, XGBoost and LightGBM.

Each framework brings its own pools, each sized to every core by default: torch's intra-op pool (and
the OpenMP runtime it ships), onnxruntime's per session, XGBoost's and LightGBM's OpenMP loops, and
the BLAS under numpy and scikit-learn. In one worker beside its HTTP event loop, and beside the
other workers of the machine, uncapped pools oversubscribe the cores: threads spin and wait for
each other, and the tail latency grows with the load. So a worker caps them together, once, when
it starts (`intra_op_threads` in serving.yaml): torch and every OpenMP and BLAS library loaded by
then through threadpoolctl, libraries loaded later through the environment, and onnxruntime,
XGBoost and LightGBM through their own per-session and per-call settings, which read
`intra_op_threads()` unless the model has a count of its own (serving.yaml, per model; torch and the
process-wide pools cannot have one: `runners.base.Runner.threads_refused`). The measurement the default
follows is in docs/benchmarks.md ("Heavy models").
"""

from __future__ import annotations

import os

_THREADS = 1


def intra_op_threads() -> int:
    """Threads one model call may use in this process (what `cap_threads` set; 1 before)."""
    return _THREADS


def cap_threads(threads: int) -> None:
    """Cap every thread pool of this process at `threads` threads."""
    global _THREADS
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    _THREADS = threads
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(threads)  # libraries loaded from now on
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)  # OpenMP and BLAS runtimes loaded already (torch's, XGBoost's, numpy's)
