"""What a short `model.yaml` beside a model file declares, in the spirit of MLServer's model-settings.

A format that carries no signature (TorchScript) needs `inputs` here, or a sample input; any other
format may override what was read from the model. Every field is optional:

    task: classification          # classification | regression | tensors
    inputs:
      - {name: x, datatype: FP32, shape: [-1, 4], min_value: 0, max_value: 10}
    outputs:                      # the model's own outputs; recorded from one sample call when left out
      - {name: logits, datatype: FP32, shape: [-1, 3]}
    class_names: [setosa, versicolor, virginica]
    softmax: true                 # the model returns logits: apply softmax to make probabilities
    batching: true                # false: one request per model call (a fixed batch dimension);
                                  # or its settings, e.g. {max_latency_ms: 2000, max_batch_size: 8}
                                  # (models.batching.SUGGESTED_FIELDS; serving.yaml's block for the model wins)
    device: cpu                   # auto | cpu | cuda
    modes: [real_time, batch]
    implementation: mypkg.runtime:MyRuntime   # a runtime of your own (runs code: operator opt-in)
    tokenizer: {file: tokenizer.json, input: text, max_length: 128}   # strings in, token ids to the model
                                                                      # (see models.tokenize)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from core.errors import ModelRefused
from models.batching import SuggestedBatching
from models.signature import SPEC_DTYPES, TensorSpec
from models.tokenize import TokenizerDecl

TASKS = ("classification", "regression", "tensors")
MODES = ("real_time", "batch", "streaming")
"""Every inference mode, in the order metadata lists them."""


class TensorDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    datatype: Literal[tuple(SPEC_DTYPES)]  # type: ignore[valid-type]
    shape: list[int] = Field(min_length=1)
    """-1 marks a variable dimension; the first is the batch."""
    min_value: float | None = None
    max_value: float | None = None

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, tuple(self.shape), self.min_value, self.max_value)


class Declared(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str | None = None
    """The file's format, when its name does not say it (see `models.formats.FORMATS`)."""
    task: Literal[TASKS] | None = None  # type: ignore[valid-type]
    inputs: list[TensorDecl] | None = None
    outputs: list[TensorDecl] | None = None
    """The model's own outputs (before a classifier's probabilities and label are made of them)."""
    class_names: list[str | int] | None = None
    softmax: bool | None = None
    batching: Annotated[  # type: ignore[valid-type]
        Annotated[bool, Tag("flag")] | Annotated[SuggestedBatching, Tag("settings")],
        Discriminator(lambda v: "flag" if isinstance(v, bool | str | int) else "settings"),
    ] | None = None
    """true (or absent): batched with the server's settings; false: one request per model call; a mapping: batched,
    with these settings suggested for the model (serving.yaml's `models.NAME.batching` wins over them)."""
    device: Literal["auto", "cpu", "cuda"] | None = None
    modes: list[Literal[MODES]] | None = None  # type: ignore[valid-type]
    implementation: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """`package.module:Class`, a runtime of the user's own (see `models.formats.custom`)."""
    tokenizer: TokenizerDecl | None = None
    """Strings in: the served input is text, tokenized into the model's id inputs (see `models.tokenize`)."""

    def batches(self) -> bool | None:
        """Whether the model.yaml turns batching on (a mapping of settings does) or off; None when it does not say."""
        return self.batching if self.batching is None or isinstance(self.batching, bool) else True

    def batch_settings(self) -> dict[str, Any]:
        """The batch settings the model.yaml suggests (its `batching` mapping), as the version's metadata records them."""
        return {} if self.batching is None or isinstance(self.batching, bool) else self.batching.model_dump(exclude_none=True)

    def named_files(self) -> tuple[str, ...]:
        """Files beside the model that this declaration names."""
        return (self.tokenizer.file,) if self.tokenizer else ()

    @classmethod
    def read(cls, path: Path) -> Declared:
        try:
            data = yaml.safe_load(path.read_text()) or {}
            return cls.model_validate(data)
        except (yaml.YAMLError, ValidationError, UnicodeDecodeError, TypeError) as exc:
            raise ModelRefused(f"{path.name}: not a valid model configuration: {exc}") from None
