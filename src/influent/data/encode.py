"""`OneHot`: one-hot encoding of a table's categorical (non-numeric) feature columns, fitted on the training
table and applied unchanged to validation/test tables (the command line's default; the library's `from_frame`
takes numeric features only and names this class in its error)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .validate import InputError

MAX_LEVELS = 100  # more distinct values than this: an identifier or free text, not a category


def is_categorical(column: pd.Series) -> bool:
    """Whether a feature column needs encoding: neither numeric nor boolean (strings, pandas categories)."""
    return not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column))


@dataclass
class OneHot:
    """The encoding of a table's feature columns.

    Attributes
    ----------
    features : the feature columns as given, in order
    levels : categorical column -> its levels (the training table's distinct values, sorted as strings);
        column ``c`` becomes one 0/1 column ``c=level`` per level, in place of ``c``
    unseen : after `transform`: categorical column -> how many rows held a level the training table lacks
        (encoded as all zeros)
    """

    features: list[str]
    levels: dict[str, list[str]] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict, compare=False)

    @classmethod
    def fit(cls, df: pd.DataFrame, features: Sequence[str], name: str = "train") -> "OneHot":
        """The encoding of `features` of the training table `df`: every non-numeric column is categorical."""
        levels: dict[str, list[str]] = {}
        for c in features:
            col = df[c]
            if not is_categorical(col):
                continue
            _check_missing(col, c, name)
            values = sorted(set(col.astype(str)))
            if len(values) > MAX_LEVELS:
                raise InputError(f"{name}: column {c!r} has {len(values):,} distinct text values, too many to one-hot "
                                 f"encode (at most {MAX_LEVELS}); drop it (--drop {c}) or encode it yourself")
            levels[c] = values
        return cls(list(features), levels)

    @property
    def columns(self) -> list[str]:
        """The encoded feature names, in order."""
        out: list[str] = []
        for c in self.features:
            out += [f"{c}={v}" for v in self.levels[c]] if c in self.levels else [c]
        return out

    def transform(self, df: pd.DataFrame, name: str = "data") -> pd.DataFrame:
        """`df` with each categorical column replaced by its 0/1 columns (a new frame; `df` is not changed).
        A level the training table lacks gives an all-zero row; `unseen` counts them per column."""
        self.unseen = {}
        parts: dict[str, Any] = {}
        for c in self.features:
            if c not in self.levels:
                parts[c] = df[c]
                continue
            _check_missing(df[c], c, name)
            values = df[c].astype(str).to_numpy()
            for v in self.levels[c]:
                parts[f"{c}={v}"] = (values == v).astype(np.float32)
            new = int((~np.isin(values, self.levels[c])).sum())
            if new:
                self.unseen[c] = new
        rest = [c for c in df.columns if c not in self.features]
        return pd.concat([pd.DataFrame(parts, index=df.index), df[rest]], axis=1)

    def note(self) -> str:
        """One line naming the encoded columns."""
        cols = ", ".join(f"{c} ({len(v)} levels)" for c, v in self.levels.items())
        return f"one-hot encoded {len(self.levels)} text column(s): {cols}"

    def unseen_note(self, name: str) -> str | None:
        """One line counting the rows of `name` whose level the training table lacks, or None."""
        if not self.unseen:
            return None
        what = ", ".join(f"{k:,} in {c!r}" for c, k in self.unseen.items())
        return f"{name}: levels not seen in train ({what}) are encoded as all zeros"

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "levels": {c: list(v) for c, v in self.levels.items()}}


def _check_missing(col: pd.Series, c: str, name: str) -> None:
    if col.isna().any():
        raise InputError(f"{name}: missing values in text column {c!r} at row {int(col.isna().to_numpy().argmax())}; "
                         "fill them (e.g. with 'missing') or drop those rows")
