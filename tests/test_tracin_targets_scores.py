import numpy as np
import pandas as pd
import pytest
import torch

import influent as inf
from influent.grads import per_sample_grads
from influent.models import TrainConfig, TrainingRecorder


@pytest.fixture(scope="module")
def recorded(digits_small, tmp_path_factory):
    train, valid = digits_small
    rec = TrainingRecorder(every=10, directory=tmp_path_factory.mktemp("ckpt"))
    m = inf.models.TabularMLP(hidden=(8,), dtype=torch.float64,
                              train=TrainConfig(optimizer="sgd", lr=0.5, epochs=40)).fit(train, recorder=rec)
    return m, rec


def test_tracin_equals_brute_force_sum_over_checkpoints(recorded, digits_small):
    train, valid = digits_small
    m, rec = recorded
    assert [c.step for c in rec.checkpoints] == [10, 20, 30, 40]
    s = inf.score(m, train, target=valid, method="tracin")
    st = inf.score(m, train, method="self-tracin", over="checkpoints")
    expected, self_expected = np.zeros(len(train)), np.zeros(len(train))
    Xv, tv = m.tensors(valid)
    for c in rec.checkpoints:
        at = m.with_params(c.params)
        G = per_sample_grads(at, *at.tensors(train), method="loop")
        gf = per_sample_grads(at, Xv, tv, method="loop").mean(0)
        expected += c.lr * (G @ gf).numpy()
        self_expected += c.lr * (G**2).sum(1).numpy()
    np.testing.assert_allclose(s.values, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(st.raw, self_expected, rtol=1e-9)
    np.testing.assert_allclose(st.values, -self_expected, rtol=1e-9)
    # checkpoints reload from disk identically
    again = TrainingRecorder.load(rec.directory)
    s2 = inf.score(m, train, target=valid, method="tracin", checkpoints=again)
    np.testing.assert_allclose(s2.values, s.values, rtol=1e-12)
    A = inf.attribute(m, train, valid, method="tracin")
    np.testing.assert_allclose(A.mean(1), s.values, rtol=1e-9, atol=1e-12)


def test_tracin_without_checkpoints_is_a_clear_error(small_mlp, digits_small):
    train, valid = digits_small
    with pytest.raises(inf.InputError, match="needs training checkpoints"):
        inf.score(small_mlp, train, target=valid, method="tracin")


def _fair_data():
    rng = np.random.default_rng(0)
    n = 400
    g = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 3)) + g[:, None] * np.array([0.8, 0.0, 0.0])
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=n) > 0.4).astype(int)
    return inf.from_arrays(X[:250], y[:250], g[:250]), inf.from_arrays(X[250:], y[250:], g[250:])


@pytest.mark.parametrize("make", [
    lambda v: inf.targets.DemographicParity(v),
    lambda v: inf.targets.EqualOpportunity(v),
    lambda v: inf.targets.Robustness(v),
])
def test_targets_gradients_and_loo_agreement(make):
    """Each target's influence agrees with leave-one-out retraining on logistic regression."""
    from scipy.stats import spearmanr

    train, valid = _fair_data()
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    target = make(valid)
    s = inf.score(model, train, target=target, method="if")
    # gradient against finite differences of the target value
    g = target.grad(model)
    theta = model.params()
    direction = {k: torch.randn_like(v) for k, v in theta.items()}
    eps = 1e-6
    plus = {k: v + eps * direction[k] for k, v in theta.items()}
    minus = {k: v - eps * direction[k] for k, v in theta.items()}
    fd = (float(target.value(model, plus)) - float(target.value(model, minus))) / (2 * eps)
    assert abs(fd - float(g @ torch.cat([d.reshape(-1) for d in direction.values()]))) < 1e-6
    sub = np.argsort(-np.abs(s.values))[:15]
    loo = inf.score(model, train, target=target, method="loo", subset=sub)
    assert spearmanr(s.values[sub], loo.values[sub])[0] > 0.8


def test_robustness_projection_crosses_the_boundary():
    train, valid = _fair_data()
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    target = inf.targets.Robustness(valid).prepare(model)
    before = model.predict(valid)
    after = model.predict(target.adversarial_.X)
    assert np.all(before != after)  # 30% overshoot past the boundary flips every prediction
    assert target.evaluate(model) > inf.targets.Utility(valid).evaluate(model)


def test_fairness_target_needs_groups(iris):
    train, valid = iris
    with pytest.raises(inf.InputError, match="group attribute"):
        inf.targets.DemographicParity(valid)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_scores_roundtrip_and_order(tmp_path, iris, suffix):
    train, valid = iris
    model = inf.models.SklearnLogistic().fit(train)
    s = inf.score(model, train, target=valid, method="if")
    path = s.save(tmp_path / f"scores{suffix}")
    back = inf.Scores.load(path)
    np.testing.assert_allclose(back.values, s.values)
    np.testing.assert_array_equal(back.ids, s.ids)
    assert back.method == "if" and back.settings["solver"] == "exact" and back.target["target"] == "utility"
    harm = s.most_harmful(5)
    assert np.all(s.values[harm] <= np.sort(s.values)[4]) and list(harm) == list(s.order()[:5])
    assert s.values[s.most_helpful(1)[0]] == s.values.max()
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_scores_save_is_atomic(tmp_path, iris):
    train, valid = iris
    model = inf.models.SklearnLogistic().fit(train)
    s = inf.score(model, train, target=valid, method="ip")
    path = s.save(tmp_path / "scores.parquet")
    before = path.read_bytes()
    s.values = np.array(["bad"] * len(s), dtype=object)  # makes the write fail half-way
    with pytest.raises(Exception):
        s.save(path)
    assert path.read_bytes() == before
