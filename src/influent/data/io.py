"""Build a `Split` from arrays, pandas/Arrow tables, CSV/Parquet/NPZ files or a torch Dataset."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .split import Split
from .validate import InputError, check_columns, check_unique_columns


def from_arrays(X: Any, y: Any, group: Any = None, ids: Any = None, name: str = "data") -> Split:
    """A Split from array-likes."""
    return Split(np.asarray(X), np.asarray(y), None if group is None else np.asarray(group),
                 None if ids is None else np.asarray(ids), name)


def from_frame(df: Any, label: str, group: str | None = None, id_column: str | None = None,
               features: Sequence[str] | None = None, name: str = "data") -> Split:
    """A Split from a pandas DataFrame or a pyarrow Table; non-numeric feature columns are an error."""
    if not isinstance(df, pd.DataFrame):
        try:
            df = df.to_pandas()
        except AttributeError:
            raise InputError(f"{name}: expected a pandas DataFrame or an Arrow table, got {type(df).__name__}") from None
    columns = [str(c) for c in df.columns]
    check_unique_columns(columns, name)
    df = df.set_axis(columns, axis=1)  # a renamed copy: the caller's frame keeps its own column labels
    wanted = [label] + ([group] if group else []) + ([id_column] if id_column else []) + list(features or [])
    check_columns(columns, wanted, name)
    reserved = {label, group, id_column}
    feats = list(features) if features else [c for c in columns if c not in reserved]
    if not feats:
        raise InputError(f"{name}: no feature columns left after removing label/group/id columns")
    if len(df) == 0:
        raise InputError(f"{name}: the set is empty (0 rows)")
    non_numeric = [c for c in feats if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))]
    if non_numeric:
        shown = non_numeric if len(non_numeric) <= 20 else non_numeric[:20] + [f"... {len(non_numeric) - 20} more"]
        raise InputError(f"{name}: {len(non_numeric)} non-numeric feature column(s) {shown}; encode them with "
                         "influent.data.encode.OneHot (fit on train, transform every split; the command line does "
                         "this itself) or drop them")
    if df[label].isna().any():
        raise InputError(f"{name}: label column {label!r} has missing values at row {int(df[label].isna().to_numpy().argmax())}")
    nan_cols = [c for c in feats if df[c].isna().any()]
    if nan_cols:
        raise InputError(f"{name}: missing values (NaN) in column(s) {nan_cols[:5]}; impute or drop those rows")
    X = df[feats].to_numpy(dtype=np.float32, copy=True)  # pandas may hand out a read-only view
    y = df[label].to_numpy()
    return Split(X, y, df[group].to_numpy() if group else None,
                 df[id_column].to_numpy() if id_column else None, name, feats)


SUFFIXES = {"csv": (".csv", ".txt", ".tsv"), "parquet": (".parquet", ".pq"), "npz": (".npz",)}
TITLES = {"csv": "CSV", "parquet": "Parquet", "npz": "NPZ"}


def _either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def read_table(path: str | Path, name: str | None = None, *, kinds: Sequence[str] = ("csv", "parquet", "npz"),
               advice: str = "") -> pd.DataFrame | dict[str, np.ndarray]:
    """Read a CSV/TSV or Parquet file as a DataFrame, or an NPZ file as a dict of arrays — the one table
    reader of the package (data files, the pool of `influent select`, scores files).

    Parameters
    ----------
    path : the file; its suffix picks the format (.csv/.txt, .tsv tab-separated, .parquet/.pq, .npz)
    name : what the file is, for the messages (default: the file name)
    kinds : the formats this caller accepts, among "csv", "parquet", "npz"
    advice : appended to the "cannot read" message (e.g. what to do about a truncated file)

    Column names are strings. Every failure is a one-line `InputError`: "<name>: file not found: ...",
    "... is a directory ...", "unsupported file type '.x'; use .csv, .parquet or .npz", "cannot read
    <path>: <reason>".
    """
    p = Path(path)
    name = name or p.name
    if not p.exists():
        raise InputError(f"{name}: file not found: {p}")
    if p.is_dir():
        raise InputError(f"{name}: {p} is a directory, expected a {_either([TITLES[k] for k in kinds])} file")
    suffix = p.suffix.lower()
    kind = next((k for k in kinds if suffix in SUFFIXES[k]), None)
    if kind is None:
        raise InputError(f"{name}: unsupported file type {suffix!r}; use {_either([f'.{k}' for k in kinds])}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    sep = "\t" if suffix == ".tsv" else ","
    readers = [lambda: list(pd.read_csv(p, sep=sep, header=None, nrows=1, dtype=str).iloc[0]) if kind == "csv"
               else pq.read_schema(p).names,  # the header as written: pandas would rename a repeated "a" to "a.1"
               lambda: pd.read_csv(p, sep=sep) if kind == "csv" else pd.read_parquet(p)]
    for step, read in enumerate(readers):
        try:
            if kind == "npz":
                with np.load(p, allow_pickle=False) as z:
                    return dict(z)
            got = read()
        except (pd.errors.ParserError, pd.errors.EmptyDataError, pa.ArrowException, zipfile.BadZipFile, OSError,
                ValueError, EOFError) as exc:
            first = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{name}: cannot read {p}: {first}" + (f"; {advice}" if advice else "")) from None
        if step == 0:
            check_unique_columns(got, name)
    df = got
    df.columns = [str(c) for c in df.columns]
    return df


def from_file(path: str | Path, label: str = "y", group: str | None = None, id_column: str | None = None,
              features: Sequence[str] | None = None, name: str | None = None) -> Split:
    """A Split from a CSV/Parquet table (label/group by column name) or an NPZ file (arrays `X`, `label`, ...)."""
    p = Path(path)
    name = name or p.stem
    table = read_table(p, name)
    if isinstance(table, dict):
        check_columns(list(table), [k for k in ("X", label, group, id_column) if k], name)
        return Split(table["X"], table[label], table.get(group) if group else None,
                     table.get(id_column) if id_column else None, name)
    return from_frame(table, label, group, id_column, features, name)


def from_torch(dataset: Any, name: str = "data") -> Split:
    """A Split from a map-style torch Dataset yielding (x, y) pairs."""
    xs, ys = [], []
    for i in range(len(dataset)):
        x, y = dataset[i][:2]
        xs.append(np.asarray(x))
        ys.append(np.asarray(y).item())
    if not xs:
        raise InputError(f"{name}: the dataset is empty")
    return Split(np.stack(xs), np.asarray(ys), name=name)
