"""The rows of a request to a model of several inputs, as the batcher queues, slices and joins them.

A model of one input gets its array as it is (the hot path pays nothing); a model of several gets
`NamedRows`, which has a length (its rows) and slices by rows like an array, so the batcher treats
both alike. The arrays are in the signature's order of inputs, whatever order the request named them in.
"""

from __future__ import annotations

import numpy as np


class NamedRows:
    """Named arrays that share their first dimension (the rows)."""

    __slots__ = ("arrays", "rows")

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.rows = len(next(iter(arrays.values())))

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: slice) -> NamedRows:
        return NamedRows({name: arr[index] for name, arr in self.arrays.items()})

    def __repr__(self) -> str:
        return f"NamedRows({', '.join(f'{k}: {v.dtype}{list(v.shape)}' for k, v in self.arrays.items())})"


Rows = np.ndarray | NamedRows
"""What one request hands the batcher: an array for a model of one input, NamedRows for several."""
