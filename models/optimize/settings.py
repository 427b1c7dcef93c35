"""What the operator allows `rtserve optimize` to take, and the agreement an optimized version must keep."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OptimizeSettings(BaseSettings):
    """Read when the service starts; a request may ask for a stricter or looser bound, within [0, 1]."""

    model_config = SettingsConfigDict(env_prefix="RTSERVE_OPTIMIZE_")

    min_agreement: float = Field(0.99, ge=0.0, le=1.0)
    """Least agreement with the source on the sample (top-1 for classifiers, the share of rows within `tolerance`
    otherwise) an optimized version needs; under it the version is refused with the numbers (`--min-agreement`)."""
    tolerance: float = Field(0.01, ge=0.0)
    """How far a value of a regressor's or a tensor model's output may move and still agree:
    |optimized - source| <= tolerance * (1 + |source|) (`--tolerance`)."""
    sample_rows: int = Field(64, ge=1, le=4096)
    """Rows of the generated sample when the request brings none (seeded: the same rows on every run)."""
    timeout_s: float = Field(900.0, gt=0)
    """Longest the conversion and its measurement may take in their throw-away subprocess; an AOTInductor compile
    of a small network takes 30 s to minutes on two loaded cores."""
    memory_mb: int = Field(4096, ge=256)
    """Most resident memory that subprocess may reach (it holds the source and the optimized model, and a compiler)."""
    measure_s: float = Field(6.0, gt=0)
    """Time spent timing each batch size (source and optimized side by side), after a warm-up."""
