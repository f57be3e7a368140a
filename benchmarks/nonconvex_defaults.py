"""Influence on a non-convex network: the old default (exact Hessian, damping 0) against the new default
(EK-FAC Gauss-Newton curvature + the 0.1 x mean-eigenvalue damping rule, `Job.solver`), the exact
Gauss-Newton with the same damping, and LiSSA on the indefinite Hessian, side by side in one run.

Task: a 1-hidden-layer MLP (`TabularMLP`, float64) on a bundled table with 10% of the training labels flipped
uniformly; every method scores the training set against the validation loss (target "utility"). Columns:
detection ROC AUC of the flipped labels (lowest value first), the fraction of samples with a negative value
("look harmful" in the report), and seconds (single-threaded, on a shared machine: compare within a row
set only). Run: ``OMP_NUM_THREADS=1 python benchmarks/nonconvex_defaults.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import torch

import influent as inf
from influent.data.datasets import load
from influent.evaluation.detection import detection
from influent.evaluation.noisy import flip_labels

SETTINGS = {
    "old default: exact Hessian, damping 0": dict(solver="exact", damping=0.0),
    "new default: EK-FAC + damping rule": dict(),
    "exact GGN + damping rule": dict(solver="exact", solver_options={"curvature": "ggn"}),
    "lissa on the Hessian (damping 1e-3)": dict(solver="lissa", damping=1e-3, solver_options={"scale": "auto", "depth": 300}),
}


def run(dataset: str, hidden: int, seed: int) -> list[dict]:
    parts = load(dataset, seed=seed)
    train, valid = parts["train"], parts["valid"]
    noisy, _ = flip_labels(train.y, 0.1, "uniform", seed)
    flipped = noisy != train.y
    train = train.with_labels(noisy)
    model = inf.models.TabularMLP(hidden=(hidden,), dtype=torch.float64, init_seed=seed).fit(train)
    rows = []
    for name, opts in SETTINGS.items():
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = inf.score(model, train, target=valid, method="if", **opts)
        d = detection(s, flipped)
        rows.append({"data": dataset, "seed": seed, "p": model.n_params(), "setting": name, "auc": d.auc,
                     "negative_fraction": float(np.mean(s.values < 0)), "damping": s.settings.get("damping"),
                     "warned": any("negative" in str(w.message) for w in caught),
                     "seconds": time.perf_counter() - t0})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seeds = [0] if args.quick else [0, 1, 2]
    rows = []
    for dataset, hidden in (("digits", 32), ("breast-cancer", 16)):
        for seed in seeds:
            rows += run(dataset, hidden, seed)
    df = pd.DataFrame(rows)
    table = df.groupby(["data", "p", "setting"], sort=False).agg(
        auc=("auc", "mean"), negative_fraction=("negative_fraction", "mean"), damping=("damping", "mean"),
        warned=("warned", "mean"), seconds=("seconds", "mean")).reset_index()
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"seeds: {seeds}; 10% uniform label flips; single-threaded")


if __name__ == "__main__":
    main()
