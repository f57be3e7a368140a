"""Data layer: the `Split` type, loaders and the shared input checks."""

from .io import from_arrays, from_file, from_frame, from_torch, read_table
from .split import Split
from .validate import InputError

__all__ = ["Split", "InputError", "from_arrays", "from_file", "from_frame", "from_torch", "read_table"]
