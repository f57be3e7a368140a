"""`influent.clean` on small tables with flipped labels, against the oracle (flips removed) and cleanlab
(`find_label_issues` on 5-fold out-of-sample probabilities, drop, refit), all measured in one run.

One thread (OMP_NUM_THREADS=1, torch 1 thread, n_jobs=1). Logistic regression (C = 1) on standardised
features; each table is split into train / valid / test with seed 0, and half of one class's training
labels are flipped (to the other classes uniformly, or to one class where said). Prints one table; the
results are in docs/actions.md.

    OMP_NUM_THREADS=1 python benchmarks/clean_tables.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine, make_blobs
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.preprocessing import StandardScaler

import influent as inf
from influent.models import SklearnLogistic


def tables():
    X, y = load_digits(return_X_y=True)
    m = y < 5
    yield "digits 0-4 (unit test), 3s -> others", X[m] / 16.0, y[m], (400, 250), 3, None
    yield "digits 0-4, no flips", X[m] / 16.0, y[m], (400, 250), None, None
    yield "digits 0-9, 3s -> others", X / 16.0, y, (900, 450), 3, None
    Xw, yw = load_wine(return_X_y=True)
    yield "wine, class 1 -> others", StandardScaler().fit_transform(Xw), yw, (100, 39), 1, None
    Xb, yb = make_blobs(900, n_features=5, centers=3, cluster_std=2.0, random_state=0)
    yield "blobs (3 classes), 0 -> 1", Xb, yb, (300, 300), 0, 1
    Xc, yc = load_breast_cancer(return_X_y=True)
    yield "breast cancer, 0 -> 1", StandardScaler().fit_transform(Xc), yc, (300, 135), 0, 1
    yield "breast cancer, no flips", StandardScaler().fit_transform(Xc), yc, (300, 135), None, None


def cleanlab_drop(noisy, C):
    from cleanlab.filter import find_label_issues

    labels = np.searchsorted(np.unique(noisy.y), noisy.y)
    proba = cross_val_predict(LogisticRegression(C=C, max_iter=5000), noisy.X, labels, cv=5, method="predict_proba")
    flag = find_label_issues(labels, proba)
    return noisy.without(np.flatnonzero(flag)), int(flag.sum())


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for name, X, y, (n_tr, n_va), cls, to in tables():
        idx = np.random.default_rng(0).permutation(len(X))
        tr, va, te = idx[:n_tr], idx[n_tr:n_tr + n_va], idx[n_tr + n_va:]
        train, valid, test = (inf.from_arrays(X[i], y[i]) for i in (tr, va, te))
        yn = train.y.copy()
        flip = np.zeros(0, dtype=np.int64)
        if cls is not None:
            rng = np.random.default_rng(0)
            members = np.flatnonzero(yn == cls)
            flip = rng.choice(members, len(members) // 2, replace=False)
            yn[flip] = to if to is not None else rng.choice([k for k in np.unique(y) if k != cls], len(flip))
        noisy = train.with_labels(yn)
        model = SklearnLogistic(C=1.0).fit(noisy)
        t0 = time.perf_counter()
        res = inf.clean(model, noisy, valid, n_jobs=1)
        secs = time.perf_counter() - t0
        after = SklearnLogistic(C=1.0).fit(res.train, sample_weight=res.weights).accuracy(test)
        oracle = SklearnLogistic(C=1.0).fit(train.without(flip)).accuracy(test) if len(flip) else float("nan")
        cl_split, cl_n = cleanlab_drop(noisy, 1.0)
        cl = SklearnLogistic(C=1.0).fit(cl_split).accuracy(test)
        hit = int(np.isin(res.positions, flip).sum())
        rows.append((name, len(flip), res.n_issues, f"{res.action} {res.budget} ({hit} flipped)" if res.budget else "none",
                     f"{res.gain:+.1f} [{res.gain_ci[0]:+.1f}, {res.gain_ci[1]:+.1f}]", model.accuracy(test), after,
                     oracle, f"{cl:.3f} ({cl_n})", secs))
    head = ("table", "flips", "counted", "clean's choice", "valid accuracy gain [bounds]", "test noisy", "test clean",
            "test oracle", "test cleanlab (dropped)", "clean s")
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.3f} | {r[6]:.3f} | {r[7]:.3f} | {r[8]} | {r[9]:.1f} |")


if __name__ == "__main__":
    main()
