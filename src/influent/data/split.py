"""`Split`: one set of samples (features, labels, optional group attribute, ids)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .validate import InputError, check_features, check_labels, check_same_length


@dataclass(frozen=True)
class Split:
    """A validated set of samples.

    Attributes
    ----------
    X : ndarray, shape (n, ...) float32/float64
    y : ndarray, shape (n,) labels (ints or strings; the model maps them to classes)
    group : ndarray, shape (n,) or None, a sensitive/group attribute (0/1 for fairness targets)
    ids : ndarray, shape (n,) sample ids (default 0..n-1), carried through every action
    name : str, for reports
    columns : list of feature names, or None
    """

    X: np.ndarray
    y: np.ndarray
    group: np.ndarray | None = None
    ids: np.ndarray | None = None
    name: str = "data"
    columns: list[str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        X = check_features(self.X, f"{self.name}: features")
        y = check_labels(self.y, X.shape[0], f"{self.name}: labels")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        if self.group is not None:
            object.__setattr__(self, "group", check_same_length(X.shape[0], self.group, f"{self.name}: group"))
        ids = np.arange(X.shape[0]) if self.ids is None else check_same_length(X.shape[0], self.ids, f"{self.name}: ids")
        if len(np.unique(ids)) != len(ids):
            raise InputError(f"{self.name}: ids are not unique")
        object.__setattr__(self, "ids", ids)
        if self.columns is not None and X.ndim == 2 and len(self.columns) != X.shape[1]:
            raise InputError(f"{self.name}: {len(self.columns)} column names for {X.shape[1]} features")

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.X.shape[1:]))

    def subset(self, index: Any, name: str | None = None) -> "Split":
        """Rows `index` (positions or a boolean mask) as a new Split, ids kept."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return Split(
            self.X[idx], self.y[idx],
            None if self.group is None else self.group[idx],
            self.ids[idx], name or self.name, self.columns,
        )

    def without(self, index: Any) -> "Split":
        """All rows except positions `index`."""
        mask = np.ones(len(self), dtype=bool)
        mask[np.asarray(index, dtype=np.int64)] = False
        return self.subset(mask)

    def with_labels(self, y: np.ndarray) -> "Split":
        return Split(self.X, y, self.group, self.ids, self.name, self.columns)

    def fingerprint(self) -> str:
        """A short content hash (features, labels, ids) for caches and run records."""
        h = hashlib.sha256()
        for a in (self.X, self.y.astype(str) if self.y.dtype.kind in "OUS" else self.y, self.ids):
            a = np.ascontiguousarray(a)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]

    def tensor_X(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(self.X, dtype=dtype)
