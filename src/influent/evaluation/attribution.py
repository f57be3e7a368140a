"""How good are scores? Protocols that compare them with retraining (methods.md section 8).

- `loo_correlation`: predicted vs actual change of a target when one sample is removed and the model refit.
- `lds` (linear datamodeling score): random alpha-subsets are retrained; for each test point, the
  Spearman correlation across subsets between the summed attributions of the subset and the refit
  model's test loss; averaged over test points.
- `brittleness`: the smallest number of top-supporting training samples whose removal flips a test
  prediction.
- `removal_curve`: the test metric after removing the b lowest-valued samples, against random removal.

Every refit goes through `influent.models.refit.refit_many` (parallel processes, fixed seeds).
Attribution matrices follow `influent.attribute`: entry (i, j) estimates how much test sample j's loss
rises when training sample i is removed (higher = i helps j).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, rankdata, spearmanr

from ..data import Split
from ..data.validate import InputError, check_budget, check_number
from ..models.base import ModelAdapter
from ..data.scores import Scores
from ..targets import Target, Utility
from ..models.refit import Accuracy, Metric, PerSampleLoss, Predictions, TargetValue, random_subsets, refit_many
from .curves import removal_curve as removal_curve_of


def _values(scores: Scores | np.ndarray, n: int, what: str = "scores") -> np.ndarray:
    v = scores.values if isinstance(scores, Scores) else np.asarray(scores, dtype=np.float64)
    if v.shape != (n,):
        raise InputError(f"{what}: expected {n} values (one per training sample), got shape {v.shape}")
    return v


def _attributions(A: Any, n_train: int, n_test: int) -> np.ndarray:
    A = np.asarray(A, dtype=np.float64)
    if A.shape != (n_train, n_test):
        raise InputError(f"attributions: expected shape (n_train, n_test) = ({n_train}, {n_test}), got {A.shape}")
    if not np.all(np.isfinite(A)):
        raise InputError("attributions: NaN or infinite entries")
    return A


# ---- leave-one-out --------------------------------------------------------------------------------
@dataclass
class LOOResult:
    """Predicted vs actual change of the target when each sample of `positions` is removed."""

    pearson: float
    spearman: float
    predicted: np.ndarray
    actual: np.ndarray
    positions: np.ndarray


def loo_correlation(model: ModelAdapter, train: Split, target: Target | Split, scores: Scores | np.ndarray,
                    positions: Sequence[int] | None = None, *, n_jobs: int = 2, seed: int = 0,
                    warm_start: bool = True) -> LOOResult:
    """Pearson and Spearman correlation between `scores` and the actual leave-one-out effect
    f(theta_{-i}) - f(theta_full) on `target` (a bare Split means its mean loss), for `positions`
    (default: every sample; that is n refits). theta_full is refit the same way as the others, so the
    refit procedure's own error cancels."""
    n = len(train)
    pred = _values(scores, n)
    pos = np.arange(n) if positions is None else np.asarray(positions, dtype=np.int64)
    if pos.size < 3:
        raise InputError("loo_correlation needs at least 3 positions")
    target = Utility(target) if isinstance(target, Split) else target
    target.prepare(model)
    subsets = [np.arange(n)] + [np.delete(np.arange(n), i) for i in pos]
    vals = np.asarray(refit_many(model, train, subsets, TargetValue(target), n_jobs=n_jobs, seed=seed,
                                 warm_start=warm_start), dtype=np.float64)
    actual = vals[1:] - vals[0]
    p = pred[pos]
    return LOOResult(float(pearsonr(p, actual)[0]), float(spearmanr(p, actual)[0]), p, actual, pos)


# ---- linear datamodeling score --------------------------------------------------------------------
@dataclass
class LDSGroundTruth:
    """Retrained models' test losses: `masks` (n_subsets, n_train) bool, `losses` (n_subsets, n_test)."""

    masks: np.ndarray
    losses: np.ndarray
    alpha: float
    seed: int


@dataclass
class LDSResult:
    """`score`: mean over test points of `per_test`, the Spearman correlation across subsets."""

    score: float
    per_test: np.ndarray
    predicted: np.ndarray  # (n_subsets, n_test) summed attributions of each subset

    def __float__(self) -> float:
        return self.score


def lds_ground_truth(model: ModelAdapter, train: Split, test: Split, n_subsets: int = 50, alpha: float = 0.5,
                     *, n_jobs: int = 2, seed: int = 0) -> LDSGroundTruth:
    """Retrain on `n_subsets` random subsets of round(alpha * n) samples; record every test loss."""
    check_number(alpha, "lds: alpha", low=0, low_open=True, high=1)
    check_number(n_subsets, "lds: n_subsets", kind=int, low=3)
    n = len(train)
    masks = random_subsets(n, max(1, int(round(alpha * n))), int(n_subsets), seed)
    losses = refit_many(model, train, list(masks), PerSampleLoss(test), n_jobs=n_jobs, seed=seed)
    return LDSGroundTruth(masks, np.stack(losses), float(alpha), int(seed))


