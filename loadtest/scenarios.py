"""What the benchmark sends: one body template per scenario and kind of server.

Templates use the placeholders of `wrk/scenario.lua`: @ROW@ is replaced by fresh random
values on every request (so every input is unique: the cache-miss path), @LEN@ by their count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OIP_PIXELS = '{"inputs":[{"name":"pixels","shape":%s,"datatype":"FP32","data":[%s]}]}'
OIP_TOKENS = '{"inputs":[{"name":"tokens","shape":[1,@LEN@],"datatype":"INT64","data":[@ROW@]}]}'


def _fixed_rows(n: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 17, size=(n, 64)).tolist()


def _csv(rows: list[list[int]]) -> str:
    return ",".join(str(v) for row in rows for v in row)


@dataclass(frozen=True)
class Request:
    path: str
    body: str | bytes
    """JSON text, or an OIP binary-extension body (with RT_BINARY_HEADER_LEN in `env`)."""
    env: dict[str, str] = field(default_factory=dict)  # RT_MIN/RT_MAX/RT_LEN_* for the Lua script


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    describe: str
    oip: Request
    stock: Request | None = None  # how peer (b) gets the same work, when it serves this model


ROW64 = {"RT_MIN": "0", "RT_MAX": "16", "RT_LEN_MIN": "64", "RT_LEN_MAX": "64"}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "sklearn-miss", "digits-sklearn", "digits-sklearn, 1 row, every input unique (cache miss)",
            Request("/v2/models/digits-sklearn/infer", OIP_PIXELS % ("[1,64]", "@ROW@"), ROW64),
            Request("/predict", '{"input":[[@ROW@]]}', ROW64),
        ),
        Scenario(
            "sklearn-hit", "digits-sklearn", "digits-sklearn, 1 row, the same input every time (cache hit)",
            Request("/v2/models/digits-sklearn/infer", OIP_PIXELS % ("[1,64]", _csv(_fixed_rows(1)))),
            Request("/predict", '{"input":[[%s]]}' % _csv(_fixed_rows(1))),
        ),
        Scenario(
            "torch-miss", "digits-torch", "digits-torch, 1 row, unique inputs",
            Request("/v2/models/digits-torch/infer", OIP_PIXELS % ("[1,1,8,8]", "@ROW@"), ROW64),
        ),
        Scenario(
            "onnx-miss", "digits-onnx", "digits-onnx, 1 row, unique inputs",
            Request("/v2/models/digits-onnx/infer", OIP_PIXELS % ("[1,1,8,8]", "@ROW@"), ROW64),
        ),
        Scenario(
            "seq-miss", "seq-torch", "seq-torch, 1 sequence of random length 1-64, unique",
            Request("/v2/models/seq-torch/infer", OIP_TOKENS, {"RT_MIN": "1", "RT_MAX": "20", "RT_LEN_MIN": "1", "RT_LEN_MAX": "64"}),
        ),
        Scenario(
            "sklearn-64rows", "digits-sklearn", "digits-sklearn, 64 rows in one request",
            Request("/v2/models/digits-sklearn/infer", OIP_PIXELS % ("[64,64]", _csv(_fixed_rows(64)))),
            Request("/predict", '{"input":[%s]}' % ",".join("[%s]" % _csv([r]) for r in _fixed_rows(64))),
        ),
    ]
}
