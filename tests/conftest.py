"""Shared small data sets and fitted models (float64 for exactness checks)."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.preprocessing import StandardScaler

import influent as inf


def _split(X, y, n_train, seed=0, group=None):
    X = StandardScaler().fit_transform(X)
    idx = np.random.default_rng(seed).permutation(len(X))
    tr, va = idx[:n_train], idx[n_train:]
    g = None if group is None else group
    return (inf.from_arrays(X[tr], y[tr], None if g is None else g[tr]),
            inf.from_arrays(X[va], y[va], None if g is None else g[va]))


@pytest.fixture(scope="session")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return _split(X, y, 300)


@pytest.fixture(scope="session")
def iris():
    X, y = load_iris(return_X_y=True)
    return _split(X, y, 100)


@pytest.fixture(scope="session")
def digits_small():
    """First four digit classes, 160 train / 80 valid, raw pixels / 16."""
    X, y = load_digits(return_X_y=True)
    m = y < 4
    X, y = X[m] / 16.0, y[m]
    idx = np.random.default_rng(1).permutation(len(X))
    return inf.from_arrays(X[idx[:160]], y[idx[:160]]), inf.from_arrays(X[idx[160:240]], y[idx[160:240]])


@pytest.fixture(scope="session")
def small_mlp(digits_small):
    train, _ = digits_small
    torch.manual_seed(0)
    return inf.models.TabularMLP(hidden=(8,), weight_decay=1e-3, dtype=torch.float64,
                                 train=inf.models.TrainConfig(epochs=300, lr=1e-2)).fit(train)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Breast cancer, standardised, as train (300) / valid (135) / test (134) CSV files, plus a pool."""
    import pandas as pd

    d = tmp_path_factory.mktemp("data")
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    idx = np.random.default_rng(0).permutation(len(X))
    cols = [f"f{j}" for j in range(X.shape[1])]
    for name, rows in (("train", idx[:300]), ("valid", idx[300:435]), ("test", idx[435:])):
        df = pd.DataFrame(X[rows], columns=cols)
        df["y"] = y[rows]
        df.to_csv(d / f"{name}.csv", index=False)
    pool = pd.DataFrame(X[idx[435:]], columns=cols)
    pool.insert(0, "key", np.arange(len(pool)) + 1000)
    pool.to_csv(d / "pool.csv", index=False)
    return d
