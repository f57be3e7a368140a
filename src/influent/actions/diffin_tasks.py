"""The three tasks of Diff-In [DIFF] as functions: data cleaning, data deletion, coreset selection.

Each takes a fitted adapter (fitted with ``recorder=TrainingRecorder()`` so that Diff-In has checkpoints)
and its training split; scores are computed with `influent.score` unless given (``scores=``), so the same
functions also run on other methods' scores (``method="tracin"``, ``"ip"``, ...) for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..api.verbs import score
from ..data import Split
from ..data.validate import InputError, check_budget
from ..models.base import ModelAdapter
from ..data.scores import Scores
from ..methods.registry import M
from ..targets import Target
from .edit import coreset_positions


@dataclass
class TaskResult:
    """What `clean` and `coreset` return.

    Attributes
    ----------
    kept : (k,) sorted positions of the samples kept
    removed : positions removed, in the order they were chosen (most suspicious / least valuable first)
    split : the kept samples (ids carried through)
    model : a fresh model refit on `split` from the same initial weights and schedule (None if refit=False)
    scores : the scores the choice was made from
    """

    kept: np.ndarray
    removed: np.ndarray
    split: Split
    model: ModelAdapter | None
    scores: Scores


def _scores(model: ModelAdapter, train: Split, target: Target | Split | None, method: str,
            scores: Scores | None, options: dict[str, Any]) -> Scores:
    if scores is None:
        return score(model, train, target=target, method=method, **options)
    if not isinstance(scores, Scores):
        raise InputError(f"scores must be an influent Scores, got {type(scores).__name__}")
    if len(scores) != len(train):
        raise InputError(f"scores hold {len(scores)} values for {len(train)} training samples")
    if options:
        raise InputError(f"options {sorted(options)} are not used when scores are given")
    return scores


def _result(model: ModelAdapter, train: Split, removed: np.ndarray, scores: Scores, refit: bool) -> TaskResult:
    mask = np.ones(len(train), dtype=bool)
    mask[removed] = False
    kept = np.flatnonzero(mask)
    split = train.subset(kept)
    return TaskResult(kept, removed, split, model.refit(split) if refit else None, scores)


def clean(model: ModelAdapter, train: Split, budget: float, *, method: str = M.SELF_DIFFIN,
          scores: Scores | None = None, refit: bool = True, **options: Any) -> TaskResult:
    """Data cleaning: remove the `budget` most suspicious samples by self-influence and refit.

    Parameters
    ----------
    budget : a count, or a fraction in (0, 1) of the training set
    method : a self-influence method (default "self-diffin": lowest values = highest self-influence)
    scores : precomputed scores of `train` (then `method` and options are not used)
    refit : retrain on the kept samples (same initial weights and training schedule)
    **options : Diff-In options (batch_size, n_batches, eps, hvp, checkpoint_subset, first_order, ...)
    """
    k = check_budget(budget, len(train))
    s = _scores(model, train, None, method, scores, options)
    return _result(model, train, s.most_harmful(k), s, refit)


def coreset(model: ModelAdapter, train: Split, target: Target | Split, size: float, *, method: str = M.DIFFIN,
            scores: Scores | None = None, refit: bool = True, stratify: bool = False, **options: Any) -> TaskResult:
    """Coreset selection: keep the `size` highest-valued samples for `target` (a count or a fraction).

    With `stratify`, keep the highest-valued within each class, in proportion to the class sizes (largest
    remainders), so that no class disappears from a small coreset. Returns the kept positions and, with
    `refit`, a model trained on them only (same initial weights and training schedule). Ties keep the
    earlier sample; NaN values are never kept before a finite one. The selection is the one of the
    `influent coreset` action (`actions.edit.coreset_positions`).
    """
    k = check_budget(size, len(train), "size")
    if k == 0:
        raise InputError("size: a coreset needs at least one sample")
    s = _scores(model, train, target, method, scores, options)
    keep = coreset_positions(train, s, k, stratify)
    removed = s.order()
    removed = removed[~np.isin(removed, keep)]
    return _result(model, train, removed, s, refit)


def _position_sets(remove: Any, n: int) -> tuple[list[np.ndarray], bool]:
    """(sets of positions, whether a single set was given)."""
    if isinstance(remove, np.ndarray) and remove.ndim == 1 or (
            isinstance(remove, Sequence) and all(np.ndim(r) == 0 for r in remove)):
        sets, single = [np.asarray(remove)], True
    else:
        sets, single = [np.asarray(r) for r in remove], False
    out = []
    for j, r in enumerate(sets):
        name = "remove" if single else f"remove[{j}]"
        if r.dtype == bool:
            if r.shape != (n,):
                raise InputError(f"{name}: a boolean mask needs {n} entries, got shape {r.shape}")
            r = np.flatnonzero(r)
        if r.size and not np.issubdtype(r.dtype, np.integer):
            raise InputError(f"{name}: positions must be integers, got dtype {r.dtype}")
        r = r.astype(np.int64).reshape(-1)
        if r.size and (r.min() < 0 or r.max() >= n):
            raise InputError(f"{name}: positions must lie in [0, {n}), got {int(r.min())}..{int(r.max())}")
        if len(np.unique(r)) != len(r):
            raise InputError(f"{name}: a position is listed twice")
        out.append(r)
    return out, single


def delete(model: ModelAdapter, train: Split, target: Target | Split, remove: Any, *, method: str = M.DIFFIN,
           scores: Scores | None = None, center: bool = True, **options: Any) -> float | np.ndarray:
    """Data deletion: the predicted change of the target cost when the samples `remove` are deleted,
    without retraining, from the per-sample values (each the estimated rise of the target when that
    sample alone is removed). Positive: the target cost would rise (the samples help).

    With `center` (default) the prediction for a set S of k samples is
    ``(n - 1) / (n - k) * sum_{z in S} (values_z - mean(values))``: the training objective is a mean, so
    deleting S perturbs it by ``sum_{z in S} (mean loss - l_z) / (n - k)``, i.e. (n-1)/(n-k) times the
    single-sample perturbations, whose effects sum to zero over all samples (the -G term that Diff-In and
    TracIn leave out is the same for every sample; it cancels in rankings but not in sums over sets).
    With ``center=False`` it is the plain sum of the values.

    `remove` is one set (positions or a boolean mask) -> a float, or a list of sets -> (k,) array.
    With Diff-In, ``first_order=True`` gives predictions in the target's own units on short training;
    the default values are only proportional to the rise (see docs/diffin.md).
    """
    sets, single = _position_sets(remove, len(train))
    s = _scores(model, train, target, method, scores, options)
    n = len(train)
    if np.isnan(s.values).any():
        raise InputError("scores hold NaN values; deletion needs a value for every sample")
    v = s.values - s.values.mean() if center else s.values
    pred = []
    for r in sets:
        if center and len(r) >= n:
            raise InputError(f"cannot predict the deletion of all {n} training samples")
        scale = (n - 1) / (n - len(r)) if center else 1.0
        pred.append(scale * float(np.sum(v[r])))
    pred = np.array(pred)
    return float(pred[0]) if single else pred
