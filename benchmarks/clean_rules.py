"""How `influent.clean` decides, measured: its decision rules side by side against cleanlab, on test data.

12 settings: digits (900 train / 450 valid), a generated 4-class table (700 / 400) and breast cancer (300 /
135), 2 seeds, 10% and 20% of the training labels flipped uniformly to another class; validation labels
clean. For each rule, the share of the noisy-to-oracle test-accuracy gap it recovers (oracle: the flipped
samples removed), averaged over the settings with a gap above half a point, how often it is below cleanlab,
and how often it is worse than the noisy model. cleanlab: `find_label_issues` on 5-fold out-of-sample
probabilities of scikit-learn's logistic regression, drop, refit. One thread (OMP_NUM_THREADS=1, n_jobs=1);
logistic regression C = 1. Results in docs/actions.md.

    OMP_NUM_THREADS=1 python benchmarks/clean_rules.py
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.preprocessing import StandardScaler

import influent as inf
from influent.models import SklearnLogistic

RULES = {"sequence, both (default)": {}, "sequence, accuracy": {"evidence": "accuracy"},
         "bonferroni, accuracy": {"evidence": "accuracy", "guard": "bonferroni"}}
SEEDS = 2


def tables():
    X, y = load_digits(return_X_y=True)
    yield "digits", X / 16.0, y, (900, 450)
    X, y = make_classification(1500, 20, n_informative=10, n_classes=4, n_clusters_per_class=1, random_state=0)
    yield "4-class table", StandardScaler().fit_transform(X), y, (700, 400)
    X, y = load_breast_cancer(return_X_y=True)
    yield "breast cancer", StandardScaler().fit_transform(X), y, (300, 135)


def main() -> None:
    from cleanlab.filter import find_label_issues

    torch.set_num_threads(1)
    share = {k: [] for k in [*RULES, "cleanlab"]}
    below, worse = {k: 0 for k in RULES}, {k: 0 for k in [*RULES, "cleanlab"]}
    for name, X, y, (n_tr, n_va) in tables():
        for seed in range(SEEDS):
            for rate in (0.1, 0.2):
                idx = np.random.default_rng(seed).permutation(len(X))
                tr, va, te = idx[:n_tr], idx[n_tr:n_tr + n_va], idx[n_tr + n_va:]
                train, valid, test = (inf.from_arrays(X[i], y[i]) for i in (tr, va, te))
                rng = np.random.default_rng(seed + 10)
                flip = rng.choice(n_tr, int(rate * n_tr), replace=False)
                K = np.unique(y)
                yn = train.y.copy()
                yn[flip] = [rng.choice(K[K != v]) for v in yn[flip]]
                noisy = train.with_labels(yn)
                model = SklearnLogistic().fit(noisy)
                base = model.accuracy(test)
                gap = SklearnLogistic().fit(train.without(flip)).accuracy(test) - base
                labels = np.searchsorted(K, yn)
                P = cross_val_predict(LogisticRegression(max_iter=5000), noisy.X, labels, cv=5, method="predict_proba")
                cl = SklearnLogistic().fit(noisy.without(np.flatnonzero(find_label_issues(labels, P)))).accuracy(test)
                got = {"cleanlab": cl}
                for rule, kw in RULES.items():
                    res = inf.clean(model, noisy, valid, n_jobs=1, **kw)
                    got[rule] = SklearnLogistic().fit(res.train, sample_weight=res.weights).accuracy(test)
                for k, acc in got.items():
                    worse[k] += acc < base - 1e-12
                    if gap > 0.005:
                        share[k].append((acc - base) / gap)
                    if k in below and acc < cl - 1e-12:
                        below[k] += 1
                print(f"{name:14s} seed {seed} {rate:.0%}: noisy {base:.3f} gap {gap:+.3f} "
                      + " ".join(f"{k.split(' (')[0]}={v:.3f}" for k, v in got.items()), flush=True)
    print("\n| rule | share of the gap recovered (mean) | settings below cleanlab | settings worse than noisy |")
    print("| --- | --- | --- | --- |")
    for k in [*RULES, "cleanlab"]:
        n = 3 * SEEDS * 2
        print(f"| {k} | {np.mean(share[k]):.2f} | {below.get(k, '—')} of {n} | {worse[k]} of {n} |")


if __name__ == "__main__":
    main()
