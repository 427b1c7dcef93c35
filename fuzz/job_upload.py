"""atheris target: a batch job's `.npy` / `.npz` upload read into rows (`from_upload`), per demo model.

Input layout: a model name, a NUL byte, then the upload. An unknown name picks a model by the name's
bytes, so every input reaches a real signature. The header must be checked before any array exists:
an upload that allocates over the memory budget is a crash."""

from __future__ import annotations

import atheris
import numpy  # noqa: F401 - imported before instrumentation: only the project's code is instrumented
import pydantic_settings  # noqa: F401

with atheris.instrument_imports():
    from gateway.settings import LimitSettings
    from jobs.rows import from_upload
    from jobs.settings import JobSettings

from fuzz.common import load_signatures, main

LIMITS = LimitSettings()
JOBS = JobSettings()
SIGNATURES = load_signatures()
NAMES = sorted(SIGNATURES)


def target(data: bytes) -> None:
    name, _, body = data.partition(b"\0")
    signature = SIGNATURES.get(name.decode("utf-8", "replace")) or SIGNATURES[NAMES[sum(name) % len(NAMES)]]
    from_upload(signature.inputs[0], body, JOBS.max_rows, LIMITS, JOBS.max_body_bytes)


if __name__ == "__main__":
    main(target)
