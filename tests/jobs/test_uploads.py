""".npy and .npz uploads: the header's shape and dtype are checked before any array exists, so a declared
shape or a zip bomb cannot allocate; damaged files are 400, files that do not fit the input 422."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

import numpy as np
import pytest

from core.errors import BadRequest, InvalidInput, PayloadTooLarge
from fuzz.seeds import npy, npy_header, npz, npz_bomb
from gateway.settings import LimitSettings
from jobs.npy import MAX_CENTRAL_DIRECTORY
from jobs.rows import from_named_upload, from_upload
from models.signature import TensorSpec

pytestmark = pytest.mark.cache_independent
"""Upload parsing alone."""

PIXELS = TensorSpec("pixels", "FP32", (-1, 64), 0.0, 16.0)
TOKENS = TensorSpec("tokens", "INT64", (-1, -1), 0, 20)
LIMITS = LimitSettings()
MAX_ROWS = 1_000_000
MAX_BYTES = 128 * 1024 * 1024


def load(body: bytes, spec: TensorSpec = PIXELS):
    return from_upload(spec, body, MAX_ROWS, LIMITS, MAX_BYTES)


def peak_of(body: bytes, error: type[Exception]) -> int:
    """Bytes allocated at most while the upload is refused with `error`."""
    tracemalloc.start()
    try:
        with pytest.raises(error):
            load(body)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_zip_bomb_is_refused_from_its_header():
    bomb = npz_bomb("pixels", (4_000_000, 64), "<f4", 1 << 30)  # 1 MB that np.load inflates to 1 GiB
    assert len(bomb) < 2 << 20
    assert peak_of(bomb, InvalidInput) < len(bomb) + (4 << 20)
    with pytest.raises(InvalidInput, match="4000000 rows is over the job limit"):
        load(bomb)


def test_an_npz_member_may_not_inflate_past_what_an_npy_upload_may_hold():
    bomb = npz_bomb("pixels", (1_000_000, 64), "<f8", 512 << 20)  # within max_rows, 512 MiB of data
    assert peak_of(bomb, PayloadTooLarge) < len(bomb) + (4 << 20)


def test_a_declared_shape_never_allocates():
    header = npy_header((10**12, 64))
    assert peak_of(header, InvalidInput) < 1 << 20
    assert peak_of(npy_header((10**400, 64)), InvalidInput) < 1 << 20
    with pytest.raises(BadRequest, match="bytes of data"):
        load(npy_header((10, 64)) + bytes(100))  # fewer bytes than the header declares


@pytest.mark.parametrize("dtype", ["|O", "<U4", "|S8", "<c8", "|V8", [("a", "<f4"), ("b", "<f4")]])
def test_dtypes_that_are_not_numbers_are_refused(dtype):
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": (2, 64)})
    with pytest.raises(InvalidInput, match="is not numbers"):
        load(out.getvalue() + bytes(2 * 64 * 16))


def test_shapes_that_do_not_fit_the_input_are_refused():
    for shape, message in (((0, 64), "no rows"), ((3, 0), "no rows"), ((), "no rows"), ((3, 65), "does not match"), ((3, 8, 9), "does not match")):
        with pytest.raises(InvalidInput, match=message):
            load(npy_header(shape))
    with pytest.raises(InvalidInput, match="over the limit"):
        load(npy_header((2, LIMITS.max_sequence_length + 1), "<i8"), TOKENS)
    with pytest.raises(InvalidInput, match="does not match"):
        load(npy_header((2, 3, 4), "<i8"), TOKENS)


def test_damaged_files_are_bad_requests():
    good = npz(pixels=np.zeros((2, 64), np.float32))
    stored = io.BytesIO()
    with zipfile.ZipFile(stored, "w") as archive:
        archive.writestr("pixels.npy", npy_header((2, 64)) + bytes(2 * 64 * 4))
    cases = [
        np.lib.format.MAGIC_PREFIX + b"garbage",
        npy_header((2, 64))[:20],
        b"\x93NUMPY\x03\x00" + npy_header((2, 64))[8:],  # format 3.0
        b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_" + bytes(92),  # numpy raised tokenize.TokenError (atheris)
        good[: len(good) // 2],  # cut short
        good.replace(b"PK\x01\x02", b"PK\x01\x03"),  # no central directory
        stored.getvalue().replace(b"'shape': (2, 64)", b"'shape': (-2, 64)"),
    ]
    for body in cases:
        with pytest.raises(BadRequest) as caught:
            load(body)
        assert caught.type in (BadRequest, InvalidInput), caught.value


def test_an_npz_with_a_huge_table_of_members_is_refused_before_it_is_read():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for i in range(MAX_CENTRAL_DIRECTORY // 40):
            archive.writestr(f"m{i}.npy", b"")
    with pytest.raises(BadRequest, match="more members"):
        load(out.getvalue())
    with pytest.raises(InvalidInput, match="name the array 'pixels'"):
        load(npz(a=np.zeros((1, 64), np.float32), b=np.zeros((1, 64), np.float32)))


def test_real_uploads_in_every_layout_read_as_before():
    rows = np.arange(3 * 64, dtype=np.float32).reshape(3, 64) % 17
    for body in (npy(rows), npy(np.asfortranarray(rows)), npy(rows.astype(">f8")), npy(rows.reshape(3, 8, 8)),
                 npz(pixels=rows), npz(other=rows)):
        got = load(body)
        np.testing.assert_array_equal(got.fixed, rows)
    version_2 = npy_header((3, 64), version=2) + rows.tobytes()
    np.testing.assert_array_equal(load(version_2).fixed, rows)
    tokens = np.array([[1, 2, 0], [3, 0, 0]], dtype=np.int32)
    got = load(npz(tokens=tokens), TOKENS)
    assert [r.tolist() for r in got.ragged] == [[1, 2, 0], [3, 0, 0]]


MEASUREMENTS = TensorSpec("measurements", "FP32", (-1, 4), None, 10.0)
SCALE = TensorSpec("scale", "FP32", (-1, 1))


def load_named(body: bytes, max_bytes: int = MAX_BYTES):
    return from_named_upload((MEASUREMENTS, SCALE), body, MAX_ROWS, LIMITS, max_bytes)


def test_a_model_of_several_inputs_takes_an_npz_keyed_by_input_name():
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 2
    scale = np.array([[0.5], [1.0], [2.0]], dtype=">f8")  # any byte order and float width: cast to the input's
    x[1, 2] = 11.0  # over max_value: that row fails alone, naming its input
    rows = load_named(npz(scale=scale, measurements=x))
    assert len(rows) == 3
    data, index, errors = rows.batch(0, 3, LIMITS)
    assert index == [0, 2] and errors == {1: "measurements: values must be <= 10"}
    assert list(data) == ["measurements", "scale"] and data["measurements"][0] == "FP32"
    np.testing.assert_array_equal(data["measurements"][1], x[[0, 2]])
    assert data["scale"][1].dtype == np.float32 and data["scale"][1].ravel().tolist() == [0.5, 2.0]
    data, index, errors = rows.batch(1, 2, LIMITS)
    assert data is None and index == [] and list(errors) == [1]


@pytest.mark.parametrize(("body", "error", "words"), [
    (npz(measurements=np.zeros((2, 4), np.float32)), InvalidInput, "missing ['scale']"),
    (npz(measurements=np.zeros((2, 4), np.float32), scale=np.ones((2, 1), np.float32), extra=np.ones(2)),
     InvalidInput, "unknown ['extra']"),
    (npz(measurements=np.zeros((2, 4), np.float32), scale=np.ones((3, 1), np.float32)), InvalidInput, "same number of rows"),
    (npz(measurements=np.zeros((2, 5), np.float32), scale=np.ones((2, 1), np.float32)), InvalidInput, "input 'measurements'"),
    (npy(np.zeros((2, 4), np.float32)), InvalidInput, "send an .npz holding each under its name"),
    (npz(measurements=np.zeros((2, 4), np.float32), scale=np.ones((2, 1), np.int64)), None, None),
    (b"PK\x03\x04 damaged", BadRequest, "not a readable"),
])
def test_an_npz_that_does_not_fit_the_inputs_is_refused(body, error, words):
    if error is None:
        assert len(load_named(body)) == 2  # integers are exact in FP32: taken
        return
    with pytest.raises(error, match=__import__("re").escape(words)):
        load_named(body)


def test_the_members_together_stay_within_the_byte_limit():
    body = npz(measurements=np.zeros((1000, 4), np.float32), scale=np.ones((1000, 1), np.float32))
    assert len(load_named(body, max_bytes=20_000)) == 1000
    with pytest.raises(PayloadTooLarge, match="for all its members"):
        load_named(body, max_bytes=17_000)  # each fits alone (16,000 and 4,000 bytes), not both
