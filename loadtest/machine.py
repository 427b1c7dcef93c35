"""The machine a benchmark ran on, in words: written into its results and on its charts, since numbers mean
little without it."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """Cores, CPU model and OS, e.g. "2 x AMD EPYC 7B13, Linux"."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or "unknown CPU")
    return f"{os.cpu_count()} x {model}, {platform.system()}"
