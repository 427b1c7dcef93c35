"""A runtime of the user's own, named by import string (`package.module:Class`), as MLServer's
`implementation` setting does.

The class is constructed with the version's folder and metadata and answers `predict(inputs)`
with named arrays:

    class MyRuntime:
        def __init__(self, path: pathlib.Path, metadata: dict) -> None: ...
        def predict(self, inputs: dict[str, numpy.ndarray]) -> dict[str, numpy.ndarray]: ...

Importing it runs its code, so it follows the rule of the formats that can run code: allowed
only when the operator has turned them on and the deploy asks for it. Its inputs are declared in
the `model.yaml`; its outputs are recorded from one sample call when not declared.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelRefused
from models.formats.base import Described, ModelFormat


def import_object(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ModelRefused(f"implementation '{spec}' cannot be imported: {exc}") from None


class CustomFormat(ModelFormat):
    name = "custom"
    framework = "custom"
    runs_code = True

    def matches(self, file: Path) -> bool:
        return False  # chosen only by `implementation` in the model.yaml

    def load(self, file: Path, metadata: Mapping[str, Any], device: str = "cpu") -> Any:
        runtime = import_object(metadata["implementation"])
        return runtime(file, dict(metadata))

    def describe(self, model: Any, file: Path) -> Described:
        return Described()

    def predict(self, model: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return model.predict(inputs)
