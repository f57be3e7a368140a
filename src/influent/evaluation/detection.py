"""Mislabel detection: how well do scores rank the noisy samples first?

``detection(scores, is_noisy)`` treats the lowest values as the most suspicious (the library's sign
convention) and returns the ROC AUC of that ranking and the precision among the k lowest.

The module itself is callable, so ``from influent.evaluation import detection; detection(s, noisy)``
works as well as ``from influent.evaluation.detection import detection``.
"""

from __future__ import annotations

import sys
import types
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

from ..data.validate import InputError, check_budget, check_same_length, check_shape
from ..data.scores import Scores


@dataclass(frozen=True)
class Detection:
    """Detection quality of one ranking.

    Attributes
    ----------
    auc : ROC AUC of "low value = noisy" (0.5 = chance, 1 = every noisy sample ranks first)
    precision_at_k : fraction of noisy samples among the k lowest-valued
    recall_at_k : fraction of all noisy samples that are among the k lowest-valued
    average_precision : area under the precision-recall curve of the same ranking
    k : the cut-off (default: the number of noisy samples, where precision@k = recall@k)
    n_noisy : number of noisy samples
    """

    auc: float
    precision_at_k: float
    recall_at_k: float
    average_precision: float
    k: int
    n_noisy: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def detection(scores: Scores | np.ndarray, is_noisy: Any, k: int | float | None = None) -> Detection:
    """AUC and precision@k of the ranking "lowest value first" against the noisy mask.

    Parameters
    ----------
    scores : a `Scores` (its `values`) or an array of values, (n,); NaN values rank last (least suspicious)
    is_noisy : (n,) boolean mask (or 0/1) of the samples whose label was corrupted
    k : samples inspected: a count, or a fraction of n in (0, 1); default the number of noisy samples

    Returns
    -------
    `Detection`. For precision@k ties are broken by position (stable order, as `Scores.order`); the AUC
    counts a tie between a noisy and a clean sample as one half.
    """
    values = scores.values if isinstance(scores, Scores) else np.asarray(scores, dtype=np.float64)
    check_shape(values, (None,), "scores (one value per sample)")
    noisy = check_same_length(len(values), is_noisy, "is_noisy")
    if noisy.dtype != bool:
        if not np.all(np.isin(noisy, (0, 1))):
            raise InputError("is_noisy: expected a boolean mask (or 0/1 values)")
        noisy = noisy.astype(bool)
    n_noisy = int(noisy.sum())
    if n_noisy == 0 or n_noisy == len(noisy):
        raise InputError(f"is_noisy: needs both noisy and clean samples, got {n_noisy} noisy of {len(noisy)}")
    kk = n_noisy if k is None else check_budget(k, len(values), "k")
    if kk == 0:
        raise InputError("k: must be at least 1")
    finite = np.where(np.isnan(values), np.inf, values)
    order = np.argsort(finite, kind="stable")
    suspicion = -rankdata(finite)  # ranks are finite even for +-inf; ties share their average rank
    hits = int(noisy[order[:kk]].sum())
    return Detection(auc=float(roc_auc_score(noisy, suspicion)), precision_at_k=hits / kk, recall_at_k=hits / n_noisy,
                     average_precision=float(average_precision_score(noisy, suspicion)), k=kk, n_noisy=n_noisy)


class _CallableModule(types.ModuleType):
    def __call__(self, scores: Scores | np.ndarray, is_noisy: Any, k: int | float | None = None) -> Detection:
        return detection(scores, is_noisy, k)


sys.modules[__name__].__class__ = _CallableModule
