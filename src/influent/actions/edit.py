"""Act on scores: trim, relabel, reweight or keep a coreset of a training split.

Every action takes the training `Split` and the `Scores` computed on it (higher = more valuable; the
lowest are acted on first) and returns an `Edit`: the new split, optional sample weights for the refit,
and a log of what changed (one row per touched sample) that can be saved next to the scores::

    edit = relabel(train, scores, budget=0.05)
    model.refit(edit.split, sample_weight=edit.weights)
    edit.save("relabel.csv")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..data import Split
from ..data.validate import InputError, check_budget, check_shape, class_codes
from ..methods import METHODS
from ..data.scores import Scores
from ..data.atomic import atomic_write

LOG_COLUMNS = ["id", "action", "old_label", "new_label", "weight", "value"]


@dataclass
class Edit:
    """The result of an action.

    Attributes
    ----------
    split : the new training split (ids kept from the input)
    weights : (len(split),) sample weights for `fit(split, sample_weight=...)`, or None
    log : one row per touched sample; columns id, action, old_label, new_label, weight, value
        (trim: the removed samples; relabel: the relabelled ones; reweight: every sample;
        coreset: the kept samples). Unused cells are missing (NaN/None).
    action : "trim" | "relabel" | "reweight" | "coreset"
    """

    split: Split
    weights: np.ndarray | None
    log: pd.DataFrame
    action: str

    def save(self, path: str | Path) -> Path:
        """Write the log to .csv or .parquet, atomically."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return atomic_write(path, lambda p: self.log.to_csv(p, index=False))
        if suffix in (".parquet", ".pq"):
            table = pa.Table.from_pandas(_parquet_safe(self.log), preserve_index=False)
            return atomic_write(path, lambda p: pq.write_table(table, p))
        raise InputError(f"edit log: unsupported file type {suffix!r}; use .csv or .parquet")

    def __repr__(self) -> str:
        return f"Edit(action={self.action!r}, touched={len(self.log)}, n={len(self.split)})"


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Label columns mixing numbers and missing values become one Arrow type."""
    out = df.copy()
    for col in ("old_label", "new_label"):
        values = out[col]
        present = values.dropna()
        if len(present) and not all(isinstance(v, (int, float, np.integer, np.floating)) for v in present):
            out[col] = values.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
        else:
            out[col] = pd.to_numeric(values, errors="coerce")
    return out


def _check(train: Split, scores: Scores) -> np.ndarray:
    """The score values, after checking that they belong to `train` (same ids in the same order)."""
    if not isinstance(train, Split):
        raise InputError(f"train must be an influent Split, got {type(train).__name__}")
    if not isinstance(scores, Scores):
        raise InputError(f"scores must be influent Scores, got {type(scores).__name__}")
    if len(scores) != len(train):
        raise InputError(f"scores hold {len(scores)} samples, the split {train.name!r} has {len(train)}")
    ids, sid = np.asarray(train.ids), np.asarray(scores.ids)
    same = ids == sid if ids.dtype.kind == sid.dtype.kind else ids.astype(str) == sid.astype(str)
    if not np.all(same):
        i = int(np.argmin(same))
        raise InputError(f"scores ids do not match the split {train.name!r}: position {i} has id "
                         f"{sid[i].item()!r} in the scores and {ids[i].item()!r} in the split")
    nan = int(np.isnan(scores.values).sum())
    if nan:
        raise InputError(f"scores hold {nan} NaN value(s) of {len(scores)}; NaN does not rank a sample, so nothing "
                         "is trimmed, relabelled or reweighted on them: score again (a diverged model or a failed "
                         "solve gives NaN)")
    return scores.values


def _log(split: Split, pos: np.ndarray, action: str, values: np.ndarray, new_label: Any = None,
         weight: Any = None) -> pd.DataFrame:
    n = len(pos)
    old = split.y[pos]
    return pd.DataFrame({
        "id": split.ids[pos],
        "action": np.full(n, action, dtype=object),
        "old_label": pd.Series(old, dtype=object),
        "new_label": pd.Series([None] * n if new_label is None else np.asarray(new_label), dtype=object),
        "weight": np.full(n, np.nan) if weight is None else np.asarray(weight, dtype=np.float64),
        "value": values[pos],
    }, columns=LOG_COLUMNS)


def trim(train: Split, scores: Scores, budget: float) -> Edit:
    """Remove the `budget` lowest-valued samples (a count, or a fraction in (0, 1)).

    Returns an `Edit` whose split keeps the other rows in their order; the log lists the removed samples,
    most harmful first.
    """
    values = _check(train, scores)
    k = check_budget(budget, len(train), "trim budget")
    if k == len(train):
        raise InputError(f"trim budget: removing all {k} samples leaves nothing to train on")
    pos = scores.most_harmful(k)
    return Edit(train.without(pos), None, _log(train, pos, "trim", values), "trim")


def relabel(train: Split, scores: Scores, budget: float, model: Any = None, proba: Any = None) -> Edit:
    """Give the `budget` lowest-valued samples a new label.

    Binary labels are flipped. With more than two classes the new label is the class the fitted `model`
    finds most probable *among the other classes* (the sample's current label is the one judged wrong,
    so it is excluded; for two classes this is the flip); `model` is then required. The classes are those
    of the model (`model.classes_`) when one is given, else those present in `train`.

    proba : optional (n, C) class probabilities of the training samples to choose the new labels from,
        columns in the order of the classes. Default: those the scores' method declares
        (`MethodSpec.probabilities`: the wrong-label detector's leave-one-out probabilities, each sample's
        from the model trained without it, which do not carry the memorised wrong label), else the model's own.
    """
    values = _check(train, scores)
    k = check_budget(budget, len(train), "relabel budget")
    classes = np.unique(train.y) if model is None or getattr(model, "classes_", None) is None \
        else np.asarray(model.classes_)
    if len(classes) < 2:
        raise InputError(f"relabel: {train.name!r} has a single class; nothing to relabel to")
    pos = scores.most_harmful(k)
    old = train.y[pos]
    if len(classes) == 2:
        unknown = np.setdiff1d(np.unique(old), classes)
        if unknown.size:
            raise InputError(f"relabel: label(s) {unknown[:5].tolist()} are not among the classes {classes.tolist()}")
        new = np.where(old == classes[0], classes[1], classes[0])
    else:
        if model is None:
            raise InputError(f"relabel: {len(classes)} classes; pass the fitted model (model=...) to choose new labels")
        if not getattr(model, "fitted", True) or not hasattr(model, "predict_proba"):
            raise InputError("relabel: model must be a fitted adapter with predict_proba")
        spec = METHODS.get(scores.method)
        if proba is None and spec is not None and spec.probabilities is not None:
            proba = spec.probabilities(model, train, scores)
        if proba is None:
            proba = np.array(model.predict_proba(train.X[pos]), dtype=np.float64, copy=True)
        else:
            proba = check_shape(np.asarray(proba, dtype=np.float64), (len(train), None), "relabel: proba")
            proba = proba[pos].copy()
        if proba.shape != (k, len(classes)):
            raise InputError(f"relabel: the model gives {proba.shape[1]} class probabilities for {len(classes)} classes")
        known = np.isin(old, classes)
        proba[np.flatnonzero(known), class_codes(old[known], classes)] = -np.inf
        new = classes[proba.argmax(1)]
    y = train.y.copy()
    if y.dtype.kind in "US" and new.dtype.kind in "US":
        y = y.astype(np.result_type(y.dtype, new.dtype))
    y[pos] = new
    return Edit(train.with_labels(y), None, _log(train, pos, "relabel", values, new_label=new), "relabel")


def reweight(train: Split, scores: Scores, temperature: float = 1.0) -> Edit:
    """Sample weights w_i proportional to exp(values_i / temperature) (the softmax of [IP]), scaled to mean 1.

    Uniform scores give weight 1.0 exactly, so the refit equals the unweighted model. Influence values
    are O(1/n): a temperature on the scale of the values (e.g. their standard deviation) is what makes
    the weights differ from 1. The split is unchanged; the log lists every sample with its weight.
    """
    values = _check(train, scores)
    if not np.all(np.isfinite(values)):
        i = int(np.argmax(~np.isfinite(values)))
        raise InputError(f"reweight: score value at position {i} is {values[i]}; every sample needs a finite value")
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise InputError(f"reweight: temperature must be a positive number, got {temperature!r}") from None
    if not (np.isfinite(t) and t > 0):
        raise InputError(f"reweight: temperature must be a positive number, got {temperature!r}")
    z = values / t
    w = np.exp(z - z.max())
    w = w / w.mean()
    pos = np.arange(len(train))
    return Edit(train, w, _log(train, pos, "reweight", values, weight=w), "reweight")


def _quotas(y: np.ndarray, k: int) -> dict[Any, int]:
    """Per-class counts proportional to the class sizes, summing to k (largest remainders)."""
    classes, counts = np.unique(y, return_counts=True)
    exact = k * counts / counts.sum()
    q = np.floor(exact).astype(int)
    for j in np.argsort(-(exact - q), kind="stable")[:k - q.sum()]:
        q[j] += 1
    return dict(zip(classes.tolist(), q.tolist()))


def coreset_positions(train: Split, scores: Scores, k: int, stratify: bool = False) -> np.ndarray:
    """(k,) positions of the k highest-valued samples, most valuable first (ties keep the earlier sample;
    NaN values are never kept before a finite one). With `stratify`, the highest-valued within each class,
    in proportion to the class sizes (largest remainders), so that no class disappears from a small
    coreset. The one coreset selection: `coreset` and the Diff-In task `diffin_tasks.coreset` use it."""
    if not stratify:
        return scores.most_helpful(k)
    ranked = scores.most_helpful(len(scores))
    chosen = np.concatenate([ranked[train.y[ranked] == c][:q] for c, q in _quotas(train.y, k).items()])
    return ranked[np.isin(ranked, chosen)]


def coreset(train: Split, scores: Scores, size: float, stratify: bool = False) -> Edit:
    """Keep the `size` highest-valued samples (a count, or a fraction in (0, 1)); with `stratify`, the
    highest-valued of each class in proportion to its size (`coreset_positions`). The log lists them,
    most valuable first, and the new split holds them in their original order."""
    values = _check(train, scores)
    k = check_budget(size, len(train), "coreset size")
    if k == 0:
        raise InputError("coreset size: keeping 0 samples leaves nothing to train on")
    pos = coreset_positions(train, scores, k, stratify)
    return Edit(train.subset(np.sort(pos)), None, _log(train, pos, "coreset", values), "coreset")
