"""`find_label_issues`: one table to act on — for every training sample its given label, the label the rest
of the data suggests, the out-of-sample probability of the given label, a score, and whether it is counted
as a wrong label.

The probabilities are the leave-one-out probabilities of the `mislabel` detector (one Newton step per sample,
no refit; `influent.methods.mislabel.leave_one_out`). The number of wrong labels is confident learning's
count (Northcutt, Jiang, Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021,
sec. 3.1): sample i is counted in the confident joint at (given y_i, class j) for the most probable class j
whose probability reaches its class threshold t_j (the mean probability of class j over samples labelled j);
the off-diagonal total of that joint is the estimated number of wrong labels, and the that many lowest
scores are flagged (`is_issue`), as cleanlab's ``prune_by_noise_rate`` ranks within the estimated count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data import Split
from ..data.validate import InputError, check_fitted
from ..models.base import ModelAdapter

COLUMNS = ("id", "label", "suggested_label", "p_label", "score", "is_issue", "rank")


def confident_count(proba: np.ndarray, labels: np.ndarray) -> tuple[int, np.ndarray]:
    """Confident learning's estimated number of wrong labels (Northcutt et al. 2021, sec. 3.1).

    proba : (n, C) out-of-sample class probabilities; labels : (n,) column index of each given label.
    Returns the count and (n,) the confident class of each sample (-1 where no class reaches its threshold).
    """
    from ..methods.mislabel import class_thresholds

    P = np.asarray(proba, dtype=np.float64)
    t = class_thresholds(P, labels)
    above = P >= t[None, :] - 1e-12
    masked = np.where(above, P, -np.inf)
    confident = np.where(above.any(1), masked.argmax(1), -1)
    count = int(((confident >= 0) & (confident != labels)).sum())
    return count, confident


def issues_frame(ids: np.ndarray, classes: np.ndarray, labels: np.ndarray, proba: np.ndarray,
                 score: np.ndarray, count: int) -> pd.DataFrame:
    """The issues table from out-of-sample probabilities; `count` lowest scores are flagged.

    ids : (n,); classes : (C,) label of each probability column; labels : (n,) column index of the given
    label; proba : (n, C); score : (n,) lower = more likely wrong; count : how many to flag.
    """
    n = len(labels)
    order = np.argsort(score, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    flag = rank < int(count)
    return pd.DataFrame({
        "id": np.asarray(ids),
        "label": np.asarray(classes)[labels],
        "suggested_label": np.asarray(classes)[np.asarray(proba).argmax(1)],
        "p_label": np.asarray(proba)[np.arange(n), labels],
        "score": np.asarray(score, dtype=np.float64),
        "is_issue": flag,
        "rank": rank,
    })


def find_label_issues(model: ModelAdapter, train: Split, **options: Any) -> pd.DataFrame:
    """One row per training sample, in input order, with the columns `COLUMNS`:

    id, label (given), suggested_label (most probable class out of sample), p_label (out-of-sample
    probability of the given label), score (the `mislabel` score; lower = more likely wrong), is_issue
    (among the estimated number of wrong labels, confident learning's count), rank (0 = most likely wrong).

    options : options of the `mislabel` method (``influent methods mislabel``), e.g. ``rounds=0``.
    """
    from ..methods.mislabel import label_scores, leave_one_out, MislabelOptions
    from ..methods.options import build_options
    from ..models.base import resolve_params

    if not isinstance(model, ModelAdapter):
        raise InputError(f"model must be an influent ModelAdapter, got {type(model).__name__}")
    check_fitted(model)
    if not isinstance(train, Split):
        raise InputError(f"train must be an influent Split, got {type(train).__name__}")
    model.check_split(train)
    o = build_options("mislabel", MislabelOptions, options)
    view = resolve_params(model, o.params)
    damping = o.damping
    if damping == "auto":
        regularised = any(view.reg_coef.get(nm, 0.0) > 0 for nm in view.param_names() if nm.endswith("weight"))
        damping = 0.0 if regularised else 1e-3
    loo = leave_one_out(view, train, float(damping), o.hessian, 512, int(o.rounds), int(o.newton_steps),
                        int(o.refresh), o.precision)
    proba = loo.proba()
    score = label_scores(proba, loo.labels, o.kind, bool(o.calibrate))
    count, _ = confident_count(proba, loo.labels)
    return issues_frame(train.ids, loo.classes, loo.labels, proba, score, count)
