"""How many labels are wrong? Confident learning's two counts (Northcutt et al. 2021, sec. 3.1 off-diagonal,
sec. 3.2 calibrated; `influent.methods.mislabel.estimated_count`) on three kinds of out-of-sample
probabilities of the same model (5-fold cross-validation; `mislabel`'s leave-one-out without rounds; its
default, the checked rounds) against the true number of flips, on the 30 logistic settings of
`benchmarks/mislabel.py` (same data, splits and flips). One thread.

    OMP_NUM_THREADS=1 python benchmarks/label_counts.py [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mislabel as B  # noqa: E402  (the settings, loaders and noise patterns)
from influent.methods.label_quality import out_of_sample_proba  # noqa: E402
from influent.methods.mislabel import estimated_count, leave_one_out  # noqa: E402
from influent.models import SklearnLogistic  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    ratios: dict[str, list[float]] = {}
    for data, kind, pattern, rate in B.settings(False):
        if kind != "logistic":
            continue
        train, _ = B.load(data, a.seed, False)
        noisy, mask = B.corrupt(train, pattern, rate, a.seed)
        model = SklearnLogistic(C=1.0).fit(noisy)
        labels = np.searchsorted(model.classes_, noisy.y)
        probs = {"5-fold CV": out_of_sample_proba(model, noisy, 5, a.seed),
                 "leave-one-out, rounds=0": leave_one_out(model, noisy, 0.0, "loo", 512, 0).proba(),
                 "leave-one-out, default (checked rounds)":
                     leave_one_out(model, noisy, 0.0, "loo", 512, 5, 1, 5, "float32", True).proba()}
        line = []
        for name, P in probs.items():
            for method in ("off-diagonal", "calibrated"):
                c = estimated_count(P, labels, method)
                ratios.setdefault(f"| {name} | {method} |", []).append(c / mask.sum())
                line.append(str(c))
        print(f"{data}/{pattern}/{rate:.0%}: flips {mask.sum()}, counts {' '.join(line)}", flush=True)
    print("\n| probabilities | count | within 25% of the flips | median estimate / flips | mean abs. relative error |")
    print("| --- | --- | --- | --- | --- |")
    for key, r in ratios.items():
        r = np.asarray(r)
        print(f"{key} {int((abs(r - 1) <= 0.25).sum())} of {len(r)} | {np.median(r):.2f} | {abs(r - 1).mean():.2f} |")


if __name__ == "__main__":
    main()
