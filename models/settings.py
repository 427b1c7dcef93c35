"""What the operator allows a deploy to bring in: formats that run code, trusted types, probe limits."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TRUSTED_TYPES = [
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]
"""scikit-learn's own tree structures, which skops does not trust by default: every tree model and
gradient-boosting ensemble holds them."""


class ImportSettings(BaseSettings):
    """Read when the service starts; a deploy can narrow these, never widen them."""

    model_config = SettingsConfigDict(env_prefix="RTSERVE_IMPORT_")

    allow_code_formats: bool = False
    """Let deploys bring formats that can run code when loaded (pickle, joblib, TorchScript, torch.export,
    BentoML's sklearn and pytorch saves, a runtime named by import string). A deploy must also ask for it."""
    trusted_types: list[str] = Field(default_factory=lambda: list(DEFAULT_TRUSTED_TYPES))
    """Types a skops file may hold beyond skops' own defaults."""
    allow_deploy_trust: bool = False
    """Let a deploy name further skops types to trust (`--trust TYPE`); the version's metadata records them."""
    probe_timeout_s: float = Field(120.0, gt=0)
    """Longest the probe load (load, describe, one sample call) may take before the file is refused."""
    probe_memory_mb: int = Field(2048, ge=64)
    """Most memory the probe load may add over its process's start (a child forked from the probe's fork
    server, frameworks already imported); past it the file is refused. Watched (resident memory), not enforced
    by an address-space limit, which breaks torch and onnxruntime."""
    preload_frameworks: list[str] = []
    """Frameworks (sklearn, xgboost, lightgbm, onnx, pytorch) that every worker and the probe's fork server
    import when the service starts, so no deploy waits for their import (scikit-learn with skops and torch
    with torch.export take a second or more of CPU on first use). Each costs memory in every worker
    (scikit-learn with skops about 150 MB, torch about 300 MB). Left empty, each is imported at its first deploy."""
    probe_warm_frameworks: list[str] = Field(default_factory=lambda: ["sklearn", "xgboost", "lightgbm", "onnx",
                                                                      "pytorch"])
    """Frameworks the probe's fork server imports in the background once the service has started, so the first
    deploy of a framework waits only for its workers' own import, not for the probe's too. One process per
    replica, not per worker; it keeps them for the replica's life (all five: about 500 MB resident, 3.3 s of CPU;
    its forked probes share those pages). Empty: each is imported at its first probe."""

    @field_validator("preload_frameworks", "probe_warm_frameworks")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from models.probe import PRELOAD

        unknown = sorted(set(value) - set(PRELOAD))
        if unknown:
            raise ValueError(f"unknown frameworks {unknown}; known: {sorted(PRELOAD)}")
        return value
    max_upload_bytes: int = Field(2 * 2**30, ge=1)
    """Largest upload an admin deploy takes (`rtserve deploy`, streamed to disk, never held in memory), and the
    most a tar may hold once extracted. Separate from the inference body limit (RTSERVE_MAX_BODY_BYTES)."""
    max_upload_files: int = Field(1000, ge=1)
    """Most files (and folders) a deployed tar may hold."""
    load_wait_s: float = Field(120.0, gt=0)
    """How long an admin deploy waits for every worker to load the version before answering 504 (the load goes on)."""
