"""`find_label_issues` and confident learning's count: the count and the confident joint against cleanlab's
own functions on the same probabilities (an independent implementation), the table's columns and orders,
string labels, one-logit and K-class models, a network's last layer, options passed to `mislabel`."""

import numpy as np
import pandas as pd
import pytest

import influent as inf
from influent.api.issues import COLUMNS
from influent.data import from_arrays
from influent.data.validate import InputError
from influent.evaluation.noisy import flip_labels
from influent.methods.mislabel import confident_joint, estimated_count, label_scores, leave_one_out
from influent.models import SklearnLogistic, TabularMLP

cl_count = pytest.importorskip("cleanlab.count")


def _blobs(n, K, d=4, seed=0, shift=2.5):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    X = rng.standard_normal((n, d)) + shift * np.eye(d)[y % d] * (1 + y // d)[:, None]
    return X, y


def _probas(n, K, seed, noise):
    """Probabilities that mostly agree with labels, some flipped labels, and a few peaked rows."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    alpha = np.ones(K)
    P = rng.dirichlet(alpha, n)
    P[np.arange(n), y] += rng.uniform(0.5, 3.0, n)
    P /= P.sum(1, keepdims=True)
    flip = rng.random(n) < noise
    given = y.copy()
    given[flip] = (y[flip] + rng.integers(1, K, flip.sum())) % K
    return P, given


@pytest.mark.parametrize("K,seed,noise", [(2, 0, 0.1), (2, 1, 0.3), (3, 2, 0.2), (5, 3, 0.1), (5, 4, 0.4), (10, 5, 0.2)])
def test_count_and_joint_equal_cleanlab(K, seed, noise):
    P, labels = _probas(300, K, seed, noise)
    for calibrate in (False, True):
        J, _ = confident_joint(P, labels, calibrate)
        np.testing.assert_array_equal(J, cl_count.compute_confident_joint(labels, P, calibrate=calibrate))
    assert estimated_count(P, labels, "off-diagonal") == cl_count.num_label_issues(labels, P)
    assert estimated_count(P, labels, "calibrated") == cl_count.num_label_issues(
        labels, P, estimation_method="off_diagonal_calibrated")
    assert estimated_count(P, labels, "off-diagonal") > 0


def test_count_with_a_class_nobody_is_labelled_as():
    P, labels = _probas(120, 4, 7, 0.2)
    labels[labels == 3] = 0  # class 3 has no given label: its threshold is out of reach (cleanlab: 2)
    for method, cl in (("off-diagonal", "off_diagonal"), ("calibrated", "off_diagonal_calibrated")):
        assert estimated_count(P, labels, method) == cl_count.num_label_issues(labels, P, estimation_method=cl)


def test_table_columns_orders_and_counts():
    X, y = _blobs(240, 3, seed=1)
    noisy, flipped = flip_labels(y, 0.15, "uniform", seed=3)
    names = np.array(["ant", "bee", "cow"])
    train = from_arrays(X, names[noisy], ids=np.arange(1000, 1240))
    before = (train.X.copy(), train.y.copy())
    model = SklearnLogistic(C=1.0).fit(train)
    df = inf.find_label_issues(model, train)
    assert isinstance(df, pd.DataFrame) and tuple(df.columns) == COLUMNS and len(df) == len(train)
    np.testing.assert_array_equal(df["id"], train.ids)                      # input order
    np.testing.assert_array_equal(df["label"], train.y)                     # given labels, strings kept
    assert set(df["suggested_label"]) <= set(names)
    assert sorted(df["rank"]) == list(range(len(train)))                    # a permutation
    assert np.all(np.diff(df.sort_values("rank")["score"].to_numpy()) >= 0)  # rank 0 = lowest score
    m = df.attrs["estimated_count"]
    assert df["is_issue"].sum() == m and set(df.loc[df.is_issue, "rank"]) == set(range(m))
    # the probabilities are mislabel's leave-one-out ones under its default rounds; the count is cleanlab's rule
    loo = leave_one_out(model, train, 0.0, "loo", 512, 5, 1, 5, "float32")
    P = loo.proba()
    np.testing.assert_allclose(df["p_label"], P[np.arange(len(train)), loo.labels], rtol=1e-6)
    np.testing.assert_array_equal(df["suggested_label"], names[P.argmax(1)])
    assert m == cl_count.num_label_issues(loo.labels, P)
    # on separated blobs the count is near the truth and the flagged samples are mostly flips
    assert abs(m - flipped.sum()) <= 0.25 * flipped.sum()
    assert flipped[df["is_issue"].to_numpy()].mean() > 0.8
    np.testing.assert_array_equal(train.X, before[0])
    np.testing.assert_array_equal(train.y, before[1])


def test_options_reach_mislabel_and_calibrated_count():
    X, y = _blobs(150, 2, seed=2)
    noisy, _ = flip_labels(y, 0.2, "uniform", seed=1)
    train = from_arrays(X, noisy)
    model = SklearnLogistic(C=1.0).fit(train)                               # binary: one logit (bce)
    assert model.loss == "bce"
    df = inf.find_label_issues(model, train, rounds=0, kind="self-confidence", count="calibrated")
    loo = leave_one_out(model, train, 0.0, "loo", 512, 0)
    P = loo.proba()
    np.testing.assert_allclose(df["score"], P[np.arange(len(train)), loo.labels], rtol=1e-6)
    assert df.attrs["estimated_count"] == cl_count.num_label_issues(
        loo.labels, P, estimation_method="off_diagonal_calibrated")
    assert df.attrs["count_method"] == "calibrated"
    with pytest.raises(InputError, match="does not take option"):
        inf.find_label_issues(model, train, budget=3)
    with pytest.raises(InputError, match="count"):
        inf.find_label_issues(model, train, count="median")


def test_network_last_layer():
    X, y = _blobs(160, 4, seed=4)
    noisy, flipped = flip_labels(y, 0.1, "uniform", seed=2)
    train = from_arrays(X.astype(np.float32), noisy)
    model = TabularMLP(hidden=(16,)).fit(train)
    df = inf.find_label_issues(model, train, probabilities="loo")  # last layer ("auto" without valid: "cv")
    s = label_scores(leave_one_out(inf.models.base.resolve_params(model, "auto"), train, 0.0, "loo", 512, 5, 1, 5,
                                   "float32").proba(), np.searchsorted(model.classes_, noisy), "margin", False)
    np.testing.assert_allclose(df["score"], s, rtol=1e-6, atol=1e-9)
    assert flipped[df["rank"].to_numpy() < flipped.sum()].mean() > 0.5  # 10% of the labels are flipped


def test_bad_inputs():
    X, y = _blobs(40, 2)
    train = from_arrays(X, y)
    with pytest.raises(InputError, match="not fitted"):
        inf.find_label_issues(SklearnLogistic(), train)
    with pytest.raises(InputError, match="ModelAdapter"):
        inf.find_label_issues(object(), train)
    model = SklearnLogistic().fit(train)
    with pytest.raises(InputError, match="Split"):
        inf.find_label_issues(model, X)
    with pytest.raises(InputError):
        inf.find_label_issues(model, from_arrays(X, np.where(y == 1, 5, 0)))


def test_half_of_one_class_flipped_needs_the_calibrated_margin():
    """Half of class 0 relabelled 1 (one-directional, 50% of a class): the uncalibrated margin blames the
    correct labels left in class 0 (the fitted intercept leans to class 1) and so do the rounds; with
    confident learning's per-class thresholds (calibrate=True, used by the rounds' flags too) the flagged
    samples are mostly the flips."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))[:300]
    X, y = (X[idx] - X[idx].mean(0)) / X[idx].std(0), y[idx]
    zeros = np.flatnonzero(y == 0)
    flip = np.random.default_rng(0).choice(zeros, len(zeros) // 2, replace=False)
    noisy = y.copy()
    noisy[flip] = 1
    flipped = np.isin(np.arange(len(y)), flip)
    train = from_arrays(X, noisy)
    model = SklearnLogistic(C=1.0).fit(train)
    plain = inf.find_label_issues(model, train)
    cal = inf.find_label_issues(model, train, calibrate=True)
    assert flipped[cal["is_issue"].to_numpy()].mean() > 0.6
    assert flipped[plain["is_issue"].to_numpy()].mean() < 0.3
    assert cal["is_issue"].sum() >= 0.6 * flipped.sum()


def test_cv_probabilities_for_a_network_that_memorises_its_labels():
    """A wide MLP trained long fits every flipped label: its last layer's leave-one-out probabilities agree
    with the given labels and the count is ~0; probabilities="cv" (5 refits, cleanlab's recipe) sees the
    flips, and equals cleanlab's count on the same cross-validated probabilities."""
    from influent.methods.label_quality import out_of_sample_proba
    from influent.models import TrainConfig

    X, y = _blobs(150, 2, d=10, seed=6, shift=3.0)
    noisy, flipped = flip_labels(y, 0.2, "uniform", seed=3)
    train = from_arrays(X.astype(np.float32), noisy)
    model = TabularMLP(hidden=(64,), weight_decay=0.0, train=TrainConfig(epochs=300, lr=0.02)).fit(train)
    assert np.mean(model.predict(train) == noisy) > 0.97                 # memorised
    loo = inf.find_label_issues(model, train, probabilities="loo")
    cv = inf.find_label_issues(model, train, probabilities="cv", seed=1)
    assert loo.attrs["estimated_count"] < 0.3 * flipped.sum()
    P = out_of_sample_proba(model, train, 5, 1)
    assert cv.attrs["estimated_count"] == cl_count.num_label_issues(noisy, P)
    assert cv.attrs["estimated_count"] >= 0.5 * flipped.sum()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(flipped, -cv["score"]) > max(0.8, roc_auc_score(flipped, -loo["score"]))
    with pytest.raises(InputError, match="probabilities"):
        inf.find_label_issues(model, train, probabilities="bootstrap")


def test_auto_probabilities_follow_memorisation():
    """probabilities="auto" (the default) takes cross-validated probabilities exactly when a network fits its
    training labels beyond what it generalises (judged on `valid`), and the leave-one-out step otherwise."""
    from influent.api.issues import memorised
    from influent.models import TrainConfig

    X, y = _blobs(300, 2, d=10, seed=6, shift=3.0)
    noisy, flipped = flip_labels(y, 0.2, "uniform", seed=3)
    train = from_arrays(X[:150].astype(np.float32), noisy[:150])
    valid = from_arrays(X[150:].astype(np.float32), noisy[150:])
    net = TabularMLP(hidden=(64,), weight_decay=0.0, train=TrainConfig(epochs=300, lr=0.02)).fit(train)
    gap = net.accuracy(train) - net.accuracy(valid)
    assert gap > 0.1 and memorised(net, train, valid)       # fits its flips, which valid does not reward
    auto = inf.find_label_issues(net, train, valid=valid, seed=1)
    assert auto.attrs["probabilities"] == "cv"
    pd.testing.assert_frame_equal(auto, inf.find_label_issues(net, train, probabilities="cv", seed=1))
    lin = SklearnLogistic(C=1.0).fit(train)                  # one layer: never "memorised"
    assert not memorised(lin, train, valid)
    assert inf.find_label_issues(lin, train, valid=valid).attrs["probabilities"] == "loo"


def test_auto_probabilities_without_valid_take_cv_for_any_network():
    """Without `valid` memorisation cannot be judged: a network that fits only part of its flips (in-sample
    accuracy well below 99%, so the earlier rule took the last layer's leave-one-out step) still gets the
    cross-validated probabilities; a one-layer model keeps the leave-one-out step."""
    from influent.models import TrainConfig

    X, y = _blobs(150, 2, d=10, seed=6, shift=3.0)
    noisy, _ = flip_labels(y, 0.2, "uniform", seed=3)
    train = from_arrays(X.astype(np.float32), noisy)
    net = TabularMLP(hidden=(16,), weight_decay=1e-2, train=TrainConfig(epochs=60, lr=0.02)).fit(train)
    assert net.accuracy(train) < 0.95                         # does not memorise its flips
    auto = inf.find_label_issues(net, train, seed=1)
    assert auto.attrs["probabilities"] == "cv"
    pd.testing.assert_frame_equal(auto, inf.find_label_issues(net, train, probabilities="cv", seed=1))
    assert inf.find_label_issues(SklearnLogistic(C=1.0).fit(train), train).attrs["probabilities"] == "loo"
