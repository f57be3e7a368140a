"""Where the work runs: in-process ("local", the default) or over a Ray cluster ("ray").

A backend prepares the per-sample training gradients a method will read; the method itself then runs on
the driver unchanged, so every backend gives the same scores (to float tolerance). `BACKENDS` names them;
each entry's module (imported only when used) has ``prepare(model, train, options, chunk_size, store, ...)``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..data.registry import Entry, Registry


@dataclass(frozen=True)
class BackendSpec(Entry):
    """A registered backend: ``module`` is the module with its ``prepare`` (imported by `load`)."""

    module: str = ""

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


BACKENDS: Registry[BackendSpec] = Registry("backend")
BACKENDS.add(BackendSpec("local", summary="in this process (the default)", module=f"{__name__}.local"))
BACKENDS.add(BackendSpec("ray", summary="per-sample gradients on a Ray cluster (RAY_ADDRESS, else a local Ray; "
                                        "needs pip install \"influent[ray]\")", module=f"{__name__}.ray"))


def check_backend(name: Any) -> str:
    """`name` if it is a known backend, else the registry's one-line `InputError` with the choices."""
    return BACKENDS.check(name)


__all__ = ["BACKENDS", "BackendSpec", "check_backend"]