def lds_score(attributions: Any, truth: LDSGroundTruth) -> LDSResult:
    """LDS of an attribution matrix against retrained ground truth.

    The subset's summed attribution predicts how low the test loss is (helpful samples present = lower
    loss), so for each test point j the Spearman correlation is taken between sum_{i in S} A_ij and
    -loss_S(j) across subsets S; the LDS is the mean over test points.
    """
    A = _attributions(attributions, truth.masks.shape[1], truth.losses.shape[1])
    predicted = truth.masks.astype(np.float64) @ A  # (n_subsets, n_test)
    rp = np.apply_along_axis(rankdata, 0, predicted)
    ra = np.apply_along_axis(rankdata, 0, -truth.losses)
    rp -= rp.mean(0)
    ra -= ra.mean(0)
    den = np.sqrt((rp**2).sum(0) * (ra**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_test = np.where(den > 0, (rp * ra).sum(0) / den, np.nan)
    return LDSResult(float(np.nanmean(per_test)), per_test, predicted)


def lds(model: ModelAdapter, train: Split, test: Split, attributions: Any, *, n_subsets: int = 50,
        alpha: float = 0.5, n_jobs: int = 2, seed: int = 0, ground_truth: LDSGroundTruth | None = None) -> LDSResult:
    """Linear datamodeling score of `attributions` (n_train, n_test): retrain on `n_subsets` random
    alpha-subsets (or reuse `ground_truth` from `lds_ground_truth`, to score several methods on the
    same retrained models), Spearman per test point, averaged."""
    truth = ground_truth or lds_ground_truth(model, train, test, n_subsets, alpha, n_jobs=n_jobs, seed=seed)
    return lds_score(attributions, truth)


# ---- brittleness ----------------------------------------------------------------------------------
def brittleness(model: ModelAdapter, train: Split, test: Split, attributions: Any,
                ks: Sequence[int] = (5, 10, 20, 40, 80), *, random: bool = False, n_jobs: int = 2,
                seed: int = 0) -> pd.DataFrame:
    """For each test point, the smallest k in `ks` such that removing its k most supporting training
    samples (highest attribution) and refitting changes its prediction (NaN: no k in the grid does).

    With `random=True` a column `k_random` gives the same for k random samples (the baseline).
    Cost: len(test) * len(ks) refits (twice with `random`). Returns one row per test point:
    id, predicted label, k_flip (and k_random).
    """
    A = _attributions(attributions, len(train), len(test))
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] >= len(train):
        raise InputError(f"brittleness: ks must lie in [1, {len(train) - 1}], got {ks}")
    base = np.asarray(model.predict(test))
    rng = np.random.default_rng(seed)
    n = len(train)
    plans: dict[str, list[np.ndarray]] = {"k_flip": [np.argsort(-A[:, j], kind="stable") for j in range(len(test))]}
    if random:
        plans["k_random"] = [rng.permutation(n) for _ in range(len(test))]
    out = pd.DataFrame({"id": test.ids, "prediction": base})
    for col, orders in plans.items():
        subsets, where = [], []
        for j, order in enumerate(orders):
            for k in ks:
                subsets.append(np.sort(order[k:]))
                where.append((j, k))
        preds = refit_many(model, train, subsets, Predictions(test), n_jobs=n_jobs, seed=seed)
        flip = np.full(len(test), np.nan)
        for (j, k), p in zip(where, preds):
            if p[j] != base[j] and not (flip[j] <= k):
                flip[j] = k
        out[col] = flip
    return out


# ---- removal curves -------------------------------------------------------------------------------
def removal_curve(model: ModelAdapter, train: Split, test: Split, scores: Scores | np.ndarray,
                  budgets: Sequence[float], *, metric: Metric | None = None, n_random: int = 5,
                  n_jobs: int = 2, seed: int = 0) -> pd.DataFrame:
    """Test metric (default accuracy on `test`) after removing the b lowest-valued samples and refitting,
    for each b in `budgets` (counts or fractions), against removing b random samples (`n_random` fresh
    draws per budget); the refits are `evaluation.curves.removal_curve`'s.

    Returns columns budget (count), lowest, random_mean, random_std.
    """
    n = len(train)
    v = _values(scores, n)
    s = scores if isinstance(scores, Scores) else Scores(v, "scores", train.ids)
    counts = [check_budget(b, n, "removal budget") for b in budgets]
    if any(c >= n for c in counts):
        raise InputError("removal budget: removing every sample leaves nothing to train on")
    res = removal_curve_of(model, train, s, counts, metric or Accuracy(test), repeats=n_random, nested=False,
                           seed=seed, n_jobs=n_jobs)
    rnd = np.asarray(res.random, dtype=np.float64).reshape(n_random, len(counts))
    return pd.DataFrame({"budget": counts, "lowest": [float(x) for x in res.curves["lowest"]],
                         "random_mean": rnd.mean(0) if n_random else np.nan,
                         "random_std": rnd.std(0) if n_random else np.nan})
