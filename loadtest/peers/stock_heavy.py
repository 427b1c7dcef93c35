"""Peer (b) for the heavy models: stock BentoML `batchable=True` serving the same store version as ours.

The version is named by HEAVY_PEER_MODEL (e.g. heavy-resnet-onnx:v1) and batched with HEAVY_PEER_MAX_BATCH and
HEAVY_PEER_MAX_LATENCY_MS (the model's settings in loadtest/heavy/serving.yaml), HEAVY_PEER_THREADS intra-op threads. It computes
what ours answers, in the framework's own calls: an ONNX image classifier's softmax, a text encoder's embedding
(tokenized by the version's own tokenizer, padded to the batch's longest text), an XGBoost booster's class
probabilities.

    HEAVY_PEER_MODEL=heavy-bert-onnx:v1 bentoml serve loadtest.peers.stock_heavy:StockHeavy
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import numpy as np

TAG = os.environ.get("HEAVY_PEER_MODEL", "heavy-resnet-onnx:v1")
MAX_BATCH = int(os.environ.get("HEAVY_PEER_MAX_BATCH", "64"))
MAX_LATENCY_MS = int(float(os.environ.get("HEAVY_PEER_MAX_LATENCY_MS", "60000")))
THREADS = int(os.environ.get("HEAVY_PEER_THREADS", "1"))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@bentoml.service(name="stock-heavy", workers=1)
class StockHeavy:
    model_ref = bentoml.models.BentoModel(TAG)

    def __init__(self) -> None:
        folder = Path(self.model_ref.path)
        self.booster = self.session = self.tokenizer = None
        if (folder / "model.onnx").exists():
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
            self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        else:
            import xgboost as xgb

            self.booster = xgb.Booster(model_file=str(folder / "model.json"))
            self.booster.set_param({"nthread": THREADS})
        declared = self.model_ref.info.metadata.get("tokenizer")
        if declared:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(folder / declared["file"]))
            self.tokenizer.enable_truncation(declared["max_length"])
            self.tokenizer.enable_padding()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, input: np.ndarray) -> np.ndarray:
        if self.booster is not None:
            import xgboost as xgb

            p = self.booster.predict(xgb.DMatrix(input.astype(np.float32)))
            return np.stack([1 - p, p], axis=1).astype(np.float32)
        if self.tokenizer is not None:
            encodings = self.tokenizer.encode_batch([str(t) for t in input])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        name = self.session.get_inputs()[0].name
        return softmax(self.session.run(None, {name: input.astype(np.float32)})[0])
