"""atheris target: the /predict row decoder (`rows_to_inputs`) and `check_inputs`, per demo model.

Input layout: a model name, a NUL byte, then the JSON `inputs` (a list of rows). An unknown name
picks a model by the name's bytes, so every input reaches a real signature."""

from __future__ import annotations

import atheris
import numpy  # noqa: F401 - imported before instrumentation: only the project's code is instrumented
import orjson  # noqa: F401
import pydantic_settings  # noqa: F401

with atheris.instrument_imports():
    from frontends.oip_codec import parse_json
    from frontends.predict_codec import rows_to_inputs
    from gateway.settings import LimitSettings
    from gateway.validate import check_inputs

from fuzz.common import load_signatures, main

LIMITS = LimitSettings()
SIGNATURES = load_signatures()
NAMES = sorted(SIGNATURES)


def target(data: bytes) -> None:
    name, _, rows = data.partition(b"\0")
    signature = SIGNATURES.get(name.decode("utf-8", "replace")) or SIGNATURES[NAMES[sum(name) % len(NAMES)]]
    inputs = rows_to_inputs(signature, parse_json(rows), LIMITS)
    check_inputs(signature, inputs, LIMITS)


if __name__ == "__main__":
    main(target)
