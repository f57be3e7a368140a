"""Where the work runs: in-process ("local", the default) or over a Ray cluster ("ray").

A backend prepares the per-sample training gradients a method will read; the method itself then runs on
the driver unchanged, so every backend gives the same scores (to float tolerance).
"""

from __future__ import annotations

from typing import Any

from ..data.validate import InputError

BACKENDS = ("local", "ray")


def check_backend(name: Any) -> str:
    """`name` if it is a known backend, else a one-line `InputError`."""
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose one of {list(BACKENDS)}")
    return name


__all__ = ["BACKENDS", "check_backend"]
