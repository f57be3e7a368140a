"""The removal curve: remove the k lowest-valued training samples (and the k highest-valued, and k random
ones for the reference), refit, measure a metric — for several k at once.

It is the one implementation behind the report's curve (`influent.runs.summary`), the trimming
experiments ([FI] Tables 1 and 2, `influent.evaluation.trimming`), the evaluation protocol
`influent.evaluation.attribution.removal_curve`, and the trims of the noisy-label experiment
(`influent.evaluation.noisy`) and of the demo's comparison (`influent.runs.demo`; their random trims and
oracle are fixed sets of samples and call `refit_many` directly); every refit goes through `models.refit.refit_many`
(parallel processes, fixed seeds: the result of a refit depends only on its subset and ``seed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..data import Split
from ..data.scores import Scores
from ..data.validate import InputError, check_choice
from ..models.base import ModelAdapter
from ..models.refit import Metric, refit_many

ENDS = ("lowest", "highest")


@dataclass
class RemovalCurve:
    """Metric values after each removal.

    Attributes
    ----------
    counts : (m,) how many samples were removed at each point
    curves : end ("lowest": harmful first, "highest": helpful first) -> m metric values
    random : (repeats, m) nested list of metric values after random removals
    None stands for a refit skipped because it raised one of the `skip` errors (e.g. one class left).
    """

    counts: list[int]
    curves: dict[str, list[Any]]
    random: list[list[Any]]


def removal_curve(model: ModelAdapter, train: Split, scores: Scores, counts: Sequence[int], metric: Metric, *,
                  ends: Sequence[str] = ("lowest",), repeats: int = 0, nested: bool = True, seed: int = 0,
                  refit_at_zero: bool = True, warm_start: bool = False, n_jobs: int = 1,
                  skip: tuple[type[Exception], ...] = (),
                  tick: Callable[[int, int], None] | None = None) -> RemovalCurve:
    """Refit `model` on `train` without the first k samples of each ordering, for each k in `counts`.

    Parameters
    ----------
    model : the fitted adapter; refits start from its initial weights and training settings
    train : (n,) the training split `scores` describe
    scores : (n,) values, lowest = least valuable (removed first by the "lowest" end)
    counts : removal counts, each in [0, n - 1]
    metric : callable(refit adapter) -> value, e.g. `Accuracy(test)` or `Several({...})`
    ends : which rankings to remove from: "lowest" (`scores.order()`: NaN last) and/or "highest"
        (`scores.most_helpful`)
    repeats : random removal orders, the reference every method must beat
    nested : True: one random permutation per repeat, and k random removals are its first k (the curve of
        one repeat is one removal sequence); False: a fresh permutation for every count and repeat
    seed : seeds the random permutations and the refits (``refit_many``)
    refit_at_zero : k = 0 refits on the whole split (True) or measures `model` as given (False)
    warm_start, n_jobs : as in ``refit_many``
    skip : exception types that make a refit's value None instead of stopping the curve
    tick : called as ``tick(done, total)`` after each count, `total` = len(counts) * (len(ends) + repeats)

    k = 0 is the same subset for every ordering: it is refit once and shared.
    """
    n = len(train)
    if len(scores) != n:
        raise InputError(f"removal curve: {len(scores)} scores for {n} training samples")
    for end in ends:
        check_choice(end, ENDS, "removal curve end")
    counts = [int(c) for c in counts]
    if any(c < 0 or c >= n for c in counts):
        raise InputError(f"removal curve: counts must lie in [0, {n - 1}] (a refit needs a sample), got {counts}")
    orders = {"lowest": scores.order, "highest": lambda: scores.most_helpful(n)}
    ranked = {end: orders[end]() for end in ends}
    rng = np.random.default_rng(seed)
    if nested:
        perms = [rng.permutation(n) for _ in range(repeats)]
        randoms = [perms] * len(counts)
    else:
        randoms = [[rng.permutation(n) for _ in range(repeats)] for _ in counts]
    width = len(ends) + repeats
    curves: dict[str, list[Any]] = {end: [] for end in ends}
    random: list[list[Any]] = [[] for _ in range(repeats)]
    for j, c in enumerate(counts):
        if c == 0:
            value = (refit_many(model, train, [np.arange(n)], metric, n_jobs=1, seed=seed,
                                warm_start=warm_start, skip=skip)[0] if refit_at_zero else metric(model))
            values = [value] * width
        else:
            subsets = [np.sort(ranked[end][c:]) for end in ends] + [np.sort(p[c:]) for p in randoms[j]]
            values = refit_many(model, train, subsets, metric, n_jobs=n_jobs, seed=seed, warm_start=warm_start,
                                skip=skip)
        for end, v in zip(ends, values):
            curves[end].append(v)
        for r, v in enumerate(values[len(ends):]):
            random[r].append(v)
        if tick is not None:
            tick((j + 1) * width, len(counts) * width)
    return RemovalCurve(counts, curves, random)
