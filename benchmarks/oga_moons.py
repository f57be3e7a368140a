"""[OGA] two-moons reproduction: Isolation Forest on per-sample gradients of an MLP (two hidden ReLU layers
of 32) finds 20 flipped labels among 250; trimming them lifts test accuracy. Printed beside the paper's numbers.

Usage:
    python benchmarks/oga_moons.py [--quick]   (the same as: influent bench oga-moons [--quick])
    python benchmarks/oga_moons.py --regimes   the training-regime study behind TabularMLP's defaults
                                               (30 seeds x 8 regimes, about 15 minutes on two cores)
"""

import sys

import numpy as np
import pandas as pd

from influent.evaluation.suites import print_table, run_suite

# (label, Adam learning rate, full-batch epochs, weight decay)
REGIMES = [
    ("lr 1e-2, 100 steps, wd 1e-4 (old default)", 1e-2, 100, 1e-4),
    ("lr 1e-2, 100 steps, wd 1e-3 (default)", 1e-2, 100, 1e-3),
    ("lr 1e-2, 100 steps, wd 3e-3", 1e-2, 100, 3e-3),
    ("lr 3e-3, 200 steps, wd 1e-3", 3e-3, 200, 1e-3),
    ("lr 3e-3, 300 steps, wd 1e-3", 3e-3, 300, 1e-3),
    ("lr 1e-3, 300 steps, wd 1e-3", 1e-3, 300, 1e-3),
    ("lr 1e-2, 1000 steps, wd 1e-4", 1e-2, 1000, 1e-4),
    ("lr 1e-2, 1000 steps, wd 1e-3", 1e-2, 1000, 1e-3),
]


def regime_study(seeds=range(100, 130)) -> pd.DataFrame:
    """Detection (precision@20) of the Isolation Forest and the L2 norm on last-layer gradients, and test
    accuracy before trimming, for each training regime of the 32-32 TabularMLP (seeds disjoint from the suite's)."""
    import influent as inf
    from influent.evaluation.detection import detection
    from influent.evaluation.noisy import moons

    rows = []
    for label, lr, epochs, wd in REGIMES:
        forest, l2, acc = [], [], []
        for seed in seeds:
            train, test, flipped = moons(seed)
            m = inf.models.TabularMLP(hidden=(32, 32), weight_decay=wd, init_seed=seed,
                                      train=inf.models.TrainConfig(lr=lr, epochs=epochs)).fit(train)
            forest.append(detection(inf.score(m, train, method="outlier", seed=seed), flipped).precision_at_k)
            l2.append(detection(inf.score(m, train, method="outlier", detector="l2"), flipped).precision_at_k)
            acc.append(m.accuracy(test))
        f = np.array(forest)
        rows.append({"regime (full-batch Adam)": label, "iforest detection": f.mean(),
                     "+- s.e.": f.std() / np.sqrt(len(f)), "iforest min": f.min(), "L2 detection": np.mean(l2),
                     "test acc before trim": np.mean(acc)})
    df = pd.DataFrame(rows)
    df.attrs["notes"] = [f"seeds {seeds.start}..{seeds.stop - 1}; detection = precision@20 on last-layer gradients"]
    return df


if __name__ == "__main__":
    if "--regimes" in sys.argv[1:]:
        print_table("oga-moons training regimes", regime_study())
    else:
        print_table("oga-moons", run_suite("oga-moons", quick="--quick" in sys.argv[1:]))
