"""Evaluation protocols (retraining helper, LOO correlation, LDS, brittleness, removal curves), the paper
experiments at small scale, and the benchmark suites that run in CI."""

import time

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import influent as inf
from influent.cli import app
from influent.evaluation.suites import run_suite
from influent.evaluation.attribution import (brittleness, lds, lds_ground_truth, lds_score, loo_correlation,
    removal_curve)
from influent.models.refit import Accuracy, PerSampleLoss, Several, random_subsets, refit_many


@pytest.fixture(scope="module")
def blobs():
    """Two overlapping 2-D Gaussian blobs: 80 train, 60 test, logistic regression."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 140)
    X = rng.normal(size=(140, 2)) + 1.2 * np.c_[2 * y - 1, 2 * y - 1]
    train, test = inf.from_arrays(X[:80], y[:80]), inf.from_arrays(X[80:], y[80:])
    return train, test, inf.models.SklearnLogistic(C=1.0, newton_steps=0).fit(train)


def test_refit_many_is_deterministic_and_equals_brute_force(blobs):
    train, test, model = blobs
    masks = random_subsets(len(train), 40, 4, seed=1)
    w = np.linspace(0.5, 1.5, 40)
    subsets = [masks[0], np.flatnonzero(masks[1]), train.subset(np.arange(50)), masks[3]]
    weights = [None, None, None, w]
    metric = Several({"acc": Accuracy(test), "loss": PerSampleLoss(test)})
    a = refit_many(model, train, subsets, metric, weights=weights, n_jobs=1)
    b = refit_many(model, train, subsets, metric, weights=weights, n_jobs=2)
    for ra, rb in zip(a, b):  # the same numbers whatever the number of processes
        assert ra["acc"] == rb["acc"]
        np.testing.assert_array_equal(ra["loss"], rb["loss"])
    brute = model.refit(train.subset(masks[3]), sample_weight=w)
    assert a[3]["acc"] == brute.accuracy(test)
    np.testing.assert_allclose(a[2]["loss"], PerSampleLoss(test)(model.refit(train.subset(np.arange(50)))), rtol=1e-12)
    with pytest.raises(inf.InputError, match="subset 0 is empty"):
        refit_many(model, train, [np.zeros(len(train), bool)], Accuracy(test))
    with pytest.raises(inf.InputError, match="3 weights for 40 samples"):
        refit_many(model, train, [masks[0]], Accuracy(test), weights=[np.ones(3)])


def test_lds_score_is_mean_spearman_of_summed_attributions(blobs):
    train, test, model = blobs
    truth = lds_ground_truth(model, train, test, n_subsets=12, alpha=0.5, n_jobs=1, seed=3)
    assert truth.masks.shape == (12, 80) and np.all(truth.masks.sum(1) == 40)
    A = np.random.default_rng(0).normal(size=(80, len(test)))
    r = lds_score(A, truth)
    brute = [spearmanr(truth.masks.astype(float) @ A[:, j], -truth.losses[:, j])[0] for j in range(len(test))]
    np.testing.assert_allclose(r.per_test, brute, rtol=1e-12)
    assert r.score == pytest.approx(np.mean(brute))
    assert lds_score(-A, truth).score == pytest.approx(-r.score)
    with pytest.raises(inf.InputError, match="expected shape"):
        lds_score(A[:-1], truth)


def test_lds_agrees_with_dattri(blobs):
    dattri_metric = pytest.importorskip("dattri.metric")
    train, test, model = blobs
    truth = lds_ground_truth(model, train, test, n_subsets=10, n_jobs=1)
    A = inf.attribute(model, train, test, method="if")
    idx = torch.tensor(np.stack([np.flatnonzero(m) for m in truth.masks]))
    corr, _ = dattri_metric.lds(torch.tensor(A), (torch.tensor(-truth.losses), idx))
    np.testing.assert_allclose(lds_score(A, truth).per_test, corr.numpy(), rtol=1e-10)


@pytest.mark.slow
def test_lds_of_exact_if_on_digits():
    """Checked-by item: LDS of exact IF, logistic regression (C=1) on digits, 1,000 train, 50 half-subsets
    retrained with n_jobs=2 >= 0.85 (measured 0.94; about 10 s of CPU on an idle machine)."""
    from influent.data.datasets import load_digits

    parts = load_digits({"train": 1000, "test": None}, seed=0)
    train, test = parts["train"], parts["test"].subset(np.arange(300))
    model = inf.models.SklearnLogistic(C=1.0, newton_steps=0).fit(train)
    t0 = time.perf_counter()
    A = inf.attribute(model, train, test, method="if", solver="exact")
    truth = lds_ground_truth(model, train, test, n_subsets=50, alpha=0.5, n_jobs=2, seed=0)
    r = lds(model, train, test, A, ground_truth=truth)
    assert r.score >= 0.85, r.score
    assert np.all(r.per_test > 0.5)
    Aip = inf.attribute(model, train, test, method="ip")
    assert lds_score(Aip, truth).score < r.score - 0.2  # the same retrained models judge IP (measured 0.40)
    print(f"LDS exact IF {r.score:.3f} in {time.perf_counter() - t0:.1f} s")


def test_loo_correlation_of_exact_if(cancer):
    train, valid = cancer
    model = inf.models.SklearnLogistic(C=0.1).fit(train)
    s = inf.score(model, train, target=valid, method="if")
    pos = np.argsort(s.values)[np.r_[0:8, -8:0]]
    r = loo_correlation(model, train, valid, s, pos, n_jobs=2)
    assert r.pearson > 0.98 and r.spearman > 0.95
    brute = model.refit(train.without([pos[0]]), warm_start=True).loss_on(valid) - model.refit(train, warm_start=True).loss_on(valid)
    assert r.actual[0] == pytest.approx(brute, rel=1e-6)


def test_removal_curve_and_brittleness_against_brute_force(blobs):
    train, test, model = blobs
    s = inf.score(model, train, target=test, method="if")
    curve = removal_curve(model, train, test, s, [0, 8], n_random=2, n_jobs=1, seed=0)
    assert list(curve["budget"]) == [0, 8]
    assert curve.loc[0, "lowest"] == model.refit(train).accuracy(test)
    assert curve.loc[1, "lowest"] == model.refit(train.without(s.most_harmful(8))).accuracy(test)
    assert curve.loc[0, "random_std"] == 0.0
    sub = test.subset(np.arange(6))
    A = inf.attribute(model, train, sub, method="if")
    ks = (2, 8, 30)
    df = brittleness(model, train, sub, A, ks=ks, n_jobs=1)
    base = model.predict(sub)
    for j in range(len(sub)):
        order = np.argsort(-A[:, j], kind="stable")
        flips = [k for k in ks if model.refit(train.subset(np.sort(order[k:]))).predict(sub)[j] != base[j]]
        expected = min(flips) if flips else np.nan
        assert (np.isnan(df.loc[j, "k_flip"]) and np.isnan(expected)) or df.loc[j, "k_flip"] == expected


def test_fairness_trimming_on_compas_narrows_the_gap():
    from influent.data.datasets import load_compas
    from influent.evaluation.fairness import both_harmful, fairness_trimming

    parts = load_compas({"train": 1500, "valid": 600, "test": None}, seed=0)
    model = inf.models.SklearnLogistic(C=1.0, newton_steps=0).fit(parts["train"])
    df = fairness_trimming(model, parts["train"], parts["valid"], parts["test"], budget=0.05, n_jobs=1).set_index("strategy")
    assert list(df.index) == ["none", "utility", "fairness", "both", "random"]
    assert (df.loc[["utility", "fairness", "both", "random"], "removed"] == 75).all()
    assert df.loc["fairness", "dp_gap"] < df.loc["none", "dp_gap"] - 0.03
    assert df.loc["both", "dp_gap"] < df.loc["none", "dp_gap"]
    # "both" ranks by the worse of the two ranks
    u, f = np.array([0.0, 1, 2, 3]), np.array([3.0, 2, 0, 1])
    np.testing.assert_array_equal(both_harmful(u, f, 2), [2, 1])  # max ranks 2, 2; sums 2 < 3


def test_defense_recovers_accuracy_after_the_attack():
    from influent.data.datasets import load_adult
    from influent.evaluation.defense import attack, defense_experiment

    parts = load_adult(n_train=1500, n_valid=500, n_test=2000, seed=0)
    train, valid, test = parts["train"], parts["valid"], parts["test"]
    model = inf.models.SklearnLogistic(C=1.0, newton_steps=0).fit(train)
    att, idx = attack(model, test, 0.2, seed=0)
    assert len(idx) == 400 and np.all(model.predict(att.X[idx]) != model.predict(test.X[idx]))
    np.testing.assert_array_equal(np.delete(att.X, idx, 0), np.delete(test.X, idx, 0))
    methods = [("IF", "if", {}), ("Self-IF", "self-if", {}), ("nope", "not-a-method", {})]
    df, notes = defense_experiment(model, train, valid, test, fractions=(0.2,), methods=methods, n_jobs=2)
    assert notes == ["nope: method 'not-a-method' is not registered yet; skipped"]
    row = df.set_index("method").loc["IF"]
    assert row["post_attack"] < row["pre_attack"] - 0.1
    assert row["trim"] > row["post_attack"] + 0.03 and row["relabel"] > row["post_attack"] + 0.03


def test_convex_exactness_suite_quick():
    """`influent bench convex-exactness --quick` numbers: IF exact agrees with LOO, CG and LiSSA with exact."""
    df = run_suite("convex-exactness", quick=True).set_index("check")
    assert "paper" in df.columns
    assert df.loc["IF exact vs leave-one-out", "pearson"] > 0.95
    assert df.loc["IF exact vs leave-one-out", "spearman"] > 0.95
    assert df.loc["IF cg vs IF exact", "spearman"] > 0.999
    assert df.loc["IF lissa vs IF exact", "spearman"] > 0.99
    assert df.loc["IF ekfac vs IF exact", "pearson"] > 0.5
    assert df.loc["IF identity vs IF exact", "spearman"] < df.loc["IF cg vs IF exact", "spearman"]


def test_oga_moons_suite_quick():
    """`influent bench oga-moons --quick` (implemented in influent.evaluation.noisy): the Isolation Forest on
    last-layer gradients ranks most flipped labels first and trimming them keeps test accuracy high; the
    paper's numbers sit beside ours in `paper_*` columns."""
    try:
        df = run_suite("oga-moons", quick=True)
    except inf.InputError as exc:
        if "not available yet" in str(exc):
            pytest.skip(str(exc))
        raise
    paper_cols = [c for c in df.columns if str(c).startswith("paper")]
    assert paper_cols and all(c.replace("paper_", "") in df.columns for c in paper_cols if c != "paper")
    main = df[(df["detector"] == "Isolation Forest") & (df["gradients"] == "last layer")].iloc[0]
    assert main["paper_detection"] == pytest.approx(0.96)
    assert main["detection"] >= 0.75  # 20 flipped among 250: a random ranking gets 0.08
    assert main["auc"] >= 0.95
    assert main["acc_after"] >= 0.9 and main["acc_before"] >= 0.9
    assert df["detection"].min() > 0.5


def test_bench_command_line(capsys):
    from typer.testing import CliRunner

    out = CliRunner().invoke(app, ["bench", "--list"])
    assert out.exit_code == 0
    for name in ("convex-exactness", "lds-digits", "noisy-labels", "fi-table1", "oga-moons", "fairness-adult", "defense"):
        assert name in out.output
    with pytest.raises(inf.InputError, match="unknown suite"):
        run_suite("nope")
