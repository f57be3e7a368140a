"""Fairness-aware trimming ([IV], [IP]): score every training sample by its influence on utility
(validation loss) and on demographic parity (the signed gap of soft positive rates between groups,
made a cost |gap| at the trained model), remove the 5% most harmful, refit, and report test accuracy
and the demographic-parity gap before and after.

Strategies compared (each removes the same number of samples):

- ``utility``: the lowest utility values;
- ``fairness``: the lowest demographic-parity values;
- ``both``: the samples that are harmful for both at once — ranked by the worse (larger) of their two
  ranks, so a sample is removed only when it is low on both lists;
- ``random``: a random subset (the reference).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..api.verbs import score
from ..data import Split
from ..data.validate import InputError, check_budget
from ..methods import DEFAULT_METHOD
from ..models import SklearnLogistic
from ..models.base import ModelAdapter
from ..targets import DemographicParity, Utility
from ..models.refit import refit_many

STRATEGIES = ("utility", "fairness", "both", "random")


def dp_gap(model: ModelAdapter, split: Split) -> float:
    """|P(y_hat = positive | group 1) - P(y_hat = positive | group 0)| with hard predictions on `split`."""
    if split.group is None:
        raise InputError(f"{split.name}: the demographic-parity gap needs a group attribute")
    groups = np.unique(split.group)
    if len(groups) != 2 or model.classes_ is None or len(model.classes_) != 2:
        raise InputError("the demographic-parity gap needs a binary classifier and exactly two groups")
    pos = np.asarray(model.predict(split)) == model.classes_[1]
    g1 = split.group == groups[1]
    return float(abs(pos[g1].mean() - pos[~g1].mean()))


class _Fairness:
    """Picklable metric: accuracy and DP gap on one split."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __call__(self, model: ModelAdapter) -> dict[str, float]:
        return {"accuracy": model.accuracy(self.split), "dp_gap": dp_gap(model, self.split)}


def both_harmful(utility_values: np.ndarray, fairness_values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k samples most harmful for both targets: ascending by max(rank_u, rank_f),
    ties broken by the sum of the ranks (rank 0 = most harmful)."""
    ru = np.argsort(np.argsort(utility_values, kind="stable"), kind="stable")
    rf = np.argsort(np.argsort(fairness_values, kind="stable"), kind="stable")
    return np.lexsort((ru + rf, np.maximum(ru, rf)))[:k]


def fairness_trimming(model: ModelAdapter, train: Split, valid: Split, test: Split, *, budget: float = 0.05,
                      method: str = DEFAULT_METHOD, n_jobs: int = 2, seed: int = 0, **options: Any) -> pd.DataFrame:
    """Trim by utility / fairness / both / random influence and refit; one row per strategy.

    Parameters
    ----------
    model : a fitted binary classifier adapter (its `refit` is used for every strategy)
    train, valid, test : splits with a two-valued `group`; `valid` defines both targets
    budget : samples removed (count or fraction)
    method : the scoring method (any registered method that takes a target), options passed on

    Returns
    -------
    DataFrame with columns strategy, removed, accuracy, dp_gap (test), d_accuracy, d_dp_gap (vs none)
    """
    for s in (train, valid, test):
        if s.group is None:
            raise InputError(f"{s.name}: fairness trimming needs a group attribute on every split")
    k = check_budget(budget, len(train), "fairness budget")
    su = score(model, train, target=Utility(valid), method=method, seed=seed, **options)
    sf = score(model, train, target=DemographicParity(valid), method=method, seed=seed, **options)
    rng = np.random.default_rng(seed)
    removed = {
        "utility": su.most_harmful(k),
        "fairness": sf.most_harmful(k),
        "both": both_harmful(su.values, sf.values, k),
        "random": rng.choice(len(train), k, replace=False),
    }
    n = np.arange(len(train))
    subsets = [n] + [np.setdiff1d(n, removed[s]) for s in STRATEGIES]
    res = refit_many(model, train, subsets, _Fairness(test), n_jobs=n_jobs, seed=seed)
    rows = [{"strategy": "none", "removed": 0, **res[0]}]
    rows += [{"strategy": s, "removed": k, **r} for s, r in zip(STRATEGIES, res[1:])]
    df = pd.DataFrame(rows)
    df["d_accuracy"] = df["accuracy"] - df.loc[0, "accuracy"]
    df["d_dp_gap"] = df["dp_gap"] - df.loc[0, "dp_gap"]
    return df


def fairness_experiment(datasets: Sequence[str] = ("adult", "compas"), *, seeds: Sequence[int] = (0,),
                        n_train: int = 5000, budget: float = 0.05, C: float = 1.0, method: str = DEFAULT_METHOD,
                        n_jobs: int = 2, **options: Any) -> pd.DataFrame:
    """The fairness table: for each data set and seed, `fairness_trimming` with logistic regression;
    rows averaged over seeds (mean, and std when several seeds).

    Adult: `n_train` training and 1,000 validation rows from adult.data, 5,000 test rows from adult.test,
    group = sex. COMPAS: the loader's 4,000 / 1,000 / 1,172 split (seeded), group = race.
    """
    from ..data import datasets as ds

    frames = []
    for name in datasets:
        for seed in seeds:
            parts = ds.load_group_set(name, n_train, seed, "fairness experiment")
            train, valid, test = parts["train"], parts["valid"], parts["test"]
            model = SklearnLogistic(C=C, newton_steps=0).fit(train)
            df = fairness_trimming(model, train, valid, test, budget=budget, method=method, n_jobs=n_jobs,
                                   seed=seed, **options)
            df.insert(0, "dataset", name)
            df.insert(1, "seed", seed)
            frames.append(df)
    full = pd.concat(frames, ignore_index=True)
    keys = ["dataset", "strategy"]
    out = full.groupby(keys, sort=False)[["removed", "accuracy", "dp_gap", "d_accuracy", "d_dp_gap"]].mean().reset_index()
    if len(seeds) > 1:
        std = full.groupby(keys, sort=False)[["accuracy", "dp_gap"]].std().reset_index()
        out["accuracy_std"], out["dp_gap_std"] = std["accuracy"].to_numpy(), std["dp_gap"].to_numpy()
    out["seeds"] = len(seeds)
    return out
