"""Trimming experiments: remove the b lowest-valued training samples, refit, evaluate on a test split,
over budgets and seeds; then count the seeds where one method beats another ([FI] Tables 1 and 2).

A *scorer* maps ``(model, train, valid, seed)`` to `Scores`; `method_scorer("fi")` wraps `influent.score`
with a utility target on the validation split, `random_scorer()` draws a seeded random order.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from ..data import Split
from ..data.validate import InputError, check_budget, check_splits
from ..methods.registry import M
from ..models.base import ModelAdapter
from ..models.refit import Accuracy
from ..data.scores import Scores
from .curves import removal_curve

Scorer = Callable[[ModelAdapter, Split, Split, int], Scores]


def method_scorer(method: str, **options) -> Scorer:
    """A scorer running ``influent.score(model, train, Utility(valid), method, seed=seed, **options)``."""

    def scorer(model: ModelAdapter, train: Split, valid: Split, seed: int) -> Scores:
        from ..api.verbs import score
        from ..targets import Utility

        return score(model, train, target=Utility(valid), method=method, seed=seed, **options)

    scorer.__name__ = f"score_{method}"
    return scorer


def random_scorer() -> Scorer:
    """Random removal: standard-normal values from the seed (the reference every method must beat)."""

    def scorer(model: ModelAdapter, train: Split, valid: Split, seed: int) -> Scores:
        rng = np.random.default_rng(seed)
        return Scores(rng.standard_normal(len(train)), M.RANDOM, train.ids, settings={"seed": seed})

    return scorer


def trim_curve(model: ModelAdapter, train: Split, test: Split, scores: Scores, budgets: Sequence[int],
               warm_start: bool = False, n_jobs: int = 1) -> list[float]:
    """Test accuracy after removing the ``b`` lowest-valued samples and refitting, for each budget ``b``
    (b = 0 is the model as given, not refit); `evaluation.curves.removal_curve` does the refits."""
    counts = [check_budget(b, len(train), "budget") for b in budgets]
    return removal_curve(model, train, scores, counts, Accuracy(test), refit_at_zero=False, warm_start=warm_start,
                         n_jobs=n_jobs).curves["lowest"]


def trimming_experiment(make_splits: Callable[[int], dict[str, Split]], make_model: Callable[[int], ModelAdapter],
                        scorers: dict[str, Scorer], budgets: Sequence[int], seeds: Iterable[int],
                        progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run the trimming protocol: for every seed, build the splits (``train``, ``valid``, ``test``) and
    fit ``make_model(seed)`` on train; score with every scorer; for every budget remove the lowest-valued
    samples, refit, and measure test accuracy.

    Returns a long table with columns seed, method, budget, accuracy, seconds (scoring time).
    """
    budgets = [int(b) for b in budgets]
    if not scorers:
        raise InputError("trimming: give at least one scorer")
    rows = []
    for seed in seeds:
        splits = make_splits(seed)
        check_splits(splits, ("train", "valid", "test"), "trimming: make_splits")
        train, valid, test = splits["train"], splits["valid"], splits["test"]
        model = make_model(seed).fit(train)
        for name, scorer in scorers.items():
            t0 = time.perf_counter()
            s = scorer(model, train, valid, seed)
            secs = time.perf_counter() - t0
            for b, acc in zip(budgets, trim_curve(model, train, test, s, budgets)):
                rows.append({"seed": seed, "method": name, "budget": b, "accuracy": acc, "seconds": secs})
        if progress is not None:
            progress(f"seed {seed} done")
    return pd.DataFrame(rows)


def wins_table(results: pd.DataFrame, a: str = M.FI, b: str = M.IV) -> pd.DataFrame:
    """Per budget: mean test accuracy (in %) of every method, and the number of seeds where ``a``'s
    accuracy is strictly higher than ``b``'s (``wins``), equal (``ties``) and lower (``losses``)."""
    piv = results.pivot_table(index=["budget", "seed"], columns="method", values="accuracy")
    for m in (a, b):
        if m not in piv.columns:
            raise InputError(f"wins_table: no results for method {m!r}; have {list(piv.columns)}")
    out = []
    for budget, g in piv.groupby(level="budget"):
        row = {"budget": budget, "n_seeds": len(g)}
        for m in piv.columns:
            row[f"acc_{m}"] = 100 * g[m].mean()
        row["wins"] = int((g[a] > g[b]).sum())
        row["ties"] = int((g[a] == g[b]).sum())
        row["losses"] = int((g[a] < g[b]).sum())
        out.append(row)
    return pd.DataFrame(out)


def format_wins(table: pd.DataFrame, a: str = M.FI, b: str = M.IV, paper: dict | None = None,
                title: str = "") -> str:
    """The paper's format: one row per budget with mean accuracies, '<a> beats <b>' seed counts, and
    (optionally) the paper's numbers beside ours: ``paper = {budget: (acc_a, acc_b, wins)}`` (numbers or
    strings such as a range "89.9-90.3")."""
    cell = lambda v: f"{v:>12.2f}" if isinstance(v, (int, float)) else f"{v!s:>12}"
    methods = [c[4:] for c in table.columns if c.startswith("acc_")]
    head = ["b"] + [f"{m.upper()} acc" for m in methods] + [f"{a.upper()} beats {b.upper()}", "ties"]
    if paper:
        head += [f"paper {a.upper()}", f"paper {b.upper()}", "paper beats"]
    lines = [title] if title else []
    lines.append(" | ".join(f"{h:>12}" for h in head))
    for _, r in table.iterrows():
        cells = [f"{int(r['budget']):>12}"] + [f"{r[f'acc_{m}']:>12.2f}" for m in methods]
        cells += [f"{int(r['wins']):>9}/{int(r['n_seeds']):<2}", f"{int(r['ties']):>12}"]
        if paper:
            pa = paper.get(int(r["budget"]))
            cells += [cell(pa[0]), cell(pa[1]), cell(pa[2])] if pa else [f"{'-':>12}"] * 3
        lines.append(" | ".join(cells))
    return "\n".join(lines)
