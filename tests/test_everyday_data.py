"""Issue 23 item 3 (silent acceptance) and item 9's library side: NaN scores are never acted on, a diverged
network stops before scoring, repeated column names are an error, and `SklearnLogistic` warns about badly
scaled features (without touching them)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import influent as inf
from influent.actions import coreset, relabel, reweight, trim
from influent.data import InputError, Split
from influent.models import TabularMLP, TrainConfig


def _train(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return Split(X, (X[:, 0] > 0).astype(int), name="train")


@pytest.mark.parametrize("nan_rows", [slice(None), [3]])
def test_nan_scores_are_not_acted_on(nan_rows):
    train = _train()
    values = np.linspace(-1, 1, len(train))
    values[nan_rows] = np.nan
    s = inf.Scores(values, "if", train.ids)
    n_nan = int(np.isnan(values).sum())
    for act in (lambda: trim(train, s, 5), lambda: relabel(train, s, 5), lambda: reweight(train, s),
                lambda: coreset(train, s, 5)):
        with pytest.raises(InputError, match=rf"{n_nan} NaN value"):
            act()


def test_a_diverged_network_stops_before_scoring():
    train = _train(120)
    with pytest.raises(InputError, match=r"training diverged.*learning rate"):
        TabularMLP(hidden=(16,), train=TrainConfig(epochs=30, lr=1e8)).fit(train)
    with pytest.raises(InputError, match=r"training diverged: the training loss is nan in epoch 2"):
        TabularMLP(hidden=(16,), train=TrainConfig(optimizer="sgd", lr=1e30, epochs=5)).fit(train)
    # the same network with a sane rate trains and its loss falls
    m = TabularMLP(hidden=(16,), train=TrainConfig(epochs=30, lr=1e-2)).fit(train)
    assert m.accuracy(train) > 0.8


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_repeated_column_names_are_an_error(tmp_path, suffix):
    p = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        p.write_text("a,b,a,y\n1,2,3,0\n4,5,6,1\n7,8,9,0\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_arrays([pa.array([1, 4, 7]), pa.array([2, 5, 8]), pa.array([3, 6, 9]),
                                             pa.array([0, 1, 0])], names=["a", "b", "a", "y"]), p)
    with pytest.raises(InputError, match=r"duplicate column name\(s\) \['a'\]"):
        inf.from_file(p, "y")


def test_from_frame_refuses_repeated_names_and_leaves_the_frame_alone():
    df = pd.DataFrame([[1.0, 2.0, 0], [3.0, 4.0, 1]], columns=[0, 1, "y"])
    s = inf.from_frame(df, "y")
    assert s.columns == ["0", "1"] and list(df.columns) == [0, 1, "y"]  # the user's frame is not renamed
    bad = pd.DataFrame([[1.0, 2.0, 0], [3.0, 4.0, 1]], columns=["a", "a", "y"])
    with pytest.raises(InputError, match="duplicate column"):
        inf.from_frame(bad, "y")


def test_sklearn_logistic_warns_on_badly_scaled_features_and_keeps_them():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    raw = inf.from_arrays(X[:120], y[:120])
    before = raw.X.copy()
    with pytest.warns(UserWarning, match=r"lbfgs needed \d+ iterations.*standardise"):
        inf.models.SklearnLogistic().fit(raw)
    np.testing.assert_array_equal(raw.X, before)
    Z = (X[:120] - X[:120].mean(0)) / X[:120].std(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inf.models.SklearnLogistic().fit(inf.from_arrays(Z, y[:120]))
