"""atheris target: the binary tensor extension (`decode_infer` with `Inference-Header-Content-Length`),
then the decoded tensors against every demo model's signature.

Input layout: 4 bytes little-endian, the header length the client declares; then the body
(JSON header and raw tensor bytes). The seeds are real requests in that layout."""

from __future__ import annotations

import atheris
import numpy  # noqa: F401 - imported before instrumentation: only the project's code is instrumented
import orjson  # noqa: F401
import pydantic_settings  # noqa: F401

with atheris.instrument_imports():
    from core.errors import ServingError
    from frontends.oip_codec import decode_infer
    from gateway.settings import LimitSettings
    from gateway.validate import check_inputs

from fuzz.common import load_signatures, main

LIMITS = LimitSettings()
SIGNATURES = load_signatures()


def target(data: bytes) -> None:
    if len(data) < 4:
        return
    request = decode_infer(data[4:], LIMITS, int.from_bytes(data[:4], "little"))
    for signature in SIGNATURES.values():
        try:
            check_inputs(signature, request.inputs, LIMITS)
        except ServingError:
            pass


if __name__ == "__main__":
    main(target)
