"""The reader interface every model format implements, and what a reader says about a model.

A reader checks a file before anything opens it (`check`: refuse what it must, return what the
version's metadata should record), opens it (`load`), reads what the model itself says about its
inputs, outputs and task (`describe`) and runs it (`predict`: named arrays in, the model's own
named arrays out). Readers never guess: what a file does not carry is left out of `Described`,
and `models.spec` asks the deployer to declare it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from models.signature import TensorSpec


@dataclass
class Trust:
    """What the operator and this deploy allow."""

    allow_code: bool = False
    """The operator's setting and the deploy's flag together."""
    trusted_types: tuple[str, ...] = ()
    """skops types trusted beyond skops' defaults: the operator's list plus the deploy's `--trust`."""


@dataclass
class Described:
    """What the model says about itself; None where it says nothing."""

    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None
    """The model's own outputs, as `predict` names them."""
    task: str | None = None
    class_names: list[Any] | None = None
    feature_names: list[str] | None = None
    """Names of the columns of a single tabular input, when the model was fitted with them."""
    batching: bool = True
    notes: list[str] = field(default_factory=list)
    """What a deployer should know (e.g. a fixed batch dimension turned batching off)."""


class ModelFormat(ABC):
    name: ClassVar[str]
    """Recorded as the version's `format`; the runner registry is keyed by it."""
    framework: ClassVar[str]
    runs_code: ClassVar[bool] = False
    """Whether opening a file of this format can run code it carries; such formats are opt-in."""
    suffixes: ClassVar[tuple[str, ...]] = ()
    made_here_only: ClassVar[bool] = False
    """Whether only the server itself may write files of this format (`rtserve optimize`'s AOTInductor packages,
    which hold native code): a deploy that brings one is refused, whatever it declares."""

    def matches(self, file: Path) -> bool:
        """Whether a file of this name is of this format (the contents are checked by `check`)."""
        return file.name.lower().endswith(self.suffixes)

    def check(self, file: Path, trust: Trust) -> dict[str, Any]:
        """Refuse the file (ModelRefused) before it is opened, if it must be; metadata to record otherwise."""
        return {}

    @abstractmethod
    def load(self, file: Path, metadata: Mapping[str, Any], device: str = "cpu") -> Any:
        """The model object; `metadata` is the version's (it may be partial during a probe)."""

    @abstractmethod
    def describe(self, model: Any, file: Path) -> Described: ...

    @abstractmethod
    def predict(self, model: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's own outputs for a batch of named inputs."""


def fixed(dim: Any) -> int:
    """A dimension as a signature writes it: an int when fixed, -1 when symbolic or unknown."""
    return dim if isinstance(dim, int) and dim >= 0 else -1
