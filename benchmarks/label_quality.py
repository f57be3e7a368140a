"""`label-quality` against calling cleanlab directly, in the same run (one thread: torch.set_num_threads(1),
OMP_NUM_THREADS=1).

Breast cancer (569 x 30, unscaled, as the README quick start reads it) with 10% of the labels flipped
(seed 0), and the same data standardised. Rows:

- influent: ``influent.score(SklearnLogistic(), method="label-quality")`` (5-fold out-of-sample probabilities
  from refits of the model, cleanlab's self-confidence), timed without the initial fit;
- direct cleanlab: ``cross_val_predict(LogisticRegression(), cv=5, method="predict_proba")`` and
  ``cleanlab.rank.get_label_quality_scores`` (scikit-learn's default tolerance and 100 iterations: on unscaled
  data L-BFGS stops unconverged);
- direct, converged: the same with the model's own settings (tol 1e-10, 10,000 iterations), the reference
  for the probabilities.

Columns: seconds, AUC of the flipped labels (lower score = suspect), and the largest difference of the
out-of-sample probabilities from the converged reference (influent's folds are the reference's folds).

Usage: python benchmarks/label_quality.py
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

import influent as inf
from influent.methods import label_quality as lq


def main() -> None:
    from cleanlab.rank import get_label_quality_scores

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    X, y = load_breast_cancer(return_X_y=True)
    flip = np.random.default_rng(0).random(len(y)) < 0.1
    noisy = np.where(flip, 1 - y, y)
    print(f"{'data':<14} {'run':<22} {'seconds':>8} {'AUC':>7} {'max |dp|':>10}")
    for name, Z in (("unscaled", X), ("standardised", (X - X.mean(0)) / X.std(0))):
        folds = StratifiedKFold(5, shuffle=True, random_state=0)
        t = time.perf_counter()
        ref = cross_val_predict(LogisticRegression(tol=1e-10, max_iter=10_000), Z, noisy, cv=folds, method="predict_proba")
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        direct = cross_val_predict(LogisticRegression(), Z, noisy, cv=folds, method="predict_proba")
        q = get_label_quality_scores(noisy, direct)
        t_direct = time.perf_counter() - t
        train = inf.from_arrays(Z, noisy)
        model = inf.models.SklearnLogistic().fit(train)
        lq._CACHE.clear()
        t = time.perf_counter()
        s = inf.score(model, train, method="label-quality", seed=0)
        t_inf = time.perf_counter() - t
        p = lq.out_of_sample_proba(model, train, 5, 0)
        auc = lambda v: roc_auc_score(flip, -np.asarray(v))
        for run, sec, a, dp in (("influent", t_inf, auc(s.values), np.abs(p - ref).max()),
                                ("direct cleanlab", t_direct, auc(q), np.abs(direct - ref).max()),
                                ("direct, converged", t_ref, auc(get_label_quality_scores(noisy, ref)), 0.0)):
            print(f"{name:<14} {run:<22} {sec:8.2f} {a:7.4f} {dp:10.2e}")


if __name__ == "__main__":
    main()
