"""Real requests of every kind the server decodes, built from the demo models in the BentoML store.

They seed the atheris corpora and are mixed into schemathesis' generated requests, so fuzzing
starts from inputs that pass the decoders and reach validation, the batcher and the models,
instead of spending its budget on bodies that fail at the first check.
"""

from __future__ import annotations

import io
import json
import math
import struct
import time
import zlib
from dataclasses import dataclass

import numpy as np
import orjson

from demo import data
from models.signature import Signature, TensorSpec


@dataclass(frozen=True)
class ServedModel:
    name: str
    versions: tuple[str, ...]
    signature: Signature

    @property
    def spec(self) -> TensorSpec:
        return self.signature.inputs[0]


def served_models() -> list[ServedModel]:
    """The models serving.yaml serves, with their versions in the store (BENTOML_HOME) and the signature of
    the first; other models a test saved into the store are not served, so they are left out."""
    import bentoml

    from app.config import load_serving
    from runners.settings import DEFAULT_CONFIG

    configured = load_serving(DEFAULT_CONFIG).models
    versions: dict[str, list[str]] = {}
    signatures: dict[str, Signature] = {}
    for model in sorted(bentoml.models.list(), key=lambda m: str(m.tag)):
        name, version = model.tag.name, model.tag.version or ""
        if name not in configured:
            continue
        versions.setdefault(name, []).append(version)
        signatures.setdefault(name, Signature.from_metadata(model.info.metadata))
    return [ServedModel(name, tuple(versions[name]), signatures[name]) for name in sorted(versions)]


def rows(spec: TensorSpec, n: int, seed: int = 0) -> np.ndarray:
    """`n` real rows for the input: held-out digits, or token sequences (right-padded with 0)."""
    if spec.dtype.kind == "f":
        x = data.digits().x_test
        start = seed % (len(x) - n)
        return x[start : start + n].reshape(n, *spec.row_shape).astype(spec.dtype)
    tokens, _ = data.sequences(n, seed=seed)
    return tokens.astype(spec.dtype)


def infer_json(spec: TensorSpec, batch: np.ndarray, binary_outputs: bool = False) -> bytes:
    """An Open Inference Protocol request with the tensor as JSON numbers."""
    doc: dict = {"id": "seed", "inputs": [{"name": spec.name, "shape": list(batch.shape), "datatype": spec.datatype,
                                           "data": batch.ravel().tolist()}]}
    if binary_outputs:
        doc["parameters"] = {"binary_data_output": True}
    return orjson.dumps(doc)


def infer_binary(spec: TensorSpec, batch: np.ndarray) -> tuple[bytes, int]:
    """The binary tensor extension: a JSON header, then the raw bytes; (body, header length)."""
    raw = np.ascontiguousarray(batch, dtype=spec.dtype).tobytes()
    header = orjson.dumps({"inputs": [{"name": spec.name, "shape": list(batch.shape), "datatype": spec.datatype,
                                       "parameters": {"binary_data_size": len(raw)}}],
                           "outputs": [{"name": "label", "parameters": {"binary_data": True}}]})
    return header + raw, len(header)


def predict_rows(spec: TensorSpec, batch: np.ndarray) -> list:
    """Rows as /predict takes them: flat pixel lists, or token lists of their own lengths (no padding)."""
    if spec.dtype.kind == "f":
        return [row.ravel().tolist() for row in batch]
    return [[int(t) for t in row if t > 0] or [1] for row in batch]


def predict_body(model: ServedModel, batch: np.ndarray, version: str | None = None) -> bytes:
    doc: dict = {"model": model.name, "inputs": predict_rows(model.spec, batch)}
    if version is not None:
        doc["version"] = version
    return orjson.dumps(doc)


def npy_header(shape: tuple[int, ...], dtype: str = "<f4", fortran: bool = False, version: int = 1) -> bytes:
    """The header alone of an .npy file declaring `shape`: what np.load would allocate for before reading data."""
    out = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": fortran, "shape": shape}
    (np.lib.format.write_array_header_1_0 if version == 1 else np.lib.format.write_array_header_2_0)(out, header)
    return out.getvalue()


def npy(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, arr)
    return out.getvalue()


def npz(**arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)
    return out.getvalue()


def npz_bomb(name: str, shape: tuple[int, ...], dtype: str, inflated_bytes: int) -> bytes:
    """An .npz whose member `name` declares `shape` and inflates to `inflated_bytes` (under 4 GiB): an .npy
    header, then zeros, from about a thousandth of that. Built without compressing the zeros: after a full
    flush, deflate writes the same bytes for the same block, so one compressed MiB is repeated."""
    block = bytes(1 << 20)
    header = npy_header(shape, dtype)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    zeros = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    blocks = (inflated_bytes - len(header)) // len(block)
    data = head + zeros * blocks + deflate.flush()
    crc = zlib.crc32(header)
    for _ in range(blocks):
        crc = zlib.crc32(block, crc)
    size = len(header) + blocks * len(block)
    filename = f"{name}.npy".encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(filename), 0) + filename
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size, len(filename),
                          0, 0, 0, 0, 0, 0) + filename
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end


