"""The full-path benchmark's arithmetic of its goals, and the bodies it sends: valid JSON, every input distinct,
the same input in every server's dialect. No timing is checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loadtest.heavy.build import TINY, train_tokenizer
from loadtest.heavy.fullpath import best_within, ratios, runner_limit, text_workload, workload
from models.tokenize import Tokenize, TokenizerDecl

CURVE = [{"batch": 1, "rows_per_s": 3.0, "p50_ms": 330.0}, {"batch": 4, "rows_per_s": 3.4, "p50_ms": 1200.0},
         {"batch": 16, "rows_per_s": 3.6, "p50_ms": 4500.0}]


def point(in_flight: int, rows_per_s: float, p99_ms: float, errors: int = 0) -> dict:
    return {"in_flight": in_flight, "rows_per_s": rows_per_s, "p99_ms": p99_ms, "errors": errors}


def test_the_limit_is_the_best_throughput_whose_call_fits_the_budget():
    assert runner_limit(CURVE, 4000)["batch"] == 4  # batch 16 is faster, but its call is past the budget
    assert runner_limit(CURVE, 5000)["batch"] == 16
    assert runner_limit(CURVE, 100) is None


def test_the_full_path_counts_only_points_within_the_budget_without_errors():
    closed = [point(1, 2.0, 900), point(4, 3.2, 2500), point(8, 3.3, 3900, errors=2), point(16, 3.35, 4100)]
    assert best_within(closed, 4000)["in_flight"] == 4
    r = ratios(runner_limit(CURVE, 4000), closed, {"p99_ms": 2040.0}, 4000)
    assert r["of_limit"] == pytest.approx(3.2 / 3.4) and r["open_p99_of_call"] == pytest.approx(1.7)
    assert ratios(None, closed, None, 4000) == {"best": closed[1], "of_limit": None, "open_p99_of_call": None}
    assert best_within([point(1, 2.0, 4500)], 4000) is None


def test_every_tree_request_is_distinct_and_the_same_in_each_dialect():
    work = workload("heavy-trees-xgb", "heavy-trees-xgb:tiny", TINY, 128, tree_rows=8)
    bodies = [json.loads(work.body("oip", i)) for i in range(3)]
    rows = [np.asarray(b["inputs"][0]["data"], dtype=np.float32).reshape(b["inputs"][0]["shape"]) for b in bodies]
    assert rows[0].shape == (8, 64) and work.rows == 8
    assert len({r.tobytes() for r in rows}) == 3  # distinct as the server sees them (FP32): no cache hit
    np.testing.assert_array_equal(np.asarray(json.loads(work.body("stock", 2))["input"], dtype=np.float32), rows[2])
    assert work.body("triton", 2) == work.body("oip", 2)


def test_a_binary_tree_request_carries_the_json_ones_tensor_and_says_its_header_length():
    """The OIP binary extension: a JSON header of the length the header names, then the FP32 bytes."""
    as_json = workload("heavy-trees-xgb", "heavy-trees-xgb:tiny", TINY, 128, tree_rows=8)
    binary = workload("heavy-trees-xgb", "heavy-trees-xgb:tiny", TINY, 128, tree_rows=8, binary=True)
    for i in range(3):
        expected = json.loads(as_json.body("oip", i))["inputs"][0]
        body = binary.body("oip", i)
        size = int(binary.templates["oip"].headers["Inference-Header-Content-Length"])
        (declared,) = json.loads(body[:size])["inputs"]
        assert declared["shape"] == expected["shape"] and declared["parameters"]["binary_data_size"] == len(body) - size
        np.testing.assert_array_equal(np.frombuffer(body[size:], dtype="<f4"), np.asarray(expected["data"], dtype=np.float32))
    assert binary.body("stock", 1) == as_json.body("stock", 1)  # stock BentoML takes JSON only


def test_every_text_has_the_asked_tokens_and_survives_json(tmp_path):
    tokenizer = train_tokenizer(TINY, tmp_path / "tokenizer.json")
    work = text_workload(Tokenize(tmp_path, TokenizerDecl(max_length=128)), 64)
    texts = [json.loads(work.body("oip", i))["inputs"][0]["data"][0] for i in (0, 1, 5000)]
    assert len(set(texts)) == 3 and any(c in texts[0] for c in "\"\n")  # quotes and newlines escaped in the body
    assert work.label == "64 tokens" and {len(tokenizer.encode(t).ids) for t in texts} == {64}
    assert json.loads(work.body("triton", 1))["inputs"][0]["data"] == [texts[1]]
    assert json.loads(work.body("stock", 5000))["input"] == [texts[2]]
