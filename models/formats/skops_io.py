"""`skops.io`, imported without torch.

skops builds its trusted-type list at import with scikit-learn's `all_estimators()`, which walks every
scikit-learn package, the torch namespace of scikit-learn's bundled `array_api_compat` included: importing
that imports torch, about 1 s of CPU and 230 MB in a process that may serve no torch model at all (measured:
`import skops.io` 2.3 s and 391 MB against 1.1 s and 157 MB without it). The walk skips a package that fails
to import, and the type list never held anything from `sklearn.externals`, so that one package is refused
while skops.io is imported. Imported later on its own (array-API dispatch on torch tensors) it loads as usual.
"""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

SKIPPED = "sklearn.externals.array_api_compat.torch"


class _SkipTorchNamespace(MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name == SKIPPED:
            raise ModuleNotFoundError(f"{name} is skipped while skops.io builds its type list", name=name)
        return None


def _import_skops_io() -> ModuleType:
    if "skops.io" in sys.modules or "torch" in sys.modules:  # nothing to save: torch is there already
        import skops.io

        return skops.io
    finder = _SkipTorchNamespace()
    sys.meta_path.insert(0, finder)
    try:
        import skops.io
    finally:
        sys.meta_path.remove(finder)
    return skops.io


sio = _import_skops_io()
