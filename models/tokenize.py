"""Text in, token ids out: the pre-processing step a text model's `model.yaml` declares.

    tokenizer:
      file: tokenizer.json      # a `tokenizers` file inside the model's folder
      input: text               # the served BYTES input, one string per row
      max_length: 128           # longer texts are truncated
      ids: input_ids            # the model's inputs it fills
      mask: attention_mask      # null when the model takes no mask
      type_ids: null            # e.g. token_type_ids, when the model takes them

A tokenizer file is JSON read by the Rust `tokenizers` library: data, not code, so a text model
exported to ONNX still loads without the operator's opt-in (a tokenizer written as Python would be
a runtime of the user's own: `implementation`). The step runs where the model runs, in the probe
and in the serving worker, before the model's own inputs are checked; a batch is padded to its
longest text, so a batch of short texts costs what its tokens cost, not `max_length`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from core.errors import ModelRefused


class TokenizerDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str = "tokenizer.json"
    input: str = Field("text", min_length=1, max_length=128)
    max_length: int = Field(512, ge=1)
    ids: str = "input_ids"
    mask: str | None = "attention_mask"
    type_ids: str | None = None


class Tokenize:
    """The declared tokenizer, loaded once per runner; called on a batch's named inputs."""

    def __init__(self, folder: Path, decl: TokenizerDecl) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ModelRefused("this model declares a tokenizer, and serving it needs the tokenizers package: "
                               "pip install 'rtserve[text]'") from None
        self.decl = decl
        self._words: list[str] | None = None
        try:
            self.tokenizer = Tokenizer.from_file(str(folder / decl.file))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a malformed file
            raise ModelRefused(f"tokenizer {decl.file}: not a tokenizers file: {str(exc)[:300]}") from None
        self.tokenizer.enable_truncation(decl.max_length)
        padding = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(  # to the longest text of the batch, whatever length the file fixed
            pad_id=padding.get("pad_id", 0), pad_type_id=padding.get("pad_type_id", 0),
            pad_token=padding.get("pad_token", "[PAD]"), direction=padding.get("direction", "right"))

    @classmethod
    def of(cls, metadata: dict[str, Any], folder: Path) -> Tokenize | None:
        """The version's tokenizer, or None for a model that takes no text to tokenize."""
        decl = metadata.get("tokenizer")
        return None if not decl else cls(folder, TokenizerDecl.model_validate(decl))

    @property
    def input(self) -> str:
        return self.decl.input

    def model_inputs(self) -> list[str]:
        return [n for n in (self.decl.ids, self.decl.mask, self.decl.type_ids) if n]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = inputs[self.decl.input]
        encodings = self.tokenizer.encode_batch([_text(t) for t in texts.reshape(len(texts), -1)[:, 0]])
        out = {k: v for k, v in inputs.items() if k != self.decl.input}
        out[self.decl.ids] = np.array([e.ids for e in encodings], dtype=np.int64)
        if self.decl.mask:
            out[self.decl.mask] = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        if self.decl.type_ids:
            out[self.decl.type_ids] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return out

    def sample_text(self, tokens: int) -> str:
        """A text of about `tokens` tokens ([CLS] and [SEP] included), of whole words of the vocabulary."""
        if self._words is None:
            vocab = self.tokenizer.get_vocab()
            self._words = [w for w, _ in sorted(vocab.items(), key=lambda item: item[1]) if w.isalpha()] or ["a"]
        count = max(tokens - 2, 1)
        return " ".join(self._words[i % len(self._words)] for i in range(count))

    def tokens(self, texts: np.ndarray) -> int:
        """Token positions a batch of these texts runs: rows times the longest (the batch is padded to it)."""
        flat = [_text(t) for t in texts.reshape(len(texts), -1)[:, 0]]
        if not flat:
            return 0
        longest = max(len(e.ids) for e in self.tokenizer.encode_batch(flat))
        return len(flat) * longest


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
