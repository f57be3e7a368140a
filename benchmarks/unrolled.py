"""Unrolled metagradients (method "unrolled", issue 26): LDS at 1% removals, cost, memory.

Usage: OMP_NUM_THREADS=1 python benchmarks/unrolled.py [--quick] [--out docs/unrolled.csv]

One thread (torch.set_num_threads(1)). Two models trained by influent's trainer with minibatch SGD
(momentum 0.9) on scikit-learn digits (X / 16, a fixed permutation: the first n samples train, the next m
test), batches of 32, lr 0.05, weight decay 1e-3: logistic regression (a torch nn.Linear, cross-entropy)
and 64-unit MLPs with tanh or ReLU (momentum 0.9), and the ReLU MLP with plain SGD (momentum 0).

LDS: `n_sets` random sets of 1% of the training samples are removed (weight 0: the same recipe, seed and
batch order, `refit_many` with weights) and the test losses of the retrained models recorded; for each
method the summed attributions of the kept samples are correlated (Spearman, per test sample, averaged)
with the negated retrained losses (`evaluation.attribution.lds_score`). Methods: unrolled, if (influent's
default solver for the model), tracin (a checkpoint every epoch), ip, all on the same fitted model.

Smoothness: `score(method="unrolled", smoothness=3)` (3 random removal sets of 1% and of 5%, target = the
mean test loss): sum |predicted - actual| / sum |actual| per fraction.

Cost (after one warm-up call, training and scoring interleaved, best of 3 each): seconds of one training run, of `score(method="unrolled")` (one target: the mean test loss) and of
the pairwise matrix, each also as a multiple of the training run. Memory: peak resident memory added by
one `score(method="unrolled")`, in a fresh process per checkpoint spacing (1, sqrt(T), T), against the
same fit.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import time

import numpy as np
import torch
from torch import nn

import influent as inf
from influent.evaluation.attribution import LDSGroundTruth, lds_score
from influent.models import TorchAdapter, TrainConfig, TrainingRecorder
from influent.models.refit import PerSampleLoss, refit_many


def data(n: int, m: int):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))
    X, y = X[perm] / 16.0, y[perm]
    return inf.data.from_arrays(X[:n], y[:n]), inf.data.from_arrays(X[n:n + m], y[n:n + m])


KINDS = {  # name: (activation or None for logistic regression, SGD momentum)
    "logistic": (None, 0.9),
    "mlp-tanh": (nn.Tanh, 0.9),
    "mlp-relu": (nn.ReLU, 0.9),
    "mlp-relu-m0": (nn.ReLU, 0.0),
}


def make(kind: str, epochs: int, every: int | None = None, hidden: int = 64) -> TorchAdapter:
    torch.manual_seed(0)
    act, momentum = KINDS[kind]
    net = nn.Linear(64, 10) if act is None else nn.Sequential(nn.Linear(64, hidden), act(), nn.Linear(hidden, 10))
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=momentum, epochs=epochs, batch_size=32, seed=0,
                      record_every=every)
    return TorchAdapter(net, train=cfg, fitted=False, weight_decay=1e-3)


def timed(fn, repeat: int = 1):
    """(fn's result, the fastest of `repeat` wall-clock times in seconds)."""
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def lds_rows(kind: str, n: int, m: int, epochs: int, n_sets: int) -> list[dict]:
    train, test = data(n, m)
    model = make(kind, epochs)
    rec = TrainingRecorder(every=(n + 31) // 32)  # one TracIn checkpoint per epoch
    model.fit(train, recorder=rec)
    rng = np.random.default_rng(1)
    k = max(1, round(0.01 * n))
    keep = np.ones((n_sets, n), dtype=bool)
    for s in range(n_sets):
        keep[s, rng.choice(n, k, replace=False)] = False
    losses, t_truth = timed(lambda: refit_many(model, train, [np.arange(n)] * n_sets, PerSampleLoss(test),
                                               weights=[w.astype(float) for w in keep], n_jobs=1))
    truth = LDSGroundTruth(keep, np.stack(losses), 0.99, 1)
    rows = []
    inf.score(model, train, test, method="unrolled")  # warm-up: torch's first autograd calls load kernels
    t_train = t_score = math.inf
    for _ in range(3):  # interleaved, best of 3 each: the machine is shared, so load hits both alike
        t_train = min(t_train, timed(lambda: make(kind, epochs).fit(train))[1])
        t_score = min(t_score, timed(lambda: inf.score(model, train, test, method="unrolled"))[1])
    smooth = inf.score(model, train, test, method="unrolled", smoothness=3).settings["smoothness"]
    for method in ("unrolled", "if", "tracin", "ip"):
        A, t = timed(lambda: inf.attribute(model, train, test, method=method))
        res = lds_score(A, truth)
        rows.append({"model": kind, "n_train": n, "n_test": m, "steps": model.record_.steps, "method": method,
                     "lds_1pct": round(res.score, 3), "attribute_s": round(t, 2),
                     "attribute_x_train": round(t / t_train, 1), "train_s": round(t_train, 3),
                     "score_s": round(t_score, 3) if method == "unrolled" else None,
                     "score_x_train": round(t_score / t_train, 2) if method == "unrolled" else None,
                     "truth_s": round(t_truth, 1),
                     "smooth_relerr_1pct": round(smooth["0.01"]["relative_error"], 3) if method == "unrolled" else None,
                     "smooth_relerr_5pct": round(smooth["0.05"]["relative_error"], 3) if method == "unrolled" else None})
        print(rows[-1], flush=True)
    return rows


def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _memory_child(kind: str, n: int, epochs: int, every: int, hidden: int, q) -> None:
    torch.set_num_threads(1)
    train, test = data(n, 100)
    model = make(kind, epochs, every, hidden).fit(train)
    record_mb = sum(v.numel() * v.element_size() for st in model.record_.states.values()
                    for d in st.values() for v in d.values()) / 2**20
    before = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    _, t = timed(lambda: inf.score(model, train, test, method="unrolled"))
    q.put({"model": kind, "steps": model.record_.steps, "record_every": every, "n_states": len(model.record_.states),
           "hidden": hidden, "record_mb": round(record_mb, 1), "peak_extra_mb": round((_rss_kb("VmHWM") - before) / 1024, 1), "score_s": round(t, 2)})


def memory_rows(kind: str, n: int, epochs: int, hidden: int) -> list[dict]:
    steps = epochs * ((n + 31) // 32)
    rows = []
    ctx = mp.get_context("spawn")
    for every in (1, math.ceil(math.sqrt(steps)), steps):
        q = ctx.Queue()
        p = ctx.Process(target=_memory_child, args=(kind, n, epochs, every, hidden, q))
        p.start()
        rows.append(q.get())
        p.join()
        print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    n, m, epochs, n_sets = (300, 30, 5, 20) if a.quick else (1000, 100, 20, 50)
    rows = [r for kind in KINDS for r in lds_rows(kind, n, m, epochs, n_sets)]
    mem = memory_rows("mlp-tanh", n, epochs, 512)
    import pandas as pd

    print(markdown(rows))
    print()
    print(markdown(mem))
    if a.out:
        pd.DataFrame(rows).to_csv(a.out, index=False)
        with open(a.out.replace(".csv", "-memory.json"), "w") as f:
            json.dump(mem, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
