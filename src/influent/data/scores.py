"""`Scores`: per-sample values with one orientation — higher = more valuable; the lowest go first.
Saved as Parquet (or CSV) with the method, settings, target and timing in the file's metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from .validate import InputError
from .atomic import atomic_write
from .io import read_table


META_KEY = b"influent"


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


BASE_COLUMNS = ("id", "value", "raw", "stderr", "rank")  # the columns every scores file has (raw where it differs)


@dataclass
class Scores:
    """Per-sample scores of one method on one training split.

    Attributes
    ----------
    values : (n,) higher = more valuable to the target; `most_harmful` returns the lowest
    method : method name, e.g. "if"
    ids : (n,) sample ids of the training split
    raw : (n,) the method's own statistic in the paper's orientation (or None when equal to values)
    settings : every option of the run (solver, damping, ...)
    target : description of the target
    timing : seconds per phase
    columns : more per-sample columns saved beside the values, name -> (n,) array (the command line's runs:
        ``label``, the given label; ``predicted``, the fitted model's most probable class; ``p_predicted``, its
        probability; ``p_label``, the fitted model's probability of the given label), or None
    stderr : (n,) standard error of `values` across the members of a model ensemble (sample standard
        deviation / sqrt(members)), or None for one model; saved as the column "stderr"
    """

    values: np.ndarray
    method: str
    ids: np.ndarray
    raw: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] | None = None
    timing: dict[str, float] = field(default_factory=dict)
    columns: dict[str, np.ndarray] | None = None
    stderr: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        self.ids = np.asarray(self.ids)
        if self.values.ndim != 1 or self.values.shape != self.ids.shape:
            raise InputError(f"scores: values {self.values.shape} and ids {self.ids.shape} must be 1-D of equal length")
        if self.raw is not None:
            self.raw = np.asarray(self.raw, dtype=np.float64)
        if self.columns is not None:
            self.columns = {str(k): np.asarray(v) for k, v in self.columns.items()}
            bad = [k for k, v in self.columns.items() if v.shape != self.values.shape or k in BASE_COLUMNS]
            if bad:
                raise InputError(f"scores: column(s) {bad} must be new names with one value per sample")
        if self.stderr is not None:
            self.stderr = np.asarray(self.stderr, dtype=np.float64)
            if self.stderr.shape != self.values.shape:
                raise InputError(f"scores: stderr {self.stderr.shape} and values {self.values.shape} must have equal length")

    def __len__(self) -> int:
        return len(self.values)

    def order(self) -> np.ndarray:
        """Positions from most harmful (lowest value) to most valuable; NaN values last; stable."""
        v = np.where(np.isnan(self.values), np.inf, self.values)
        return np.argsort(v, kind="stable")

    def most_harmful(self, k: int) -> np.ndarray:
        """Positions of the `k` lowest-valued samples, most harmful first."""
        return self.order()[:k]

    def most_helpful(self, k: int) -> np.ndarray:
        """Positions of the `k` highest-valued samples, most valuable first."""
        v = np.where(np.isnan(self.values), -np.inf, self.values)
        return np.argsort(-v, kind="stable")[:k]

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame({"id": self.ids, "value": self.values})
        if self.raw is not None:
            df["raw"] = self.raw
        if self.stderr is not None:
            df["stderr"] = self.stderr
        df["rank"] = np.empty(len(self), dtype=np.int64)
        df.loc[self.order(), "rank"] = np.arange(len(self))
        for k, v in (self.columns or {}).items():
            df[k] = v
        return df

    def meta(self) -> dict[str, Any]:
        return jsonable({"method": self.method, "settings": self.settings, "target": self.target,
                          "timing": self.timing, "format": 1})

    def save(self, path: str | Path) -> Path:
        """Write to .parquet (metadata in the schema) or .csv (metadata in `<path>.json`), atomically."""
        path = Path(path)
        df = self.to_frame()
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            table = pa.Table.from_pandas(df, preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                  META_KEY: json.dumps(self.meta()).encode()})
            return atomic_write(path, lambda p: pq.write_table(table, p))
        if suffix == ".csv":
            atomic_write(path.with_name(path.name + ".json"), lambda p: p.write_text(json.dumps(self.meta(), indent=1)))
            return atomic_write(path, lambda p: df.to_csv(p, index=False))
        raise InputError(f"scores: unsupported file type {suffix!r}; use .parquet or .csv")

    @classmethod
    def load(cls, path: str | Path) -> "Scores":
        path = Path(path)
        advice = "is it truncated? run influent score again"
        df = read_table(path, "scores", kinds=("parquet", "csv"), advice=advice)
        if path.suffix.lower() in (".parquet", ".pq"):
            raw_meta = (pq.read_schema(path).metadata or {}).get(META_KEY)
        else:
            side = path.with_name(path.name + ".json")
            raw_meta = side.read_text() if side.exists() else None
        try:
            meta = json.loads(raw_meta) if raw_meta else {}
        except ValueError as exc:
            raise InputError(f"scores: cannot read {path}: {str(exc).splitlines()[0]}; {advice}") from None
        for col in ("id", "value"):
            if col not in df.columns:
                raise InputError(f"scores: {path} has no {col!r} column; is it a scores file?")
        extra = {c: df[c].to_numpy() for c in df.columns if c not in BASE_COLUMNS}
        return cls(df["value"].to_numpy(), meta.get("method", "unknown"), df["id"].to_numpy(),
                   df["raw"].to_numpy() if "raw" in df.columns else None, meta.get("settings", {}),
                   meta.get("target"), meta.get("timing", {}), extra or None,
                   df["stderr"].to_numpy() if "stderr" in df.columns else None)

    def __repr__(self) -> str:
        return f"Scores(method={self.method!r}, n={len(self)}, settings={self.settings})"
