"""Baselines: random scores and leave-one-out retraining (the ground truth on convex models)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.validate import InputError, check_choice, check_number
from ..models.refit import TargetValue, refit_many
from .options import MethodOptions, opt
from .registry import Job, Result, register_method


@dataclass
class LOOOptions(MethodOptions):
    """Options of leave-one-out retraining."""

    subset: Any = opt(None, "positions to retrain without (a list of ints; the others are NaN); None: every sample")
    warm_start: bool = opt(True, "start each refit from the fitted model where the adapter supports it")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.subset is not None:
            if isinstance(self.subset, (str, bytes)) or np.ndim(self.subset) != 1:
                raise InputError(f"loo: subset must be a list of positions, got {self.subset!r}")
            for i in self.subset:
                check_number(i, "loo: subset positions", kind=int, low=0)
        check_choice(self.warm_start, (True, False), "loo: warm_start")


@register_method("random", needs_target=False, title="random scores (a baseline)")
def random_scores(job: Job) -> Result:
    """Random values (standard normal, seeded): the reference every method must beat."""
    rng = np.random.default_rng(job.seed)
    return Result(rng.standard_normal(len(job.train)))


@register_method("loo", title="leave-one-out retraining", options=LOOOptions)
def leave_one_out(job: Job) -> Result:
    """Leave-one-out retraining: values_i = f(theta_{-i}) - f(theta_hat), the actual rise of the target
    cost when sample i is removed and the model refit. `subset` limits it to some positions (others NaN);
    `warm_start` starts each refit from the fitted model where the adapter supports it."""
    target = job.need_target("loo")
    subset = job.options.subset
    warm = bool(job.options.warm_start)
    idx = np.arange(len(job.train)) if subset is None else np.asarray(subset, dtype=np.int64)
    if idx.size and idx.max() >= len(job.train):
        raise InputError(f"loo: subset positions must be below the {len(job.train)} training samples, "
                         f"got {int(idx.max())}")
    base = target.evaluate(job.adapter)
    values = np.full(len(job.train), np.nan)
    keep = [np.delete(np.arange(len(job.train)), i) for i in idx]
    got = refit_many(job.adapter, job.train, keep, TargetValue(target), n_jobs=1, seed=job.seed, warm_start=warm,
                     progress=job.progress)
    values[idx] = np.asarray(got, dtype=np.float64) - base
    return Result(values, values)