def claims() -> list[bytes]:
    """Token payloads: valid claim sets of every shape the server reads, and the ones once accepted or crashing."""
    now = int(time.time())
    base = {"sub": "alice", "iat": now, "exp": now + 600}
    docs = [
        base,
        {**base, "tenant": "acme", "scope": "predict batch"},
        {**base, "scp": ["predict", "admin"], "models": ["digits-onnx", "seq-torch"]},
        {**base, "models": "digits-sklearn", "iss": "https://idp.example", "aud": ["rtserve"]},
        {**base, "sub": "\ud800x"},
        {**base, "note": {"deep": [1, {"\udc00": None}]}},
    ]
    out = [orjson.dumps(d) for d in docs[:4]] + [json.dumps(d).encode() for d in docs[4:]]
    return out + [f'{{"sub":"a","exp":{exp}}}'.encode() for exp in ("1e400", str(10**400), "NaN", "true")]


def heads() -> list[bytes]:
    """Request heads for `fuzz.request_head` (first byte: the read size less one): real ones, pipelined ones,
    and heads over its 1 KiB limit in the request line, in one header, in many, and unterminated."""
    infer = b"POST /v2/models/digits-sklearn/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    body = b'{"inputs":[]}'
    real = infer + b"content-length: %d\r\n\r\n%s" % (len(body), body)
    return [
        b"\xff" + real, b"\x00" + real, b"\x07" + real * 3,
        b"\x3f" + b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nhost: x\r\n\r\n",
        b"\x7f" + b"GET / HTTP/1.1\r\nx-big: " + b"b" * 3000 + b"\r\n\r\n",
        b"\x1f" + b"GET / HTTP/1.1\r\n" + b"x-h: v\r\n" * 300 + b"\r\n",
        b"\xff" + b"GET / HTTP/1.1\r\nx-open: " + b"c" * 4000,
        b"\x0f" + real + b"GET / HTTP/1.1\r\nx-next: " + b"d" * 1500,
    ]


def repository_params() -> list[bytes]:
    """Repository load parameters for `fuzz.repository_params`: what tritonclient sends, and configs too deep to walk."""
    config = orjson.dumps({"name": "digits-sklearn", "version_policy": {"specific": {"versions": ["v1", "v2"]}}}).decode()
    deep = "[" * 5_000 + "]" * 5_000  # past orjson's 1,024 levels and the interpreter's recursion limit
    return [
        orjson.dumps({"config": config}), orjson.dumps({"version": "v2"}), orjson.dumps({"unload_dependents": False}),
        orjson.dumps({"config": orjson.loads(config)}), orjson.dumps({"config": deep}), deep.encode(),
        orjson.dumps({"config": '{"version_policy":' * 5000 + "1" + "}" * 5000}), orjson.dumps({"file:1/model.onnx": "AAAA"}),
    ]


def job_uploads(spec: TensorSpec) -> list[bytes]:
    """Job uploads for the input: real ones in every layout, and headers that declare what must be refused
    before any array exists (a huge shape, object dtype, a zip bomb, fewer bytes than declared)."""
    batch = rows(spec, 3, seed=5)
    width = math.prod(batch.shape[1:])
    return [
        npy(batch), npz(**{spec.name: batch}), npy(np.asfortranarray(batch.reshape(3, -1))),
        npy(batch.astype(batch.dtype.newbyteorder(">"))), npy_header(batch.shape, batch.dtype.str, version=2) + batch.tobytes(),
        npy_header((10**12, width)), npy_header((2, width), "|O") + bytes(16 * width), npy_header((3, width))[:-8],
        npy_header((3, width + 1)) + bytes(4 * 3 * (width + 1)), npz_bomb(spec.name, (4_000_000, width), "<f4", 8 << 20),
    ]


def job_ids() -> list[str]:
    """Job ids in the format the server makes (none of them a job), and strings that must not reach a file name."""
    return ["0123456789abcdef01234567", "ffffffffffffffffffffffff", "a" * 300, "A" * 24, "0" * 23, "..", "%2e%2e", "a b",
            "\u00e9" * 24, "0123456789abcdef0123456g"]


ATTACK_SHAPES = ([1, 0, 2**63 - 1], [0, 2**63 - 1], [2**62, 0], [2**40, 2**40, 2**40], [1, 0])
"""Zero-size and overflowing dimensions: a zero keeps the element count at 0 whatever the others claim."""


def shape_attacks(spec: TensorSpec, binary: bool = False) -> list[bytes]:
    """Requests declaring `ATTACK_SHAPES` with no data: each must be refused as the client's mistake."""
    where = {"parameters": {"binary_data_size": 0}} if binary else {"data": []}
    return [orjson.dumps({"inputs": [{"name": spec.name, "shape": shape, "datatype": spec.datatype, **where}]})
            for shape in ATTACK_SHAPES]


def corpus(kind: str) -> list[bytes]:
    """Seed inputs for one atheris target: every model, one and several rows, both encodings."""
    if kind == "claims":
        return claims()
    if kind == "head":
        return heads()
    if kind == "repository":
        return repository_params()
    out: list[bytes] = []
    for model in served_models():
        spec = model.spec
        for n, seed in ((1, 0), (3, 7), (8, 11)):
            batch = rows(spec, n, seed)
            if kind == "json":
                out.append(infer_json(spec, batch, binary_outputs=seed == 7))
                out.extend(shape_attacks(spec) if n == 1 else [])
            elif kind == "binary":
                body, length = infer_binary(spec, batch)
                out.append(length.to_bytes(4, "little") + body)
                out.extend(length.to_bytes(4, "little") + h for h in (shape_attacks(spec, binary=True) if n == 1 else []))
            elif kind == "rows":
                out.append(model.name.encode() + b"\0" + orjson.dumps(predict_rows(spec, batch)))
            elif kind == "upload":
                out.extend(model.name.encode() + b"\0" + body for body in job_uploads(spec) if len(body) < 64 * 1024)
            else:
                raise ValueError(f"unknown corpus kind {kind!r}")
    return out
