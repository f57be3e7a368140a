"""Hessian-free family of [IP]: IP Ensemble (parameter-dropout, activation-dropout and parameter-noise members),
TracIn / Self-TracIn, GEX, label quality,
and the synthetic check of [IP] (IP agrees with exact IF on a separable set with flipped labels)."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import influent as inf
from influent.grads import per_sample_grads
from influent.methods.ensemble import ensemble_members, gex_members


def _brute_ip(adapter, train, valid):
    """sum_i g_i . mean_v g_v with per-sample gradients from the loop path."""
    G = per_sample_grads(adapter, *adapter.tensors(train), method="loop")
    gv = per_sample_grads(adapter, *adapter.tensors(valid), method="loop").mean(0)
    return (G @ gv).numpy()


def test_ensemble_with_one_member_equals_ip(iris, small_mlp, digits_small):
    """members=1 is the model alone: IP Ensemble and IP both equal the brute-force loop."""
    train, valid = iris
    lr = inf.models.SklearnLogistic(C=1.0).fit(train)
    brute = _brute_ip(lr, train, valid)
    np.testing.assert_allclose(inf.score(lr, train, target=valid, method="ip-ensemble", members=1).values, brute,
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(inf.score(lr, train, target=valid, method="ip").values, brute, rtol=1e-9, atol=1e-12)
    tr, va = digits_small
    np.testing.assert_allclose(inf.score(small_mlp, tr, target=va, method="ip-ensemble", members=1).values,
                               _brute_ip(small_mlp, tr, va), rtol=1e-9, atol=1e-12)


def _param_dropout_by_hand(model, train, valid, members, rate, seed):
    """[IP] experiments, by hand: member m >= 1 zeroes each analysed parameter with probability `rate`
    (one rate draw, then keep = rand >= rate per parameter tensor, in order) and rescales by 1/(1 - rate);
    returns the members' IP vectors (member 0 = the model) and how many parameters each zeroed."""
    gen = torch.Generator().manual_seed(seed)
    theta = model.params()
    ips, dropped = [_brute_ip(model, train, valid)], [0]
    for _ in range(1, members):
        torch.rand((), generator=gen, dtype=torch.float64)
        keep = {k: torch.rand(v.shape, generator=gen, dtype=torch.float64) >= rate for k, v in theta.items()}
        dropped.append(sum(int((~m).sum()) for m in keep.values()))
        ips.append(_brute_ip(model.with_params({k: v * keep[k] / (1 - rate) for k, v in theta.items()}), train, valid))
    return np.array(ips), dropped


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_default_members_are_parameter_dropout_and_differ(kind, small_mlp, digits_small):
    """The default IP Ensemble ([IP] experiments: parameter dropout, rate 0.01, 5 members) equals the sum of
    the members' IP computed by hand, every member drops parameters, and the result is not 5 x IP."""
    train, valid = digits_small
    model = small_mlp if kind == "mlp" else inf.models.SklearnLogistic(C=1.0).fit(train)
    s = inf.score(model, train, target=valid, method="ip-ensemble", seed=2)
    assert s.settings["member_mode"] == "param-dropout" and s.settings["members"] == 5
    ips, dropped = _param_dropout_by_hand(model, train, valid, 5, 0.01, seed=2)
    n = model.n_params()
    assert all(0 < d < 0.05 * n for d in dropped[1:]), dropped  # about 1% of the parameters, never none
    np.testing.assert_allclose(s.values, ips.sum(0), rtol=1e-8, atol=1e-12)
    for ip_m in ips[1:]:  # each member's IP differs from the model's
        assert np.abs(ip_m - ips[0]).max() > 1e-3 * np.abs(ips[0]).max()
    assert not np.allclose(s.values, 5 * ips[0], rtol=1e-3)
    A = inf.attribute(model, train, valid, method="ip-ensemble", seed=2)
    np.testing.assert_allclose(A.mean(1), s.values, rtol=1e-8, atol=1e-12)


