"""The in-process backend (the default): no executor, so every method runs its own in-process code on the
whole training split, with the fast paths of `grads.source.GradientSource` and refits in local processes."""

from __future__ import annotations

from typing import Any

from ..data import Split
from ..data.validate import InputError


def executor(split: Split, options: dict[str, Any] | None = None, chunk_size: int | None = None) -> None:
    """None: run in this process. The local backend takes no ``backend_options``."""
    if options:
        raise InputError(f"backend 'local' takes no backend_options; got {sorted(options)}")
    return None
