"""The in-process tier: an LRU bounded by entries and bytes, with its keys grouped per model version.

The groups let a removed or reloaded version's entries be freed at once rather than waiting
to be evicted. Entries are private read-only copies, so a cached answer never pins a batch
and no caller can change what the next one reads.
"""

from __future__ import annotations

import sys
from collections import OrderedDict

import numpy as np

from gateway.cache.keys import in_version, version_group
from gateway.cache.wire import Outputs

ENTRY_OVERHEAD = 256  # dict slot, tuple, array headers: rough, so tiny entries still count


def frozen_copy(outputs: Outputs) -> tuple[Outputs, int] | None:
    """Private read-only copies (a batch slice would pin the whole batch) and their size; None if not cacheable
    (an object array of anything but strings)."""
    frozen: Outputs = {}
    nbytes = ENTRY_OVERHEAD
    for name, arr in outputs.items():
        strings = arr.dtype.hasobject
        if strings and not all(type(item) is str for item in arr.flat):
            return None
        copy = np.array(arr, order="C")  # strings are immutable: copying the references is a private copy
        copy.flags.writeable = False
        frozen[name] = copy
        nbytes += _nbytes(copy) if strings else copy.nbytes
    return frozen, nbytes


def size_of(outputs: Outputs) -> int:
    """What `frozen_copy` would count for arrays that are already private and read-only."""
    return ENTRY_OVERHEAD + sum(_nbytes(a) for a in outputs.values())


def _nbytes(arr: np.ndarray) -> int:
    """An array's memory, the strings of an object array included."""
    if arr.dtype.hasobject:
        return arr.nbytes + sum(sys.getsizeof(item) for item in arr.flat)
    return arr.nbytes


class ByteLru:
    """Least recently used entries go first once either bound is passed; no locks (one event loop)."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries: OrderedDict[bytes, tuple[Outputs, int]] = OrderedDict()
        self._groups: dict[bytes, set[bytes]] = {}  # b"model:token:" -> its keys, for drop_model_version

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Outputs | None:
        """The entry, marked most recently used; None when absent."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, outputs: Outputs, nbytes: int) -> int:
        """Keep `outputs` (counted as `nbytes` plus the key); returns how many entries were evicted for it."""
        nbytes += len(key)
        if nbytes > self.max_bytes:
            return 0
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        else:
            self._groups.setdefault(version_group(key), set()).add(key)
        self._entries[key] = (outputs, nbytes)
        self.nbytes += nbytes
        evicted = 0
        while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
            old_key, (_, old_bytes) = self._entries.popitem(last=False)
            self.nbytes -= old_bytes
            group = version_group(old_key)
            keys = self._groups[group]
            keys.discard(old_key)
            if not keys:
                del self._groups[group]
            evicted += 1
        return evicted

    def drop_model_version(self, model: str, version: str) -> int:
        """Free the entries of every generation of `version` (or of one exact token); returns how many."""
        removed = 0
        for group in [g for g in self._groups if in_version(g, model, version)]:
            for key in self._groups.pop(group):
                _, nbytes = self._entries.pop(key)
                self.nbytes -= nbytes
                removed += 1
        return removed
