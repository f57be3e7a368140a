"""The in-process backend: nothing to prepare, the method computes its gradients chunk by chunk itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import Split
from ..models.base import ModelAdapter


def prepare(model: ModelAdapter, train: Split, options: dict[str, Any], chunk_size: int,
            store: str | Path | None, **_: Any) -> tuple[str | Path | None, dict[str, Any]]:
    """(the gradient store to use, backend settings): the local backend keeps the caller's store."""
    return store, {"backend": "local"}
