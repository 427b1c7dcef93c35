"""The demo's PyTorch architectures. They are served as TorchScript, so the server needs none of these classes."""

from __future__ import annotations

import torch
from torch import nn

from demo.data import SEQ_GROUPS, SEQ_VOCAB


class DigitsCNN(nn.Module):
    """Input [N, 1, 8, 8] raw pixels 0..16; output class probabilities [N, 10]."""

    def __init__(self, channels: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels * 2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels * 2 * 16, 10))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x / 16.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


class SeqClassifier(nn.Module):
    """Input [N, L] token ids right-padded with 0; output group probabilities [N, 4].

    Padding is masked out of the mean, so a row's answer does not depend on how far it is padded.
    """

    def __init__(self, dim: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(SEQ_VOCAB + 1, dim, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, SEQ_GROUPS))

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens > 0).unsqueeze(-1).to(torch.float32)
        summed = (self.embed(tokens) * mask).sum(dim=1)
        mean = summed / mask.sum(dim=1).clamp(min=1.0)
        return self.head(mean)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(tokens), dim=-1)


ARCHITECTURES: dict[str, type[nn.Module]] = {"DigitsCNN": DigitsCNN, "SeqClassifier": SeqClassifier}