def test_noise_members_equal_brute_force(iris):
    """Logistic regression has no dropout: members are theta + N(0, noise^2), drawn in the documented order."""
    train, valid = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    s = inf.score(model, train, target=valid, method="ip-ensemble", mode="noise", members=4, noise=0.05, seed=3)
    assert s.settings["member_mode"] == "noise"
    gen = torch.Generator().manual_seed(3)
    theta = model.params()
    expected = _brute_ip(model, train, valid)
    for _ in range(3):
        noisy = {k: v + 0.05 * torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in theta.items()}
        expected = expected + _brute_ip(model.with_params(noisy), train, valid)
    np.testing.assert_allclose(s.values, expected, rtol=1e-9, atol=1e-12)
    # the noise matters: members differ from the model
    assert not np.allclose(s.values, 4 * inf.score(model, train, target=valid, method="ip").values, rtol=1e-3)
    A = inf.attribute(model, train, valid, method="ip-ensemble", mode="noise", members=4, noise=0.05, seed=3)
    np.testing.assert_allclose(A.mean(1), s.values, rtol=1e-9, atol=1e-12)


class _ExplicitMask(torch.nn.Module):
    """The same MLP written out by hand, with the hidden activation multiplied by a given mask."""

    def __init__(self, net, mask):
        super().__init__()
        self.net, self.mask = net, mask

    def forward(self, x):
        return self.net[3](self.net[2](self.net[1](self.net[0](x))) * self.mask)


def test_dropout_members_equal_explicitly_masked_networks(digits_small):
    train, valid = digits_small
    m = inf.models.TabularMLP(hidden=(8,), dropout=0.3, weight_decay=1e-3, dtype=torch.float64,
                              train=inf.models.TrainConfig(epochs=100)).fit(train)
    assert [type(x).__name__ for x in m.module] == ["Linear", "ReLU", "Dropout", "Linear"]
    kw = dict(mode="dropout", members=3, rate=0.4, seed=5)
    s = inf.score(m, train, target=valid, method="ip-ensemble", **kw)
    assert s.settings["member_mode"] == "dropout"
    members, mode = ensemble_members(m, train, 3, "auto", 0.4, 0.01, None, 5)
    assert mode == "dropout"  # "auto": the model's dropout layer
    # masks in the documented order: one rate draw (fixed here), then keep ~ Bernoulli(0.6) / 0.6 over 8 units
    gen = torch.Generator().manual_seed(5)
    expected = _brute_ip(m, train, valid)
    for k in range(1, 3):
        torch.rand((), generator=gen, dtype=torch.float64)
        mask = (torch.rand((8,), generator=gen, dtype=torch.float64) >= 0.4).double() / 0.6
        assert 0 < int((mask == 0).sum()) < 8  # the draw really drops some units, not all
        explicit = inf.models.TorchAdapter(_ExplicitMask(m.module, mask), dtype=torch.float64, fitted=True,
                                           classes=m.classes_)
        assert explicit.param_names() == ["net." + n for n in m.param_names()]
        expected = expected + _brute_ip(explicit, train, valid)
        # the member's predictions are those of the masked network
        np.testing.assert_allclose(members[k].predict_proba(valid.X), explicit.predict_proba(valid.X), atol=1e-12)
    np.testing.assert_allclose(s.values, expected, rtol=1e-8, atol=1e-12)


def test_given_dropout_points_on_a_model_without_dropout(small_mlp, digits_small):
    train, valid = digits_small
    s = inf.score(small_mlp, train, target=valid, method="ip-ensemble", mode="dropout", members=3, rate=0.5,
                  dropout_points=["1"])
    assert s.settings["member_mode"] == "dropout"
    ip = inf.score(small_mlp, train, target=valid, method="ip").values
    assert not np.allclose(s.values, 3 * ip, rtol=1e-3)
    with pytest.raises(inf.InputError, match="name no module"):
        inf.score(small_mlp, train, target=valid, method="ip-ensemble", mode="dropout", dropout_points=["nope"])
    with pytest.raises(inf.InputError, match="no dropout layers"):
        inf.score(small_mlp, train, target=valid, method="ip-ensemble", mode="dropout")


