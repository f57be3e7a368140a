"""Truncated Monte Carlo Data Shapley (Ghorbani & Zou 2019) against exact Shapley values by subset
enumeration."""

import itertools
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

import influent as inf


@pytest.fixture(scope="module")
def seven():
    """7 training samples (one of them mislabelled), 60 validation samples, binary logistic regression."""
    rng = np.random.default_rng(4)
    X = np.array([[-2.0, 0.3], [-1.2, -0.8], [-0.4, 0.5], [0.5, -0.2], [1.4, 0.9], [2.2, -0.4], [1.0, 0.1]])
    y = np.array([0, 0, 0, 1, 1, 1, 0])  # the last one sits among class 1
    yv = rng.integers(0, 2, 60)
    Xv = np.c_[np.where(yv == 1, 1.0, -1.0) + rng.normal(size=60), rng.normal(size=60)]
    train, valid = inf.from_arrays(X, y), inf.from_arrays(Xv, yv)
    return inf.models.SklearnLogistic(C=1.0).fit(train), train, valid


def _exact_shapley(train, valid, utility):
    """phi_i = sum_S |S|! (n - |S| - 1)! / n! (U(S + i) - U(S)) over all subsets S of the others, with U
    computed by a loop of fresh fits (a subset missing a class gets U(empty))."""
    n = len(train)
    U = {}
    for r in range(n + 1):
        for S in itertools.combinations(range(n), r):
            U[S] = utility(S)
    phi = np.zeros(n)
    for i in range(n):
        others = [k for k in range(n) if k != i]
        for r in range(n):
            w = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
            for S in itertools.combinations(others, r):
                phi[i] += w * (U[tuple(sorted(S + (i,)))] - U[S])
    vals = np.array(list(U.values()))
    return phi, vals.max() - vals.min(), U


def _accuracy_utility(train, valid):
    empty = np.bincount(valid.y).max() / len(valid)

    def U(S):
        if len(set(train.y[list(S)])) < 2:
            return empty
        return inf.models.SklearnLogistic(C=1.0).fit(train.subset(np.array(S))).accuracy(valid)

    return U


def _neg_loss_utility(train, valid):
    def U(S):
        if len(set(train.y[list(S)])) < 2:
            return -math.log(2)
        return -inf.models.SklearnLogistic(C=1.0).fit(train.subset(np.array(S))).loss_on(valid)

    return U


@pytest.mark.parametrize("utility", ["accuracy", "target"])
def test_tmc_shapley_matches_exact_enumeration(seven, utility):
    """Within 0.05 mean absolute error (utilities normalised to [0, 1]) of exact enumeration, Spearman >= 0.9,
    with the default truncation tolerance and with none."""
    model, train, valid = seven
    make = _accuracy_utility if utility == "accuracy" else _neg_loss_utility
    exact, span, _ = _exact_shapley(train, valid, make(train, valid))
    kw = {} if utility == "accuracy" else {"empty_utility": -math.log(2)}
    assert span > 0 and np.ptp(exact) > 0.05 * span
    for tol in (0.01, 0.0):
        s = inf.score(model, train, target=valid, method="tmc-shapley", utility=utility, permutations=1500,
                      tolerance=tol, seed=1, **kw)
        mae = np.mean(np.abs(s.values - exact)) / span
        rho = spearmanr(s.values, exact)[0]
        assert mae < 0.05 and rho >= 0.9, (tol, mae, rho)
        np.testing.assert_allclose(s.raw, s.values)
        assert s.settings["n_refits"] <= 2**7
    # the mislabelled sample is the least valuable
    assert np.argmin(s.values) == 6 == np.argmin(exact)


def test_tmc_without_truncation_is_efficient_and_seeded(seven):
    """Without truncation every permutation's marginals telescope to U(D) - U(empty) (efficiency axiom);
    the same seed gives the same values, another seed other values."""
    model, train, valid = seven
    s = inf.score(model, train, target=valid, method="tmc-shapley", permutations=30, tolerance=0.0, seed=3)
    full = model.refit(train).accuracy(valid)
    empty = np.bincount(valid.y).max() / len(valid)
    assert s.values.sum() == pytest.approx(full - empty, abs=1e-12)
    assert s.settings["mean_truncation"] == 7
    again = inf.score(model, train, target=valid, method="tmc-shapley", permutations=30, tolerance=0.0, seed=3)
    np.testing.assert_array_equal(s.values, again.values)
    other = inf.score(model, train, target=valid, method="tmc-shapley", permutations=30, tolerance=0.0, seed=4)
    assert not np.array_equal(s.values, other.values)


@pytest.mark.slow
def test_parallel_refits_give_the_same_values(seven):
    """Refits in 2 worker processes (refit_many) give exactly the values of in-process refits."""
    model, train, valid = seven
    kw = dict(target=valid, method="tmc-shapley", permutations=10, tolerance=0.01, seed=3)
    np.testing.assert_array_equal(inf.score(model, train, n_jobs=2, **kw).values, inf.score(model, train, **kw).values)


def test_truncation_follows_algorithm_1(seven):
    """A loop written from Algorithm 1: walk each permutation, keep v_j = v_{j-1} once |U(D) - v_{j-1}| <
    tol |U(D)|; with a large tolerance the walks stop early and the values equal the loop's."""
    model, train, valid = seven
    U = _accuracy_utility(train, valid)
    n, T, tol = len(train), 40, 0.15
    full = U(tuple(range(n)))
    rng = np.random.default_rng(2)
    phi = np.zeros(n)
    for _ in range(T):
        pi = rng.permutation(n)
        prev = U(())
        for j in range(n):
            v = prev if abs(full - prev) < tol * abs(full) else U(tuple(sorted(pi[:j + 1])))
            phi[pi[j]] += v - prev
            prev = v
    s = inf.score(model, train, target=valid, method="tmc-shapley", permutations=T, tolerance=tol, seed=2)
    np.testing.assert_allclose(s.values, phi / T, atol=1e-12)
    assert s.settings["mean_truncation"] < n


def test_tmc_input_errors(seven):
    model, train, valid = seven
    with pytest.raises(inf.InputError, match="needs a target"):
        inf.score(model, train, method="tmc-shapley")
    with pytest.raises(inf.InputError, match="empty_utility"):
        inf.score(model, train, target=valid, method="tmc-shapley", utility="target")
    with pytest.raises(inf.InputError, match="utility must be"):
        inf.score(model, train, target=valid, method="tmc-shapley", utility="f1")
    with pytest.raises(inf.InputError, match="permutations"):
        inf.score(model, train, target=valid, method="tmc-shapley", permutations=0)
    with pytest.raises(inf.InputError, match="tolerance"):
        inf.score(model, train, target=valid, method="tmc-shapley", tolerance=-1)
