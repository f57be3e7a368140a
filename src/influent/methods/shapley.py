"""Truncated Monte Carlo Data Shapley (Ghorbani & Zou, "Data Shapley: Equitable Valuation of Data for
Machine Learning", ICML 2019, Section 3 and Algorithm 1).

The Data Shapley value of training sample i under a utility U (the refit model's performance on the
validation set) is

    phi_i = sum over S subset of D \\ {i} of |S|! (n - |S| - 1)! / n! * (U(S + i) - U(S)),

the mean over uniformly random permutations pi of the marginal gain of i given the samples before it.
TMC-Shapley samples T permutations; walking along one, it refits on each prefix and credits the
utility gain to the sample just added, and it **truncates** the walk once the running utility is within
the tolerance of the full-data utility: ``|U(D) - v_{j-1}| < tolerance * |U(D)|`` (the paper's
"performance tolerance", expressed relative to U(D) as in the authors' code, default 0.01); every later
sample of that permutation gets a marginal of 0. ``patience`` consecutive in-tolerance prefixes are
required before truncating (1: Algorithm 1 of the paper; the authors' code uses 5).

Utility (``utility``):

- ``"accuracy"`` (default; the paper's classification experiments): accuracy of the refit model on the
  target's validation split; the empty set (and any subset missing a class of the training set, on
  which the model cannot be fitted as the full one is) gets the accuracy of always predicting the
  validation set's majority class (the authors' code's "random score"), unless ``empty_utility`` is given.
- ``"target"``: minus the target's cost (e.g. minus the mean validation loss) of the refit model;
  ``empty_utility`` must be given.

values = raw = phi (higher = more valuable; Shapley values sum to U(D) - U(empty), the efficiency axiom).

Cost: at most ``T * n`` refits; with truncation about ``T * mean truncation position`` (recorded as
``n_refits`` and ``mean_truncation``). Utilities are cached per subset, so a subset seen in several
permutations is refitted once. With ``n_jobs > 1`` the permutations are split among
worker processes, each walking its share with its own cache; the refits themselves go through
`influent.models.refit.refit_many` (the project's one refit helper, imported lazily since it lives in
the evaluation layer).
Each refit is ``model.refit(subset)``: deterministic for SklearnLogistic and for torch adapters (their
TrainConfig seed), so the values depend only on ``seed`` (the permutations), not on ``n_jobs``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..data.validate import InputError, check_number
from .options import MethodOptions, opt
from .registry import Job, Result, register_method

UTILITIES = ("accuracy", "target")


def _key(rows: np.ndarray, n: int) -> bytes:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()


class SubsetUtility:
    """U(S) for subsets S of the training split, cached per subset; new subsets are refitted together
    through `refit_many` (in this process).

    Parameters
    ----------
    adapter : the fitted model (refitted on subsets; never modified)
    train : the training split
    metric : a picklable refit metric (`Accuracy(valid)` or `TargetValue(target)`); U = sign * metric
    sign : +1 (accuracy) or -1 (a cost)
    empty : U of the empty set and of any subset missing a class of the training set
    seed : the refits' seed (`refit_many`)
    """

    def __init__(self, adapter, train, metric, sign: float, empty: float, seed: int = 0) -> None:
        self.adapter, self.train, self.metric, self.sign = adapter, train, metric, sign
        self.empty, self.seed = float(empty), seed
        self.y = np.asarray(train.y)
        self.n_classes = len(np.unique(self.y)) if adapter.classes_ is not None else 0
        self.cache: dict[bytes, float] = {}
        self.n_refits = 0

    def _degenerate(self, rows: np.ndarray) -> bool:
        return len(rows) == 0 or (self.n_classes > 0 and len(np.unique(self.y[rows])) < self.n_classes)

    def __call__(self, subsets: list[np.ndarray]) -> np.ndarray:
        """(len(subsets),) utilities of the given position arrays."""
        from ..models.refit import refit_many

        n = len(self.train)
        keys = [_key(r, n) for r in subsets]
        todo: dict[bytes, np.ndarray] = {}
        for k, r in zip(keys, subsets):
            if k in self.cache or k in todo:
                continue
            if self._degenerate(r):
                self.cache[k] = self.empty
            else:
                todo[k] = r
        if todo:
            vals = refit_many(self.adapter, self.train, list(todo.values()), self.metric, n_jobs=1, seed=self.seed)
            self.n_refits += len(todo)
            for k, v in zip(todo, vals):
                self.cache[k] = self.sign * float(v)
        return np.array([self.cache[k] for k in keys])


def tmc_walk(U: SubsetUtility, perms: np.ndarray, full: float, tolerance: float,
             patience: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Algorithm 1 of Ghorbani & Zou (2019) along the given permutations, all advanced one position at a time.

    Parameters
    ----------
    U : the subset utility; perms : (T, n) permutations; full : U(D)
    tolerance : truncate a walk once ``|full - v_{j-1}| < tolerance * |full|`` held ``patience`` times in a row

    Returns
    -------
    (sum over the permutations of the marginal gains (n,), truncation position of each walk (T,), refits)
    """
    T, n = perms.shape
    prev = np.full(T, U.empty)  # v_{j-1} of each walk
    streak = np.zeros(T, dtype=np.int64)
    live = np.ones(T, dtype=bool)
    stop = np.full(T, n)
    total = np.zeros(n)
    tol = float(tolerance) * abs(full)
    for j in range(n):
        streak = np.where(np.abs(full - prev) < tol, streak + 1, 0)
        ended = live & (streak >= patience)
        stop[ended] = j
        live &= ~ended
        ts = np.flatnonzero(live)
        if ts.size == 0:
            break
        v = U([perms[t, :j + 1] for t in ts])
        np.add.at(total, perms[ts, j], v - prev[ts])  # a sample can sit at position j of several walks
        prev[ts] = v
    return total, stop, U.n_refits


