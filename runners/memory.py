"""Memory an unloaded model freed goes back to the system, not only to the allocator.

glibc's malloc keeps freed heap pages in the process for later allocations: after unloading a heavy model a
worker kept 145 to 239 MB of the model's memory resident, and 2 to 42 MB after `malloc_trim(0)` (docs/benchmarks.md,
"Heavy models"). A C library without `malloc_trim` (musl, macOS) has nothing to call; its memory stays as it is.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_LIBC = ctypes.CDLL(None)  # the symbols the process already has: its C library's among them
_MALLOC_TRIM: Callable[[int], int] | None = getattr(_LIBC, "malloc_trim", None)


def trim_heap() -> bool:
    """Return the heap's free pages to the system (glibc's `malloc_trim(0)`); whether the C library could.

    It walks every arena, so it can take milliseconds on a large heap: call it off the event loop."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
