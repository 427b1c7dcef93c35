"""Peer: NVIDIA Triton (through PyTriton) serving the same scikit-learn estimator over OIP REST.

Runs in its own virtual environment (`.venv-triton`: PyTriton pins numpy below 2), so it
imports nothing from this project; the benchmark passes the path of a joblib copy of the
store's estimator. Triton's dynamic batcher gathers up to 64 rows and waits at most
`--queue-delay-us` for more; one model instance, as every peer has one worker.

    .venv-triton/bin/python loadtest/peers/triton_server.py --model PATH --port 8000
"""

from __future__ import annotations

import argparse
import os
import socket
import sysconfig

import joblib
import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

MODEL_NAME = "digits-sklearn"
MAX_BATCH = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def link_own_libpython() -> None:
    """Triton's Python stub links libpython by name; without this interpreter's LIBDIR first it
    finds another one (or none) and the model fails to load (`_thread.RLock` attribute error)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    rest = os.environ.get("LD_LIBRARY_PATH", "")
    os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{rest}" if rest else libdir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="path of the joblib-saved scikit-learn estimator")
    parser.add_argument("--port", type=int, required=True, help="HTTP (OIP REST) port")
    parser.add_argument("--queue-delay-us", type=int, default=300, help="dynamic batcher's longest wait for a fuller batch")
    args = parser.parse_args()
    link_own_libpython()
    estimator = joblib.load(args.model)

    @batch
    def infer(pixels: np.ndarray) -> dict[str, np.ndarray]:
        probs = estimator.predict_proba(pixels).astype(np.float32)
        return {"probabilities": probs, "label": probs.argmax(axis=1).astype(np.int64)[:, None]}

    config = TritonConfig(http_address="127.0.0.1", http_port=args.port, grpc_address="127.0.0.1", grpc_port=free_port(),
                          allow_metrics=False, log_verbose=0)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=infer,
            inputs=[Tensor(name="pixels", dtype=np.float32, shape=(64,))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(10,)), Tensor(name="label", dtype=np.int64, shape=(1,))],
            config=ModelConfig(max_batch_size=MAX_BATCH, batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us)),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
