"""`find_label_issues`: one table to act on — for every training sample its given label, the label the rest
of the data suggests, the out-of-sample probability of the given label, a score, and whether it is counted
among the estimated wrong labels.

The probabilities are those of the `mislabel` detector (`influent.methods.mislabel`): each sample's
leave-one-out probabilities from one Newton step, under the model of the last cleaning round (no refits).
The number of wrong labels is confident learning's estimate on these probabilities (Northcutt, Jiang,
Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021, sec. 3.1-3.2;
`estimated_count`), and that many samples with the lowest scores are flagged, as cleanlab's
``prune_by_noise_rate`` flags the lowest-quality samples within the estimated count (sec. 3.2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data import Split
from ..data.validate import InputError, check_choice, check_fitted, class_codes
from ..models.base import ModelAdapter

COLUMNS = ("id", "label", "suggested_label", "p_label", "score", "is_issue", "rank")


def issues_frame(ids: np.ndarray, classes: np.ndarray, labels: np.ndarray, proba: np.ndarray,
                 score: np.ndarray, count: int) -> pd.DataFrame:
    """The issues table (columns `COLUMNS`, rows in input order); the `count` lowest scores are flagged.

    ids : (n,); classes : (C,) label of each probability column; labels : (n,) column index of the given
    label; proba : (n, C) out-of-sample probabilities; score : (n,) lower = more likely wrong; count : how
    many to flag (clipped to [0, n]). Ties in the score keep input order (stable sort).
    """
    n = len(labels)
    P = np.asarray(proba, dtype=np.float64)
    order = np.argsort(np.asarray(score, dtype=np.float64), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return pd.DataFrame({
        "id": np.asarray(ids),
        "label": np.asarray(classes)[labels],
        "suggested_label": np.asarray(classes)[P.argmax(1)],
        "p_label": P[np.arange(n), labels],
        "score": np.asarray(score, dtype=np.float64),
        "is_issue": rank < min(max(int(count), 0), n),
        "rank": rank,
    })


PROBABILITIES = ("auto", "loo", "cv")


def memorised(model: ModelAdapter, train: Split, valid: Split | None = None) -> bool:
    """Whether `model` is a network (more than one layer with parameters) that fits its own training labels
    beyond what it generalises: its in-sample accuracy of the given labels exceeds its accuracy on `valid` by
    more than two binomial standard errors (and 2 points). Without `valid` that cannot be judged and every
    network counts as memorising: a network that fits part of its flips (in-sample accuracy below any fixed
    threshold) already hides them from its last layer (docs/cleaning.md: the last layer's count was 0-13 for
    100-400 flips on BBC News and Adult at 93-97% in-sample accuracy). Its final layer's leave-one-out step
    then cannot see a wrong label (the features moved to fit it), so the probabilities must come from refits
    without the sample."""
    module = model._require_fitted()
    layers = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    if len(layers) <= 1:
        return False
    if valid is None:
        return True
    a_train = model.accuracy(train)
    a_valid = model.accuracy(valid)
    se = float(np.sqrt(max(a_valid * (1 - a_valid), 1e-12) / max(len(valid), 1)))
    return a_train - a_valid > max(2 * se, 0.02)


def find_label_issues(model: ModelAdapter, train: Split, count: str = "off-diagonal", probabilities: str = "auto",
                      valid: Split | None = None,
                      cv: int = 5, seed: int = 0, **options: Any) -> pd.DataFrame:
    """Which training labels are likely wrong: one row per sample of `train`, in input order.

    Columns (`COLUMNS`):

    - ``id``: the sample's id (``train.ids``)
    - ``label``: the given label (as in ``train.y``: strings stay strings)
    - ``suggested_label``: the most probable class out of sample (may equal ``label``)
    - ``p_label``: out-of-sample probability of the given label (the sample's leave-one-out model under the
      last cleaning round's model; `influent.methods.mislabel.leave_one_out`)
    - ``score``: the `mislabel` score (default: margin p_label - max other class); lower = more likely wrong
    - ``is_issue``: among the ``m`` lowest scores, ``m`` = confident learning's estimated number of wrong
      labels (``df.attrs["estimated_count"]``)
    - ``rank``: 0 = most likely wrong, ..., n - 1

    Parameters
    ----------
    model : fitted classifier (logistic, one-logit binary or K-class; a network: its last layer is analysed)
    train : the split it was fitted on
    count : "off-diagonal" (default; Northcutt et al. 2021 sec. 3.1, cleanlab's ``num_label_issues``
        default: samples confidently counted in another class that is also their most probable one) or
        "calibrated" (sec. 3.2: n times the off-diagonal mass of the confident joint calibrated to the
        given-label counts). Measured closer to the true number of flips on the default probabilities
        (docs/cleaning.md); both are `influent.methods.mislabel.estimated_count`.
    probabilities : "auto" (default: "loo", unless the model is a network that fits its own training labels
        beyond what it generalises (`memorised`, judged on `valid`; without `valid` every network): its last
        layer then sees no disagreement, and "cv" is taken), "loo" (`mislabel`'s leave-one-out probabilities, no refits) or "cv" (each
        sample's probabilities from a copy of the model refitted without its fold, `cv` stratified folds
        shuffled with `seed`, as cleanlab asks: `cv` refits). Use "cv" for a network that fits its own
        training labels (its last layer then sees no disagreement: docs/noisy-labels.md); with "cv" the
        score is `kind` (and `calibrate`) of those probabilities and the cleaning rounds do not apply.
    valid : optional held-out split, only for "auto"'s memorisation check (`memorised`)
    options : options of the `mislabel` method (``influent methods mislabel``), e.g. ``rounds=0``.

    ``df.attrs`` holds ``estimated_count``, ``count_method`` and ``rounds_rejected`` (True when the
    cleaning rounds were set aside for lowering the out-of-sample accuracy of the given labels).
    """
    from ..methods.mislabel import COUNTS, MislabelOptions, estimated_count, label_scores, run_leave_one_out
    from ..methods.options import build_options
    from ..methods.registry import M

    if not isinstance(model, ModelAdapter):
        raise InputError(f"model must be an influent ModelAdapter, got {type(model).__name__}")
    check_fitted(model)
    if not isinstance(train, Split):
        raise InputError(f"train must be an influent Split, got {type(train).__name__}")
    check_choice(count, COUNTS, "find_label_issues: count", unknown="count method")
    if model.classes_ is None:
        raise InputError("find_label_issues needs a classifier (loss 'cross_entropy' or 'bce')")
    model.check_split(train)
    check_choice(probabilities, PROBABILITIES, "find_label_issues: probabilities")
    o = build_options(M.MISLABEL, MislabelOptions, options)
    if probabilities == "auto":
        if valid is not None:
            model.check_split(valid)
        probabilities = "cv" if memorised(model, train, valid) else "loo"
    if probabilities == "cv":
        from ..methods.label_quality import out_of_sample_proba

        classes = np.asarray(model.classes_)
        labels = class_codes(train.y, classes)
        proba, rejected = out_of_sample_proba(model, train, int(cv), int(seed)), False
    else:
        loo = run_leave_one_out(model, train, o)
        classes, labels, proba, rejected = loo.classes, loo.labels, loo.proba(), loo.rounds_rejected
    score = label_scores(proba, labels, o.kind, bool(o.calibrate))
    m = estimated_count(proba, labels, count)
    df = issues_frame(train.ids, classes, labels, proba, score, m)
    df.attrs.update(estimated_count=int(m), count_method=count, probabilities=probabilities,
                    rounds_rejected=bool(rejected))
    return df