def _walk_in_worker(adapter, train, metric, sign, empty, seed, cache, perms, full, tolerance, patience):
    U = SubsetUtility(adapter, train, metric, sign, empty, seed)
    U.cache.update(cache)
    return tmc_walk(U, perms, full, tolerance, patience)


@dataclass
class ShapleyOptions(MethodOptions):
    """Options of TMC-Shapley (Ghorbani & Zou 2019, Algorithm 1)."""

    permutations: int = opt(100, "Monte Carlo permutations T")
    tolerance: float = opt(0.01, "truncate a permutation once |U(D) - U(prefix)| < tolerance |U(D)|; 0: never")
    patience: int = opt(1, "consecutive in-tolerance prefixes before truncating (1: the paper's Algorithm 1)")
    utility: str = opt("accuracy", "'accuracy' (validation accuracy) | 'target' (minus the target's value)")
    empty_utility: float | None = opt(None, "U of the empty set; None: the majority-class accuracy (needed "
                                            "with utility='target')")
    n_jobs: int = opt(1, "worker processes the permutations are split among")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.permutations = check_number(self.permutations, "tmc-shapley: permutations", kind=int, low=1)
        self.tolerance = check_number(self.tolerance, "tmc-shapley: tolerance", low=0)
        self.patience = check_number(self.patience, "tmc-shapley: patience", kind=int, low=1)
        if self.utility not in UTILITIES:
            raise InputError(f"tmc-shapley: utility must be one of {list(UTILITIES)}, got {self.utility!r}")
        self.empty_utility = check_number(self.empty_utility, "tmc-shapley: empty_utility", none=True)
        self.n_jobs = check_number(self.n_jobs, "tmc-shapley: n_jobs", kind=int)


@register_method("tmc-shapley", title="TMC-Shapley", options=ShapleyOptions)
def tmc_shapley(job: Job) -> Result:
    """Truncated Monte Carlo Data Shapley (Ghorbani & Zou 2019): raw = values = the estimated Shapley value
    of each sample under the validation utility (higher = more valuable).

    A permutation is truncated once |U(D) - U(prefix)| < tolerance |U(D)| (Algorithm 1). Cost: about
    T x (mean truncation position) refits. Options: `ShapleyOptions` (``influent methods tmc-shapley``).
    """
    from ..models.refit import Accuracy, TargetValue

    target = job.need_target("tmc-shapley")
    o = job.options
    T, tol, patience = int(o.permutations), float(o.tolerance), int(o.patience)
    utility, empty = o.utility, o.empty_utility
    n_jobs = max(1, int(o.n_jobs))
    if utility == "accuracy":
        if job.adapter.classes_ is None:
            raise InputError("tmc-shapley: utility 'accuracy' needs a classifier; use utility='target'")
        metric, sign = Accuracy(target.valid), 1.0
        if empty is None:  # always predicting the validation set's majority class
            empty = float(np.unique(target.valid.y, return_counts=True)[1].max() / len(target.valid))
    else:
        if empty is None:
            raise InputError("tmc-shapley: utility='target' needs empty_utility=<U of the empty set>")
        metric, sign = TargetValue(target), -1.0
    n = len(job.train)
    U = SubsetUtility(job.adapter, job.train, metric, sign, float(empty), job.seed)
    full = float(U([np.arange(n)])[0])
    rng = np.random.default_rng(job.seed)
    perms = np.stack([rng.permutation(n) for _ in range(T)])  # (T, n)
    if n_jobs == 1 or T == 1:
        total, stop, refits = tmc_walk(U, perms, full, tol, patience)
    else:
        from joblib import Parallel, delayed

        groups = [g for g in np.array_split(np.arange(T), min(n_jobs, T)) if g.size]
        parts = Parallel(n_jobs=len(groups), backend="loky", max_nbytes=None)(
            delayed(_walk_in_worker)(job.adapter, job.train, metric, sign, float(empty), job.seed, U.cache,
                                     perms[g], full, tol, patience) for g in groups)
        total = np.sum([p[0] for p in parts], axis=0)
        stop = np.concatenate([p[1] for p in parts])
        refits = U.n_refits + sum(p[2] for p in parts)
    phi = total / T
    job.used.update(n_refits=int(refits), mean_truncation=float(stop.mean()), full_utility=full,
                    empty_utility=float(empty))
    return Result(phi, phi.copy())
