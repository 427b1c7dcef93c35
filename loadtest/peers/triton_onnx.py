"""Peer: NVIDIA Triton (through PyTriton) serving a heavy model's ONNX file in ONNX Runtime inside its Python
callable, over OIP REST, with its dynamic batcher; one model instance, `--threads` intra-op threads.

Triton's own ONNX Runtime backend is not in PyTriton's wheel (it ships the Python backend only), so ONNX Runtime
runs in the callable. Runs in `.venv-triton` (loadtest/peers/triton_peer.py) and imports nothing from this project;
the benchmark passes the version's folder in the store. It answers what ours answers: an image classifier's
softmax (`probabilities`), a text encoder's `embedding` of BYTES `text` (the folder's tokenizer, truncated to
`--max-length`, padded to the batch's longest text).

    .venv-triton/bin/python loadtest/peers/triton_onnx.py --folder STORE/heavy-bert-onnx/v1 --name heavy-bert-onnx \
        --port 8000 --max-batch 4 --max-length 128
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from triton_server import free_port, link_own_libpython


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _dims(shape: list) -> tuple[int, ...]:
    """An ONNX shape past its batch dimension, a named (dynamic) one as -1."""
    return tuple(d if isinstance(d, int) else -1 for d in shape[1:])


def model(folder: Path, max_length: int, threads: int) -> tuple[Callable, list[Tensor], list[Tensor]]:
    """The batched callable and its inputs and outputs, as Triton declares them."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    out = session.get_outputs()[0]
    if (folder / "tokenizer.json").exists():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(max_length)
        tokenizer.enable_padding()

        @batch
        def embed(text: np.ndarray) -> dict[str, np.ndarray]:
            encodings = tokenizer.encode_batch([t.decode() for t in text[:, 0]])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            return {"embedding": session.run(None, {"input_ids": ids, "attention_mask": mask})[0]}

        return embed, [Tensor(name="text", dtype=bytes, shape=(1,))], [Tensor(name="embedding", dtype=np.float32,
                                                                              shape=_dims(out.shape))]
    first = session.get_inputs()[0]

    @batch
    def classify(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {"probabilities": softmax(session.run(None, {first.name: inputs[first.name]})[0]).astype(np.float32)}

    return (classify, [Tensor(name=first.name, dtype=np.float32, shape=_dims(first.shape))],
            [Tensor(name="probabilities", dtype=np.float32, shape=_dims(out.shape))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True, help="the version's folder in the model store")
    parser.add_argument("--name", required=True, help="the model's name in the URL")
    parser.add_argument("--port", type=int, required=True, help="HTTP (OIP REST) port")
    parser.add_argument("--max-batch", type=int, required=True, help="dynamic batcher's largest batch")
    parser.add_argument("--max-length", type=int, default=128, help="tokens a text is truncated to")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime's intra-op threads")
    parser.add_argument("--queue-delay-us", type=int, default=300, help="dynamic batcher's longest wait for a fuller batch")
    args = parser.parse_args()
    link_own_libpython()
    infer, inputs, outputs = model(args.folder, args.max_length, args.threads)
    config = TritonConfig(http_address="127.0.0.1", http_port=args.port, grpc_address="127.0.0.1", grpc_port=free_port(),
                          allow_metrics=False, log_verbose=0)
    with Triton(config=config) as triton:
        triton.bind(model_name=args.name, infer_func=infer, inputs=inputs, outputs=outputs, strict=True,
                    config=ModelConfig(max_batch_size=args.max_batch,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us)))
        triton.serve()


if __name__ == "__main__":
    main()
