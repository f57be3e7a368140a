"""Class detection: do a method's pairwise scores find the training samples related to a test sample?

The protocol of [OGA] Section 5.4 (influential data identification), taken from DataInf (Kwon et al.,
"DataInf: Efficiently Estimating Data Influence in LoRA-tuned LLMs and Diffusion Models", ICLR 2024,
Section 4.3 and its public notebooks): a training sample is *related* to a test sample when it has the
test sample's class. For every test sample j, with the relatedness scores ``R[:, j]`` of all training
samples (higher = more related):

- AUC_j: ROC AUC of ``R[:, j]`` against the indicator "same class as j" (ties count one half);
- Recall_j: the fraction of j's class among the k training samples with the highest ``R[:, j]``, where
  k is by default the number of training samples of j's class (DataInf's setting: 90 samples per class,
  the top 90 inspected; at this k recall equals precision).

Both are averaged over the test samples (means and standard deviations are reported).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from ..data.validate import InputError, check_number


@dataclass(frozen=True)
class ClassDetectionReport:
    """Class-detection quality of one (n_train, n_test) relatedness matrix.

    Attributes
    ----------
    auc, auc_std : mean and standard deviation over test samples of the per-test AUC
    recall, recall_std : mean and standard deviation of the per-test recall at k
    per_test_auc, per_test_recall : (n_test,) the per-test values
    k : the cut-off (None: each test sample's class size in the training set)
    """

    auc: float
    auc_std: float
    recall: float
    recall_std: float
    per_test_auc: np.ndarray
    per_test_recall: np.ndarray
    k: int | None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_test_auc"), d.pop("per_test_recall")
        return d


def class_detection(relatedness: np.ndarray, train_y: Any, test_y: Any, k: int | None = None) -> ClassDetectionReport:
    """AUC and recall at k of "higher relatedness = same class" for every test sample.

    Parameters
    ----------
    relatedness : (n_train, n_test) scores, higher = training sample i more related to test sample j
        (e.g. `influent.attribute(..., method="outlier")` for per-class forests, or gradient inner
        products / cosines; pass ``abs(...)`` to rank by magnitude as DataInf does)
    train_y : (n_train,) training labels; test_y : (n_test,) the class of each test sample
    k : training samples inspected per test sample; None: the size of the test sample's class

    Returns
    -------
    `ClassDetectionReport`. Recall ties are broken by training position (stable order).
    """
    R = np.asarray(relatedness, dtype=np.float64)
    ytr, yte = np.asarray(train_y), np.asarray(test_y)
    if R.ndim != 2 or R.shape != (len(ytr), len(yte)):
        raise InputError(f"relatedness: expected shape ({len(ytr)}, {len(yte)}) = (n_train, n_test), got {R.shape}")
    if np.isnan(R).any():
        raise InputError("relatedness: contains NaN")
    same = ytr[:, None] == yte[None, :]  # (n_train, n_test)
    pos = same.sum(0)
    if np.any(pos == 0) or np.any(pos == len(ytr)):
        bad = yte[(pos == 0) | (pos == len(ytr))][0]
        raise InputError(f"test class {bad!r}: needs training samples of that class and of others")
    check_number(k, "k", kind=int, low=1, high=len(ytr), none=True)
    ranks = rankdata(R, axis=0)  # ascending, ties averaged
    neg = len(ytr) - pos
    auc = ((ranks * same).sum(0) - pos * (pos + 1) / 2) / (pos * neg)
    order = np.argsort(-R, axis=0, kind="stable")
    kk = pos if k is None else np.full(len(yte), int(k))
    hits = np.take_along_axis(same, order, axis=0).cumsum(0)
    recall = hits[kk - 1, np.arange(len(yte))] / pos
    return ClassDetectionReport(float(auc.mean()), float(auc.std()), float(recall.mean()), float(recall.std()),
                                auc, recall, None if k is None else int(k))
