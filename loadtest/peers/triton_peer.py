"""The Triton peer as the benchmark sees it: its virtual environment, its server, and a check of its answers.

PyTriton pins numpy below 2, so Triton gets `.venv-triton` of its own, created on first use
(`pip install` of `PACKAGES`) from the interpreter that runs the benchmark. onnxruntime and tokenizers are for
the heavy models' peer (loadtest/peers/triton_onnx.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from loadtest.servers import ROOT, Server

VENV = ROOT / ".venv-triton"
PACKAGES = ["nvidia-pytriton", "scikit-learn", "joblib", "onnxruntime", "tokenizers"]
MODEL_TAG = "digits-sklearn:v1"  # the estimator every peer serves
MODEL_NAME = "digits-sklearn"
READY_PATH = f"/v2/models/{MODEL_NAME}/ready"


def ensure_venv(venv: Path = VENV) -> Path:
    """The Triton environment's interpreter, creating the environment when it is missing, and installing into an
    existing one what `PACKAGES` gained since (its `.installed` lists what it has)."""
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    have = set(marker.read_text().split()) if marker.exists() else set()
    if missing := [p for p in PACKAGES if p not in have]:
        print(f"{venv.name}: pip install {' '.join(missing)} ...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *missing], check=True)
        marker.write_text("\n".join(PACKAGES) + "\n")
    return python


def joblib_copy() -> str:
    """The store's estimator (a skops file) as a joblib file, which the Triton environment can read."""
    import tempfile

    import bentoml
    import joblib
    import skops.io as sio

    model = bentoml.models.get(MODEL_TAG)
    estimator = sio.load(model.path_of(model.info.metadata["file"]), trusted=model.info.metadata["trusted_types"])
    path = Path(tempfile.mkdtemp(prefix="rtserve-triton-peer-")) / "model.joblib"
    joblib.dump(estimator, path)
    return str(path)


def triton_server(python: Path, queue_delay_us: int = 300) -> Server:
    """Triton with its dynamic batcher (64 rows, `queue_delay_us`), serving the store's estimator."""
    argv = [str(python), str(ROOT / "loadtest" / "peers" / "triton_server.py"), "--model", joblib_copy(),
            "--port", "{port}", "--queue-delay-us", str(queue_delay_us)]
    return Server("triton", argv, READY_PATH)


def oip_body(rows: np.ndarray) -> dict:
    return {"inputs": [{"name": "pixels", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}]}


def check_answers(server: Server, rows: np.ndarray) -> int:
    """Triton's labels and probabilities for `rows` equal our runner's for the same estimator; returns rows checked.

    Sent one request a row and one with all rows, so both the batcher's merging and a client batch are covered."""
    from runners.loader import load_runner

    ours = load_runner(MODEL_TAG, "cpu").run(rows.astype(np.float32))
    url = f"{server.url}/v2/models/{MODEL_NAME}/infer"
    with httpx.Client(timeout=30) as client:
        answers = [client.post(url, json=oip_body(rows[i : i + 1])) for i in range(len(rows))]
        answers.append(client.post(url, json=oip_body(rows)))
    for reply in answers:
        reply.raise_for_status()
    outputs = [{o["name"]: np.asarray(o["data"]) for o in r.json()["outputs"]} for r in answers]
    single_labels = np.concatenate([o["label"] for o in outputs[:-1]])
    single_probs = np.concatenate([o["probabilities"].reshape(-1, 10) for o in outputs[:-1]])
    for labels, probs in ((single_labels, single_probs), (outputs[-1]["label"], outputs[-1]["probabilities"].reshape(-1, 10))):
        if not np.array_equal(labels, ours["label"]):
            raise AssertionError(f"Triton's labels differ from ours on {int((labels != ours['label']).sum())} of {len(rows)} rows")
        np.testing.assert_allclose(probs, ours["probabilities"], atol=1e-5)
    return len(rows)