@pytest.fixture(scope="module")
def tiny():
    """A tiny float64 MLP on 40 samples of 3 features."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int)
    train, valid = inf.from_arrays(X[:40], y[:40]), inf.from_arrays(X[40:], y[40:])
    m = inf.models.TabularMLP(hidden=(4,), weight_decay=1e-2, dtype=torch.float64,
                              train=inf.models.TrainConfig(epochs=200, lr=0.05)).fit(train)
    return m, train, valid


def test_gex_members_follow_sgd_from_the_fitted_model(tiny):
    m, train, _ = tiny
    kw = dict(members=2, steps=3, lr=0.1, batch_size=8, seed=4)
    mem = gex_members(m, train, **kw)
    traj = gex_members(m, train, **{**kw, "members": 2}, sampling="trajectory")
    X, t = m.tensors(train)
    gen = torch.Generator().manual_seed(4)
    expected = []
    for run in range(2):
        theta = {k: v.clone() for k, v in m.params().items()}
        for _ in range(3):
            idx = torch.randperm(40, generator=gen)[:8]
            p = {k: v.requires_grad_(True) for k, v in theta.items()}
            obj = m.per_sample_loss(p, X[idx], t[idx]).mean() + 0.5 * 1e-2 * sum((v**2).sum() for v in p.values())
            g = torch.autograd.grad(obj, list(p.values()))
            theta = {k: (v - 0.1 * gi).detach() for (k, v), gi in zip(p.items(), g)}
        expected.append(theta)
    for got, exp in zip(mem, expected):
        for k in exp:
            torch.testing.assert_close(got[k], exp[k], rtol=1e-12, atol=1e-14)
    # trajectory members: member 1 continues from member 0 (not from theta_hat)
    assert all(torch.equal(traj[0][k], mem[0][k]) for k in mem[0])
    assert not all(torch.allclose(traj[1][k], mem[1][k]) for k in mem[1])


def test_gex_equals_brute_force_formula(tiny):
    m, train, valid = tiny
    kw = dict(members=5, steps=4, lr=0.2, batch_size=10)
    mem = gex_members(m, train, **kw, seed=7)

    def loss(params, x, y):  # one sample at a time
        return float(m.per_sample_loss(params, *m.tensors(inf.from_arrays(x[None], np.array([y]))))[0])

    theta = m.params()
    D = np.array([[loss(p, train.X[i], train.y[i]) - loss(theta, train.X[i], train.y[i]) for i in range(len(train))]
                  for p in mem])
    f = lambda p: np.mean([loss(p, valid.X[j], valid.y[j]) for j in range(len(valid))])  # noqa: E731
    df = np.array([f(p) - f(theta) for p in mem])
    assert np.abs(D).max() > 1e-4  # members really moved
    s = inf.score(m, train, method="self-gex", seed=7, **kw)
    np.testing.assert_allclose(s.raw, (D**2).mean(0), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(s.values, -s.raw)
    g = inf.score(m, train, target=valid, method="gex", seed=7, **kw)
    np.testing.assert_allclose(g.values, (D * df[:, None]).mean(0), rtol=1e-9, atol=1e-15)
    A = inf.attribute(m, train, valid, method="gex", seed=7, **kw)
    np.testing.assert_allclose(A.mean(1), g.values, rtol=1e-9, atol=1e-15)


def test_ip_agrees_with_exact_if_on_separable_data_with_flipped_labels():
    """The synthetic check of [IP]: linearly separable 2-D data, 10 flipped labels, logistic regression."""
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n + 200)
    X = rng.normal(size=(n + 200, 2)) * 0.7 + np.where(y[:, None] == 1, 1.5, -1.5)
    flipped = rng.choice(n, 10, replace=False)
    y_tr = y[:n].copy()
    y_tr[flipped] = 1 - y_tr[flipped]
    train, valid = inf.from_arrays(X[:n], y_tr), inf.from_arrays(X[n:], y[n:])
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    ip = inf.score(model, train, target=valid, method="ip").values
    exact = inf.score(model, train, target=valid, method="if", solver="exact").values
    assert np.all(np.sign(ip[flipped]) == np.sign(exact[flipped]))
    assert np.all(exact[flipped] < 0)  # flipped labels hurt the validation loss
    assert spearmanr(ip, exact)[0] >= 0.9


def test_label_quality_uses_cleanlab_on_out_of_sample_probabilities(iris):
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold

    train, _ = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    labels = np.searchsorted(model.classes_, train.y)
    s0 = inf.score(model, train, method="label-quality", kind="normalized-margin", cv=0)
    np.testing.assert_allclose(s0.values, get_label_quality_scores(labels, model.predict_proba(train.X),
                                                                   method="normalized_margin"), rtol=1e-12)
    s = inf.score(model, train, method="label-quality", kind="confidence-entropy", cv=3, seed=1)
    proba = np.zeros((len(train), 3))
    for fit_idx, held in StratifiedKFold(3, shuffle=True, random_state=1).split(train.X, train.y):
        proba[held] = model.refit(train.subset(fit_idx)).predict_proba(train.X[held])
    np.testing.assert_allclose(s.values, get_label_quality_scores(labels, proba, method="confidence_weighted_entropy"),
                               rtol=1e-9)
    assert not np.allclose(s.values, inf.score(model, train, method="label-quality", kind="confidence-entropy",
                                               cv=0).values)
    with pytest.raises(inf.InputError, match="unknown label-quality kind"):
        inf.score(model, train, method="label-quality", kind="margin")


def test_self_tracin_default_is_the_final_models_squared_gradient_norm(small_mlp, digits_small):
    """[IP]: Self-TracIn at the converged parameters only, |g_z(theta_hat)|^2 (no recorder needed);
    the sum over recorded checkpoints is the option over="checkpoints"."""
    train, _ = digits_small
    assert getattr(small_mlp, "recorder_", None) is None
    s = inf.score(small_mlp, train, method="self-tracin")
    G = per_sample_grads(small_mlp, *small_mlp.tensors(train), method="loop")
    expected = np.array([float(g @ g) for g in G])
    np.testing.assert_allclose(s.raw, expected, rtol=1e-9)
    np.testing.assert_allclose(s.values, -expected, rtol=1e-9)
    with pytest.raises(inf.InputError, match="needs training checkpoints"):
        inf.score(small_mlp, train, method="self-tracin", over="checkpoints")
    ck = [inf.models.training.Checkpoint(1, 0.5, small_mlp.params())]
    np.testing.assert_allclose(inf.score(small_mlp, train, method="self-tracin", over="checkpoints",
                                         checkpoints=ck).raw, 0.5 * expected, rtol=1e-9)
    with pytest.raises(inf.InputError, match="only with over='checkpoints'"):
        inf.score(small_mlp, train, method="self-tracin", checkpoints=ck)
    with pytest.raises(inf.InputError, match="over must be"):
        inf.score(small_mlp, train, method="self-tracin", over="all")


def test_training_checkpoints_for_tracin_follow_the_models_objective(digits_small, small_mlp):
    """Logistic regression records nothing itself: its TracIn checkpoints come from SGD on the same objective
    (the last one close to the optimum); a torch model is refitted with a recorder to the same final model."""
    from influent.evaluation.noisy import needs_checkpoints, training_checkpoints
    from influent.grads.per_sample import flatten

    train, _ = digits_small
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    ck = training_checkpoints(model, train, seed=0)
    assert 10 <= len(ck) <= 11 and all(c.lr == 0.5 for c in ck) and list(ck[0].params) == model.param_names()
    assert [c.step for c in ck] == sorted({c.step for c in ck})
    X, t = model.tensors(train)
    obj = lambda p: float(model.per_sample_loss(p, X, t).mean() + model.regularizer(p))  # noqa: E731
    start = obj({k: torch.zeros_like(v) for k, v in model.params().items()})
    gap = lambda p: (obj(p) - obj(model.params())) / (start - obj(model.params()))  # noqa: E731
    assert gap(ck[-1].params) < 0.05 < gap(ck[0].params)  # SGD ends near the optimum of the same objective
    ck_mlp = training_checkpoints(small_mlp, train, seed=0)
    assert len(ck_mlp) == 10 and [c.step for c in ck_mlp][-1] == 300
    torch.testing.assert_close(flatten(ck_mlp[-1].params), flatten(small_mlp.params()), rtol=1e-10, atol=1e-12)
    assert needs_checkpoints("tracin", {}) and needs_checkpoints("self-tracin", {"over": "checkpoints"})
    assert not needs_checkpoints("self-tracin", {}) and not needs_checkpoints("tracin", {"checkpoints": ck})
