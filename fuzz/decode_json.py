"""atheris target: the Open Inference Protocol JSON decoder (`decode_infer`, no binary part), then the
decoded tensors against every demo model's signature, as the server does before batching."""

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
    request = decode_infer(data, LIMITS)
    for signature in SIGNATURES.values():
        try:
            check_inputs(signature, request.inputs, LIMITS)
        except ServingError:
            pass


if __name__ == "__main__":
    main(target)
