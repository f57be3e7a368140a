"""TMC-Shapley (Ghorbani & Zou 2019): cost of truncation and of parallel refits, and what the values find.

Breast cancer (scikit-learn), 100 training samples with 10 flipped labels, 100 validation samples,
logistic regression (C = 1); utility = validation accuracy. One run compares, on the same permutations
(seed 0): no truncation, the paper's truncation (tolerance 0.01, patience 1) and the authors' code's
(patience 5), in-process and with 2 worker processes; leave-one-out retraining as the reference peer.
Columns: refits, wall seconds, Spearman to the untruncated estimate, AUC for finding the flipped labels.

    python benchmarks/tmc_shapley.py            # 50 permutations (about 2 minutes single-threaded)
    python benchmarks/tmc_shapley.py --quick    # 10 permutations
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import influent as inf  # noqa: E402
from influent.data.datasets import load_breast_cancer  # noqa: E402
from influent.evaluation.detection import detection  # noqa: E402
from influent.evaluation.noisy import flip_labels  # noqa: E402

torch.set_num_threads(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--permutations", type=int, default=None)
    args = ap.parse_args()
    T = args.permutations or (10 if args.quick else 50)
    d = load_breast_cancer({"train": 100, "valid": 100, "test": None}, seed=0)
    y, noisy = flip_labels(d["train"].y, 0.1, seed=0)
    train, valid = d["train"].with_labels(y), d["valid"]
    model = inf.models.SklearnLogistic(C=1.0).fit(train)

    rows, ref = [], None
    runs = [("no truncation (tolerance 0)", dict(tolerance=0.0)),
            ("paper: tolerance 0.01, patience 1", dict(tolerance=0.01)),
            ("authors' code: tolerance 0.01, patience 5", dict(tolerance=0.01, patience=5)),
            ("paper, n_jobs=2", dict(tolerance=0.01, n_jobs=2))]
    for label, kw in runs:
        t0 = time.perf_counter()
        s = inf.score(model, train, target=valid, method="tmc-shapley", permutations=T, seed=0, **kw)
        wall = time.perf_counter() - t0
        ref = s.values if ref is None else ref
        rows.append((label, s.settings["n_refits"], s.settings["mean_truncation"], wall,
                     wall / max(1, s.settings["n_refits"]) * 1e3, spearmanr(s.values, ref)[0],
                     detection(s, noisy).auc))
    t0 = time.perf_counter()
    loo = inf.score(model, train, target=valid, method="loo")
    wall = time.perf_counter() - t0
    rows.append(("leave-one-out (peer; values = rise of val. loss)", len(train), float("nan"), wall,
                 wall / len(train) * 1e3, spearmanr(loo.values, ref)[0], detection(loo, noisy).auc))
    table = pd.DataFrame(rows, columns=["run", "refits", "mean truncation", "wall s", "ms / refit",
                                        "Spearman to untruncated", "AUC flipped"])
    print(f"TMC-Shapley, breast cancer: {len(train)} train ({noisy.sum()} flipped) / {len(valid)} valid, "
          f"logistic regression C=1, utility = validation accuracy, {T} permutations, seed 0; single-threaded")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
