"""Diff-In benchmarks [DIFF]: one table per invocation.

    python benchmarks/diffin.py hvp      # finite-difference vs exact Hessian-vector products
    python benchmarks/diffin.py loo      # correlation with leave-one-out retraining (same SGD schedule), vs TracIn, IF
    python benchmarks/diffin.py delete   # predicted vs actual change of validation loss, random 1-10% deletions
    python benchmarks/diffin.py coreset  # test accuracy after training on the kept 10/30/50% (digits, MNIST subset)
    python benchmarks/diffin.py clean    # flipped-label detection and accuracy after removing 10% by self-influence

Add --quick for a CI-sized run (< 2 minutes each), --seeds N to average over N data/initialisation seeds.
Tables print as Markdown (docs/diffin.md holds the full runs). Runs on CPU with one thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

import influent as inf
import influent.data.datasets as ds
from influent.actions import diffin_tasks
from influent.methods.diffin import _Objective, diffin_parts, hvp
from influent.grads import flatten
from influent.models import TabularMLP, TorchAdapter, TrainConfig, TrainingRecorder
from influent.targets import Utility


def md_table(headers: list[str], rows: list[list[str]], title: str) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    sys.stdout.flush()


def mean_sd(xs: list[float], fmt: str = "{:+.2f}") -> str:
    xs = [x for x in xs if np.isfinite(x)]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return fmt.format(np.mean(xs)) + " ± " + fmt.format(np.std(xs)).lstrip("+")


def tanh_mlp(d: int, k: int, hidden: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, k))


# ---- 1. HVP error ----------------------------------------------------------------------------------------
def bench_hvp(args: argparse.Namespace) -> None:
    n = 200 if args.quick else 500
    parts = ds.load_digits(sizes={"train": n, "valid": 200, "test": None})
    train, valid = parts["train"], parts["valid"]
    epss = [1e-3] if args.quick else [1e-2, 1e-3, 1e-4, 1e-5]
    cfg = TrainConfig(optimizer="sgd", lr=0.2, epochs=10, batch_size=50)
    models = [("tanh MLP 64-16-10", torch.float64), ("tanh MLP 64-16-10", torch.float32), ("ReLU MLP 64-16-10", torch.float64)]
    rows = []
    for name, dtype in models:
        rec = TrainingRecorder(every=25)
        if name.startswith("tanh"):
            m = TorchAdapter(tanh_mlp(64, 10, 16, 0), dtype=dtype, weight_decay=1e-4, train=cfg)
        else:
            m = TabularMLP(hidden=(16,), dtype=dtype, weight_decay=1e-4, train=cfg, init_seed=0)
        m.fit(train, recorder=rec)
        target = Utility(valid)
        ex_t = diffin_parts(m, train, rec.checkpoints, target, hvp_kind="exact")
        ex_s = diffin_parts(m, train, rec.checkpoints, None, hvp_kind="exact")
        X, t = m.tensors(train)
        obj = _Objective(m, m.params())
        theta = flatten(rec.checkpoints[-1].params)
        g = torch.func.grad(obj.batch(X[:128], t[:128]))
        v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(0), dtype=dtype)
        exact_hv = hvp(g, theta, v, "exact")
        for eps in epss:
            fd_t = diffin_parts(m, train, rec.checkpoints, target, hvp_kind="fd", eps=eps)
            fd_s = diffin_parts(m, train, rec.checkpoints, None, hvp_kind="fd", eps=eps)
            r = lambda a, b: f"{np.linalg.norm(a - b) / np.linalg.norm(b):.1e}"  # noqa: E731
            hv = float((hvp(g, theta, v, "fd", eps) - exact_hv).norm() / exact_hv.norm())
            rows.append([name, str(dtype).replace("torch.", ""), f"{eps:g}", f"{hv:.1e}",
                         r(fd_t.batch_term, ex_t.batch_term), r(fd_t.sample_term, ex_t.sample_term),
                         r(fd_s.batch_term, ex_s.batch_term), r(fd_s.sample_term, ex_s.sample_term),
                         r(fd_t.raw(), ex_t.raw()), r(fd_s.raw(), ex_s.raw())])
    md_table(["model", "dtype", "eps", "H_B v (random v)", "v.H_B G_z", "v.H_z G_B", "G_z.H_B G_z", "G_z.H_z G_B",
              "Diff-In", "Self-Diff-In"], rows,
             f"Relative error |fd - exact| / |exact| of finite-difference HVPs (digits, n={n}, 4 checkpoints, "
             "proxy batch 128; per-sample terms stacked over samples and checkpoints)")


# ---- shared set-up for LOO and deletion -------------------------------------------------------------------
SCHEDULES = {  # full-batch gradient descent: (lr, steps, record every)
    "short (lr 0.01, 10 steps)": (0.01, 10, 1),
    "medium (lr 0.1, 50 steps)": (0.1, 50, 5),
    "long (lr 0.5, 200 steps)": (0.5, 200, 20),
}


def cancer(n: int, seed: int) -> tuple[inf.Split, inf.Split]:
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    idx = np.random.default_rng(seed).permutation(len(X))
    return inf.from_arrays(X[idx[:n]], y[idx[:n]]), inf.from_arrays(X[idx[n:n + 200]], y[idx[n:n + 200]])


def recorded_model(kind: str, train: inf.Split, schedule: tuple[float, int, int], seed: int):
    lr, steps, every = schedule
    cfg = TrainConfig(optimizer="sgd", lr=lr, epochs=steps, batch_size=None, seed=seed)
    if kind == "logistic regression":
        torch.manual_seed(seed)
        m = TorchAdapter(torch.nn.Linear(train.n_features, 2), dtype=torch.float64, train=cfg)
    else:
        m = TabularMLP(hidden=(16,), dtype=torch.float64, weight_decay=1e-4, train=cfg, init_seed=seed)
    rec = TrainingRecorder(every=every)
    return m.fit(train, recorder=rec), rec


METHODS = {  # label -> (method, options, use raw)
    "Diff-In": ("diffin", {}, False),
    "Diff-In, exact HVP": ("diffin", {"hvp": "exact"}, False),
    "Diff-In paper sign (raw)": ("diffin", {}, True),
    "Diff-In + first order": ("diffin", {"first_order": True}, False),
    "TracIn": ("tracin", {}, False),
    "IF": ("if", {"damping": 1e-3}, False),
}


def scores_for(m, train, valid, kind: str) -> dict[str, np.ndarray]:
    out = {}
    for label, (method, opts, raw) in METHODS.items():
        if method == "if" and kind != "logistic regression":
            opts = {**opts, "solver_options": {"curvature": "ggn"}}
        s = inf.score(m, train, target=valid, method=method, **opts)
        out[label] = s.raw if raw else s.values
    return out


def bench_loo(args: argparse.Namespace) -> None:
    n = 40 if args.quick else 100
    seeds = range(args.seeds)
    rows = []
    for kind in ("logistic regression", "MLP 30-16-2 (ReLU)"):
        for sname, sched in SCHEDULES.items():
            res: dict[str, list[tuple[float, float]]] = {k: [] for k in METHODS}
            for seed in seeds:
                train, valid = cancer(n, seed)
                m, _ = recorded_model(kind, train, sched, seed)
                base = m.loss_on(valid)
                loo = np.array([m.clone().fit(train.without([i])).loss_on(valid) - base for i in range(n)])
                for label, v in scores_for(m, train, valid, kind).items():
                    res[label].append((pearsonr(v, loo)[0], spearmanr(v, loo)[0]))
            rows.append([kind, sname] + [mean_sd([p for p, _ in res[k]]) + " / " + mean_sd([s for _, s in res[k]])
                                         for k in METHODS])
    md_table(["model", "schedule"] + list(METHODS), rows,
             f"Pearson / Spearman correlation with leave-one-out retraining under the same schedule (full-batch "
             f"gradient descent from the same initial weights, the same steps, sample removed); breast cancer, "
             f"n={n}, validation loss on 200 samples, {args.seeds} seed(s), mean ± sd")


def bench_delete(args: argparse.Namespace) -> None:
    n = 40 if args.quick else 100
    n_sets = 10 if args.quick else 30
    seeds = range(args.seeds)
    rows = []
    labels = [k for k in METHODS if "raw" not in k and "exact" not in k]
    for kind in ("logistic regression", "MLP 30-16-2 (ReLU)"):
        for sname, sched in SCHEDULES.items():
            res: dict[str, list[tuple[float, float]]] = {k: [] for k in labels + ["LOO sum"]}
            for seed in seeds:
                train, valid = cancer(n, seed)
                m, _ = recorded_model(kind, train, sched, seed)
                base = m.loss_on(valid)
                rng = np.random.default_rng(100 + seed)
                sizes = rng.integers(max(1, n // 100), max(2, n // 10) + 1, size=n_sets)
                sets = [rng.choice(n, size=k, replace=False) for k in sizes]
                actual = np.array([m.clone().fit(train.without(S)).loss_on(valid) - base for S in sets])
                loo = np.array([m.clone().fit(train.without([i])).loss_on(valid) - base for i in range(n)])
                vals = scores_for(m, train, valid, kind)
                vals["LOO sum"] = loo
                for label in res:
                    s = inf.Scores(vals[label], label, train.ids)
                    pred = diffin_tasks.delete(m, train, valid, sets, scores=s)
                    res[label].append((pearsonr(pred, actual)[0], np.polyfit(pred, actual, 1)[0]))
            rows.append([kind, sname] + [mean_sd([p for p, _ in res[k]]) + " (" + mean_sd([s for _, s in res[k]], "{:.2g}") + ")"
                                         for k in res])
    md_table(["model", "schedule"] + labels + ["sum of actual LOO"], rows,
             f"Data deletion: Pearson correlation (regression slope of actual on predicted) between the predicted "
             f"change of validation loss (centred sum of per-sample values, `diffin_tasks.delete`) and the actual "
             f"change after retraining without the set; {n_sets} random sets of 1-10% of n={n}, breast cancer, "
             f"{args.seeds} seed(s)")


# ---- coreset ----------------------------------------------------------------------------------------------
@dataclass
class CoresetSetup:
    name: str
    sizes: dict
    cfg: TrainConfig
    every: int


def same_steps(m: TabularMLP, split: inf.Split, fraction: float) -> TabularMLP:
    """Retrain from the same initial weights with the same number of SGD steps (epochs / fraction)."""
    c = m.clone()
    c.train_config = TrainConfig(**{**m.train_config.to_dict(), "epochs": int(round(m.train_config.epochs / fraction))})
    return c.fit(split)


def bench_coreset(args: argparse.Namespace) -> None:
    if args.quick:
        setups = [CoresetSetup("digits", {"train": 400, "valid": 200, "test": 400},
                               TrainConfig(optimizer="sgd", lr=0.1, epochs=10, batch_size=32), 25),
                  CoresetSetup("mnist", {"train": 600, "valid": 300, "test": 500},
                               TrainConfig(optimizer="sgd", lr=0.1, epochs=8, batch_size=32), 30)]
    else:
        setups = [CoresetSetup("digits", {"train": 1000, "valid": 300, "test": None},
                               TrainConfig(optimizer="sgd", lr=0.1, epochs=30, batch_size=32), 64),
                  CoresetSetup("mnist", {"train": 3000, "valid": 1000, "test": 1000},
                               TrainConfig(optimizer="sgd", lr=0.1, epochs=20, batch_size=64), 94)]
    fractions = (0.1, 0.3, 0.5)
    methods = {"Diff-In": ("diffin", {}), "Diff-In + first order": ("diffin", {"first_order": True}),
               "TracIn": ("tracin", {}), "IP": ("ip", {}), "random": ("random", {})}
    rows = []
    for st in setups:
        acc: dict[tuple[str, float], list[float]] = {}
        full = []
        for seed in range(args.seeds):
            parts = (ds.load_digits if st.name == "digits" else ds.load_mnist_subset)(sizes=st.sizes, seed=seed)
            train, valid, test = parts["train"], parts["valid"], parts["test"]
            cfg = TrainConfig(**{**st.cfg.to_dict(), "seed": seed})
            m = TabularMLP(hidden=(64,), weight_decay=1e-4, train=cfg, init_seed=seed)
            rec = TrainingRecorder(every=st.every)
            m.fit(train, recorder=rec)
            full.append(m.accuracy(test))
            for label, (method, opts) in methods.items():
                s = inf.score(m, train, target=valid, method=method, seed=seed, **opts)
                for f in fractions:
                    res = diffin_tasks.coreset(m, train, valid, f, scores=s, stratify=True, refit=False)
                    acc.setdefault((label, f), []).append(same_steps(m, res.split, f).accuracy(test))
                plain = diffin_tasks.coreset(m, train, valid, 0.1, scores=s, refit=False)
                acc.setdefault((label, "classes"), []).append(len(np.unique(plain.split.y)))
        for label in methods:
            rows.append([st.name, label] + [mean_sd([100 * a for a in acc[(label, f)]], "{:.1f}") for f in fractions]
                        + [mean_sd(acc[(label, "classes")], "{:.1f}"), ""])
        rows.append([st.name, "(all training data)", "", "", "", "", mean_sd([100 * a for a in full], "{:.1f}")])
    md_table(["data", "selection", "keep 10%", "keep 30%", "keep 50%", "classes in unstratified top 10%",
              "all data"], rows,
             f"Coreset selection: test accuracy (%) of an MLP (64 hidden ReLU units, minibatch SGD) retrained from "
             f"the same initial weights with the same number of SGD steps (epochs / fraction) on the kept samples: the highest-valued for the validation "
             f"loss within each class (`coreset(..., stratify=True)`); {args.seeds} seed(s), mean ± sd")


# ---- cleaning -------------------------------------------------------------------------------------------
def bench_clean(args: argparse.Namespace) -> None:
    sizes = {"train": 400, "valid": 200, "test": 400} if args.quick else {"train": 1000, "valid": 300, "test": None}
    epochs = 10 if args.quick else 30
    methods = {"Self-Diff-In": ("self-diffin", {}), "Self-Diff-In + first order": ("self-diffin", {"first_order": True}),
               "Self-TracIn": ("self-tracin", {"over": "checkpoints"}), "random": ("random", {})}
    res: dict[str, list[tuple[float, float, float]]] = {k: [] for k in methods}
    base, oracle = [], []
    for seed in range(args.seeds):
        parts = ds.load_digits(sizes=sizes, seed=seed)
        train, test = parts["train"], parts["test"]
        rng = np.random.default_rng(seed)
        flip = rng.choice(len(train), size=len(train) // 10, replace=False)
        y = train.y.copy()
        y[flip] = (y[flip] + rng.integers(1, 10, size=len(flip))) % 10
        noisy = train.with_labels(y)
        is_flipped = np.zeros(len(train), dtype=bool)
        is_flipped[flip] = True
        cfg = TrainConfig(optimizer="sgd", lr=0.1, epochs=epochs, batch_size=32, seed=seed)
        m = TabularMLP(hidden=(64,), weight_decay=1e-4, train=cfg, init_seed=seed)
        rec = TrainingRecorder(every=len(train) // 32 + 1)
        m.fit(noisy, recorder=rec)
        base.append(m.accuracy(test))
        oracle.append(m.refit(noisy.without(flip)).accuracy(test))
        k = len(flip)
        for label, (method, opts) in methods.items():
            s = inf.score(m, noisy, method=method, seed=seed, **opts)
            out = diffin_tasks.clean(m, noisy, k, scores=s)
            res[label].append((roc_auc_score(is_flipped, -s.values), is_flipped[out.removed].mean(),
                               out.model.accuracy(test)))
    rows = [[label, mean_sd([a for a, _, _ in r], "{:.3f}"), mean_sd([100 * p for _, p, _ in r], "{:.1f}"),
             mean_sd([100 * t for _, _, t in r], "{:.1f}")] for label, r in res.items()]
    rows.append(["(no removal)", "", "", mean_sd([100 * a for a in base], "{:.1f}")])
    rows.append(["(remove exactly the flipped)", "", "100.0", mean_sd([100 * a for a in oracle], "{:.1f}")])
    md_table(["self-influence", "AUC (flipped)", "flipped among removed (%)", "test accuracy after removal (%)"], rows,
             f"Data cleaning: digits (n={sizes['train']}) with 10% flipped labels, MLP (64 ReLU units, minibatch "
             f"SGD, one checkpoint per epoch); remove the 10% most suspicious and retrain; {args.seeds} seed(s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=["hvp", "loo", "delete", "coreset", "clean"])
    p.add_argument("--quick", action="store_true", help="CI-sized run")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 1 quick, 3 full)")
    args = p.parse_args()
    args.seeds = args.seeds or (1 if args.quick else 3)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    {"hvp": bench_hvp, "loo": bench_loo, "delete": bench_delete, "coreset": bench_coreset, "clean": bench_clean}[args.table](args)
    seeds = f" --seeds {args.seeds}" if args.table != "hvp" else ""
    print(f"\n({time.perf_counter() - t0:.0f} s; `python benchmarks/diffin.py {args.table}"
          f"{' --quick' if args.quick else ''}{seeds}`)")


if __name__ == "__main__":
    main()
