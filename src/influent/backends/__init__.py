"""Where the work runs: in-process ("local", the default) or over a Ray cluster ("ray").

A backend gives the call its executor (`data.executor`): None for "local" (in-process code, today's fast
paths), a `backends.ray.RayExecutor` for "ray" (shard kernels and refits as Ray tasks). The method's code is
the same on both, so every backend gives the same scores (to float tolerance). `BACKENDS` names them; each
entry's module (imported only when used) has ``executor(split, backend_options)``; `executor_for` is the
one dispatch.
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

    def executor(self, split: Any, options: dict[str, Any] | None = None, chunk_size: int | None = None) -> Any:
        """The executor of one call over `split` (None: in this process); `chunk_size`: the call's chunk of rows
        (a distributed executor cuts its shards at multiples of it, so every chunk holds the rows it holds in
        this process and per-sample results are the same to the bit)."""
        return self.load().executor(split, options, chunk_size)


BACKENDS: Registry[BackendSpec] = Registry("backend")
BACKENDS.add(BackendSpec("local", summary="in this process (the default)", module=f"{__name__}.local"))
BACKENDS.add(BackendSpec("ray", summary="shard kernels and refits as Ray tasks (--ray-address / RAY_ADDRESS, else a "
                                        "local Ray; needs pip install \"influent[ray]\")", module=f"{__name__}.ray"))


def check_backend(name: Any) -> str:
    """`name` if it is a known backend, else the registry's one-line `InputError` with the choices."""
    return BACKENDS.check(name)


def executor_for(backend: str, split: Any, options: dict[str, Any] | None = None,
                 chunk_size: int | None = None) -> Any:
    """The executor of a call with `backend` over the training split `split` (None for "local"; `chunk_size`:
    the call's chunk of rows, `BackendSpec.executor`)."""
    return BACKENDS[check_backend(backend)].executor(split, options, chunk_size)


__all__ = ["BACKENDS", "BackendSpec", "check_backend", "executor_for"]
