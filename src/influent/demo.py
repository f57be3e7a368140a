"""End-to-end demo on bundled data: flip some labels, score every sample, find and trim the harmful ones."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from .api import score
from .data import Split, from_arrays
from .models import SklearnLogistic
from .targets import Utility


def noisy_digits(noise: float = 0.1, seed: int = 0) -> tuple[Split, Split, Split, np.ndarray]:
    """scikit-learn digits (pixels / 16) split 1000 / 300 / rest, with a fraction `noise` of the
    training labels flipped to another class. Returns train, valid, test and the flipped mask."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(X))
    tr, va, te = idx[:1000], idx[1000:1300], idx[1300:]
    y_tr = y[tr].copy()
    flip = rng.random(len(tr)) < noise
    y_tr[flip] = (y_tr[flip] + rng.integers(1, 10, flip.sum())) % 10
    return (from_arrays(X[tr], y_tr, name="digits-train"), from_arrays(X[va], y[va], name="digits-valid"),
            from_arrays(X[te], y[te], name="digits-test"), flip)


def run_demo(out: str | Path | None = None, noise: float = 0.1, seed: int = 0, methods: tuple[str, ...] = ("if", "ip", "self-if"),
             budget: int | None = None, echo: Any = print) -> dict[str, Any]:
    """Score noisy digits with each method, report how well the flipped labels rank as most harmful,
    trim the `budget` lowest-valued samples (default: as many as were flipped), refit, report accuracy."""
    train, valid, test, flipped = noisy_digits(noise, seed)
    model = SklearnLogistic(C=0.1).fit(train)
    base_acc = model.accuracy(test)
    budget = int(flipped.sum()) if budget is None else int(budget)
    echo(f"digits: {len(train)} train ({flipped.sum()} labels flipped), {len(valid)} valid, {len(test)} test; "
         f"logistic regression (C=0.1), test accuracy {base_acc:.3f}")
    rows = []
    for method in methods:
        t0 = time.perf_counter()
        s = score(model, train, target=Utility(valid), method=method, seed=seed)
        secs = time.perf_counter() - t0
        auc = roc_auc_score(flipped, -s.values)
        harm = s.most_harmful(budget)
        precision = float(flipped[harm].mean())
        acc = model.refit(train.without(harm)).accuracy(test)
        rows.append({"method": method, "seconds": secs, "auc": auc, "precision_at_budget": precision,
                     "test_acc_after_trim": acc})
        if out is not None:
            s.save(Path(out) / f"scores-{method}.parquet")
    rng = np.random.default_rng(seed)
    rand = rng.choice(len(train), budget, replace=False)
    rows.append({"method": "random", "seconds": 0.0, "auc": 0.5, "precision_at_budget": float(flipped[rand].mean()),
                 "test_acc_after_trim": model.refit(train.without(rand)).accuracy(test)})
    echo(f"{'method':<10}{'seconds':>9}{'AUC':>8}{'prec@' + str(budget):>10}{'test acc after trim':>22}")
    for r in rows:
        echo(f"{r['method']:<10}{r['seconds']:>9.2f}{r['auc']:>8.3f}{r['precision_at_budget']:>10.3f}"
             f"{r['test_acc_after_trim']:>22.3f}")
    return {"base_accuracy": base_acc, "budget": budget, "rows": rows}
