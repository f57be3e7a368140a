"""The README quick start (breast cancer, 400 x 30, `SklearnLogistic(C=1.0)`, `if` with the exact Hessian,
`ip` attribution) on the features as loaded and standardised with the training statistics: seconds per step
and lbfgs iterations, one run after a warm-up, one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)).

    OMP_NUM_THREADS=1 python benchmarks/quickstart_scaling.py
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer

import influent as inf

torch.set_num_threads(1)


def run(X: np.ndarray, y: np.ndarray) -> dict:
    t0 = time.perf_counter()
    train, valid = inf.from_arrays(X[:400], y[:400]), inf.from_arrays(X[400:], y[400:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = inf.models.SklearnLogistic(C=1.0).fit(train)
    t1 = time.perf_counter()
    s = inf.score(model, train, target=inf.targets.Utility(valid), method="if", solver="exact", damping=0.0)
    inf.attribute(model, train, valid, method="ip")
    t2 = time.perf_counter()
    return {"fit": t1 - t0, "score": t2 - t1, "total": t2 - t0, "iters": int(model.estimator_.n_iter_.max()),
            "valid_acc": model.accuracy(valid), "finite": bool(np.isfinite(s.values).all())}


def main() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    Z = (X - X[:400].mean(0)) / X[:400].std(0)
    run(Z, y)  # warm-up: torch's first calls (vmap, linear algebra) pay one-time costs, not reported
    print("| features | lbfgs iterations | fit (s) | score + attribute (s) | total (s) | valid accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, data in (("as loaded", X), ("standardised (train mean/std)", Z)):
        r = run(data, y)
        print(f"| {name} | {r['iters']} | {r['fit']:.2f} | {r['score']:.2f} | {r['total']:.2f} | {r['valid_acc']:.3f} |")


if __name__ == "__main__":
    main()
