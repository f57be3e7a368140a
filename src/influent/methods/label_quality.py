"""Label-quality baselines: cleanlab's scores (self-confidence, normalized margin, confidence-weighted
entropy) computed from the model's predicted probabilities, out of sample by cross-validation.

Predicted probabilities of the training samples themselves are in-sample: a model that fits (or
memorises) a flipped label is confident in it, which hides the error. cleanlab recommends out-of-sample
probabilities, so by default each sample's probabilities come from a copy of the model refitted on the
other folds of a stratified `cv`-fold split (`cv=0`: the fitted model's in-sample probabilities).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from ..data import Split
from ..data.validate import InputError, check_choice, check_number, require
from ..models.base import ModelAdapter
from .options import MethodOptions, opt
from .registry import Job, Result, register_method

KINDS = {"self-confidence": "self_confidence", "normalized-margin": "normalized_margin",
         "confidence-entropy": "confidence_weighted_entropy"}


# Where a score says "the given label is more likely wrong than right" (the report flags samples below it):
# self-confidence p(label) < 1/2; normalized margin (p(label) - max other + 1) / 2 < 1/2, another class is
# more likely. The report's Tukey fence flags none on a [0, 1] statistic that is mostly near 1.
FLAG_BELOW = {"self-confidence": 0.5, "normalized-margin": 0.5}



@dataclass
class LabelQualityOptions(MethodOptions):
    """Options of the cleanlab label-quality scores."""

    kind: str = opt("self-confidence", "cleanlab score: 'self-confidence' | 'normalized-margin' | 'confidence-entropy'")
    cv: int = opt(5, "folds of the stratified cross-validation for out-of-sample probabilities (refits of "
                     "the model); 0: the fitted model's in-sample probabilities")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.kind, KINDS, "kind", unknown="label-quality kind")
        if check_number(self.cv, "cv", kind=int, low=0) == 1:
            raise InputError("cv must be 0 (in-sample) or a fold count >= 2, got 1")


_CACHE: "OrderedDict[str, np.ndarray]" = OrderedDict()  # the last few cross-validated probabilities


def _key(model: ModelAdapter, train: Split, cv: int, seed: int) -> str:
    h = hashlib.sha256(json.dumps(model.describe(), sort_keys=True, default=str).encode())
    for name, t in list(model._require_fitted().state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().numpy().tobytes())
    h.update(f"{train.fingerprint()}|{cv}|{seed}".encode())
    return h.hexdigest()


def out_of_sample_proba(model: ModelAdapter, train: Split, cv: int = 5, seed: int = 0) -> np.ndarray:
    """(n, K) predicted probabilities of each training sample from a copy of `model` refitted without
    its fold (stratified K-fold, shuffled with `seed`); columns follow `model.classes_`. A class missing
    from a fold's training part gets probability 0 there. The last 4 results are kept in memory, so the
    three label-quality kinds on one model cost one cross-validation."""
    key = _key(model, train, int(cv), int(seed))
    if key in _CACHE:
        return _CACHE[key].copy()
    proba = _cross_validated(model, train, int(cv), int(seed))
    _CACHE[key] = proba
    while len(_CACHE) > 4:
        _CACHE.popitem(last=False)
    return proba.copy()


def _cross_validated(model: ModelAdapter, train: Split, cv: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    classes = model.classes_
    if classes is None:
        raise InputError("label quality needs a classifier (loss 'cross_entropy' or 'bce')")
    counts = np.unique(train.y, return_counts=True)[1]
    if int(cv) < 2 or int(cv) > len(train):
        raise InputError(f"cv must be 0 (in-sample) or a fold count in [2, {len(train)}], got {cv}")
    folds = StratifiedKFold(n_splits=int(cv), shuffle=True, random_state=int(seed))
    proba = np.zeros((len(train), len(classes)))
    strata = train.y if counts.min() >= int(cv) else np.zeros(len(train))
    for fit_idx, held in folds.split(np.zeros(len(train)), strata):
        part = model.refit(train.subset(fit_idx))
        cols = np.searchsorted(classes, part.classes_)
        proba[np.ix_(held, cols)] = part.predict_proba(train.X[held])
    return proba


def label_quality_scores(labels: np.ndarray, pred_probs: np.ndarray, kind: str = "self-confidence") -> np.ndarray:
    """cleanlab's `get_label_quality_scores` under our names; labels are 0..K-1; lower = more suspicious."""
    check_choice(kind, KINDS, "kind", unknown="label-quality kind")
    get_label_quality_scores = _cleanlab_scores()
    return get_label_quality_scores(np.asarray(labels), np.asarray(pred_probs), method=KINDS[kind])


def _cleanlab_scores():
    """cleanlab's `rank.get_label_quality_scores`, imported here: cleanlab is an optional dependency."""
    return require("cleanlab.rank", "method label-quality", "cleanlab", 'pip install "cleanlab>=2.6"').get_label_quality_scores


@register_method("label-quality", needs_target=False, title="label quality (cleanlab)",
                 options=LabelQualityOptions, verdict="mislabelled")
def label_quality(job: Job) -> Result:
    """Label quality (cleanlab): values = raw = the label-quality score in [0, 1], lowest = most likely mislabelled.

    The probabilities are out of sample by default (stratified cross-validation with refits of the model).
    Options: `LabelQualityOptions` (``influent methods label-quality``).
    """
    kind = job.options.kind
    cv = int(job.options.cv)
    model = job.adapter
    if model.classes_ is None:
        raise InputError("label quality needs a classifier (loss 'cross_entropy' or 'bce')")
    proba = model.predict_proba(job.train) if cv == 0 else out_of_sample_proba(model, job.train, cv, job.seed)
    labels = np.searchsorted(model.classes_, job.train.y)
    s = np.asarray(label_quality_scores(labels, proba, kind), dtype=np.float64)
    if kind in FLAG_BELOW:
        job.used["flag_below"] = FLAG_BELOW[kind]
    return Result(s, s)
