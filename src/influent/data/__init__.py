"""Data layer: the `Split` type, loaders and the shared input checks.

`InputError` is imported eagerly (numpy only); the loaders and `Split` (pandas, torch) on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .validate import InputError

_NAMES = {"Split": "split", "from_arrays": "io", "from_file": "io", "from_frame": "io", "from_torch": "io",
          "read_table": "io", "from_texts": "text", "embed_texts": "text",
          "embed_split": "text"}

__all__ = ["Split", "InputError", "from_arrays", "from_file", "from_frame", "from_torch", "read_table", "from_texts", "embed_texts", "embed_split"]


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    globals()[name] = value
    return value
