"""First contact with a user's trained torch model: `TorchAdapter(net)` takes it as it is (fitted, its dtype
and device, weights read live), and nothing influent does changes it.

Independent references: the explicit Hessian of the mean training loss plus the L2 term from
`torch.autograd.functional.hessian` on a flat parameter vector, per-sample gradients by a Python loop, and
TracIn from checkpoints our own `fit` records.
"""

import copy

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from torch.func import functional_call

import influent as inf
from influent import InputError
from influent.models import TorchAdapter, TrainConfig, TrainingRecorder

WD = 1e-2


@pytest.fixture(scope="module")
def wine():
    X, y = load_wine(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    idx = np.random.default_rng(0).permutation(len(X))
    return inf.from_arrays(X[idx[:120]], y[idx[:120]]), inf.from_arrays(X[idx[120:]], y[idx[120:]])


def _net(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(13, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).to(dtype)


def _user_loop(net, train, steps=200, lr=0.1, recorder=None, adapter=None):
    """The user's own full-batch SGD loop on mean cross-entropy + WD/2 |theta|^2."""
    X = torch.as_tensor(train.X, dtype=next(net.parameters()).dtype)
    t = torch.as_tensor(train.y)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    net.train()
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(X), t) + 0.5 * WD * sum((p ** 2).sum() for p in net.parameters())
        loss.backward()
        opt.step()
        if recorder is not None:
            recorder.record(adapter, step, lr, last=step == steps)
    return net


@pytest.fixture(scope="module")
def trained(wine):
    train, _ = wine
    return _user_loop(_net(), train)


def _flat_loss(net, names, shapes, X, t, reg):
    def f(theta):
        params, o = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            params[n] = theta[o:o + k].reshape(s)
            o += k
        losses = torch.nn.functional.cross_entropy(functional_call(net, params, (X,)), t, reduction="none")
        return losses.mean() + (0.5 * WD * (theta ** 2).sum() if reg else 0.0)
    return f


def test_exact_if_on_a_float64_mlp_taken_as_it_is_equals_the_explicit_hessian(wine, trained):
    train, valid = wine
    net = trained
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = TorchAdapter(net, weight_decay=WD)  # no fit, no dtype: the module as it is
    assert model.fitted and model.dtype == torch.float64 and model.classes_.tolist() == [0, 1, 2]
    with pytest.warns(RuntimeWarning, match="negative eigenvalue"):  # a named Hessian on a non-convex net
        s = inf.score(model, train, target=valid, method="if", solver="exact", damping=0.0,
                      solver_options={"curvature": "hessian"})
    # the reference, computed without influent
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    X, t = torch.as_tensor(train.X), torch.as_tensor(train.y)
    Xv, tv = torch.as_tensor(valid.X), torch.as_tensor(valid.y)
    H = torch.autograd.functional.hessian(_flat_loss(net, names, shapes, X, t, True), theta)
    gf = torch.func.grad(_flat_loss(net, names, shapes, Xv, tv, False))(theta)
    G = torch.stack([torch.func.grad(_flat_loss(net, names, shapes, X[i:i + 1], t[i:i + 1], False))(theta)
                     for i in range(len(X))])
    assert torch.linalg.eigvalsh(H).min() < 0  # a non-convex net: the Hessian is indefinite here
    ref = (G @ torch.linalg.solve(H, gf) / len(X)).numpy()
    rel = np.abs(s.values - ref).max() / np.abs(ref).max()
    assert rel < 1e-10, rel
    # the user's module is untouched: same weights, same dtype, still in training mode
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]) and v.dtype == torch.float64
    assert net.training


def test_a_float32_network_stays_float32(wine):
    train, valid = wine
    net = _user_loop(_net(torch.float32), train, steps=50)
    model = TorchAdapter(net)
    assert model.dtype == torch.float32 and model.module is net
    assert all(p.dtype == torch.float32 for p in model.params().values())
    s = inf.score(model, train, target=valid, method="ip")
    assert np.isfinite(s.values).all()
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_weights_are_read_live_and_the_recorder_honours_every(wine):
    train, _ = wine
    net = _net()
    adapter = TorchAdapter(net)
    rec = TrainingRecorder(every=7)
    _user_loop(net, train, steps=30, recorder=rec, adapter=adapter)
    assert [c.step for c in rec.checkpoints] == [7, 14, 21, 28, 30]
    for name, p in adapter.params().items():
        assert torch.equal(p, dict(net.named_parameters())[name].detach())
    # checkpoints are the weights of their step, not the initial ones
    assert not torch.equal(rec.checkpoints[0].params["2.weight"], rec.checkpoints[-1].params["2.weight"])


def test_a_cast_copy_follows_the_users_training(wine):
    train, _ = wine
    net = _net(torch.float32)
    adapter = TorchAdapter(net, dtype=torch.float64)
    assert adapter.module is not net and adapter.dtype == torch.float64
    _user_loop(net, train, steps=5)
    for name, p in adapter.params().items():
        assert p.dtype == torch.float64
        assert torch.equal(p, dict(net.named_parameters())[name].detach().double())


def test_tracin_from_the_users_loop_equals_tracin_from_our_recorder(wine):
    train, valid = wine
    steps, lr = 40, 0.1
    init = _net(seed=3)
    # the user's loop, recording through an adapter on their live module
    net = copy.deepcopy(init)
    theirs = TorchAdapter(net, weight_decay=WD)
    rec_user = TrainingRecorder(every=5)
    _user_loop(net, train, steps=steps, lr=lr, recorder=rec_user, adapter=theirs)
    # our fit from the same initial weights, same objective and schedule
    ours = TorchAdapter(copy.deepcopy(init), weight_decay=WD,
                        train=TrainConfig(optimizer="sgd", lr=lr, epochs=steps))
    rec_ours = TrainingRecorder(every=5)
    ours.fit(train, recorder=rec_ours)
    assert [c.step for c in rec_user.checkpoints] == [c.step for c in rec_ours.checkpoints]
    a = inf.score(theirs, train, target=valid, method="tracin", checkpoints=rec_user)
    b = inf.score(ours, train, target=valid, method="tracin")
    np.testing.assert_allclose(a.values, b.values, rtol=1e-9, atol=1e-12 * np.abs(b.values).max())


def test_fit_trains_a_copy_from_the_given_weights_or_init(wine):
    train, _ = wine
    net = _net(seed=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    adapter = TorchAdapter(net, train=TrainConfig(epochs=20))
    adapter.fit(train)
    assert adapter.module is not net
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    # the same weights through a module given fitted=False, and through init=
    other = TorchAdapter(_net(seed=2), train=TrainConfig(epochs=20), init=net).fit(train)
    for k, v in adapter.module.state_dict().items():
        torch.testing.assert_close(v, other.module.state_dict()[k], rtol=0, atol=0)
    with pytest.raises(InputError, match="init does not fit"):
        TorchAdapter(net, init={"0.weight": torch.zeros(2, 2)})


def test_classes_inferred_from_the_output_size_or_given(wine):
    train, valid = wine
    net = _net()
    assert TorchAdapter(net).classes_.tolist() == [0, 1, 2]
    assert TorchAdapter(net, classes=["a", "b", "c"]).classes_.tolist() == ["a", "b", "c"]
    four = torch.nn.Sequential(torch.nn.Linear(13, 4)).double()
    with pytest.raises(InputError, match="4 output"):
        inf.score(TorchAdapter(four, classes=[0, 1, 2]), train, target=valid, method="ip")
    with pytest.raises(InputError, match="4 output"):
        TorchAdapter(four, fitted=False, classes=[0, 1, 2]).fit(train)
    with pytest.raises(InputError, match="unknown label"):
        inf.score(TorchAdapter(net, classes=[0, 1, 5]), train, target=valid, method="ip")


def test_a_fitted_sklearn_logistic_regression_is_taken_as_it_is(wine):
    from sklearn.linear_model import LogisticRegression

    train, valid = wine
    est = LogisticRegression(C=0.3, tol=1e-12, max_iter=10_000).fit(train.X, train.y)
    coef = est.coef_.copy()
    taken = inf.models.SklearnLogistic.from_estimator(est, train)
    ours = inf.models.SklearnLogistic(C=0.3, newton_steps=0).fit(train)
    np.testing.assert_array_equal(taken.module.weight.detach().numpy(), coef)
    np.testing.assert_allclose(taken.predict_proba(valid), est.predict_proba(valid.X), rtol=1e-12, atol=1e-14)
    a = inf.score(taken, train, target=valid, method="if", solver="exact")
    b = inf.score(ours, train, target=valid, method="if", solver="exact")
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-8 * np.abs(b.values).max())
    assert np.array_equal(est.coef_, coef)
    with pytest.raises(InputError, match="fitted scikit-learn LogisticRegression"):
        inf.models.SklearnLogistic.from_estimator(LogisticRegression(), train)


# ---- sound defaults on a non-convex network (issue 12, item 8) ------------------------------------------------
@pytest.fixture(scope="module")
def wine_mlp(wine):
    train, _ = wine
    return inf.models.TabularMLP(hidden=(8,), dtype=torch.float64, train=TrainConfig(epochs=200)).fit(train)


def test_non_convex_default_is_ekfac_with_the_recorded_damping_rule(wine, wine_mlp):
    import warnings

    train, valid = wine
    assert not wine_mlp.is_convex()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default warns about nothing
        s = inf.score(wine_mlp, train, target=valid, method="if")
    assert s.settings["solver"] == "ekfac" and "damping_rule" in s.settings
    # the rule, computed here from per-sample gradients by a loop: 1.0 * (mean |g_i|^2 + sum reg) / p
    params = wine_mlp.params()
    X, t = wine_mlp.tensors(train)
    sq = []
    for i in range(len(train)):
        p = {k: v.clone().requires_grad_() for k, v in params.items()}
        g = torch.autograd.grad(wine_mlp.per_sample_loss(p, X[i:i + 1], t[i:i + 1]).sum(), list(p.values()))
        sq.append(sum(float((gi ** 2).sum()) for gi in g))
    n_p = sum(v.numel() for v in params.values())
    want = 1.0 * (np.mean(sq) + wine_mlp.weight_decay * n_p) / n_p  # DAMPING_FACTOR, chosen by LDS
    assert s.settings["damping"] == pytest.approx(want, rel=1e-10)
    # a user's explicit choice is kept as given
    e = inf.score(wine_mlp, train, target=valid, method="if", solver="ekfac", damping=0.5)
    assert e.settings["damping"] == 0.5 and "damping_rule" not in e.settings


def test_convex_default_is_unchanged(wine):
    train, valid = wine
    m = inf.models.SklearnLogistic(C=1.0).fit(train)
    assert m.is_convex()
    s = inf.score(m, train, target=valid, method="if")
    assert s.settings["solver"] == "exact" and s.settings["damping"] == 0.0 and "damping_rule" not in s.settings
    last = inf.models.base.resolve_params(inf.models.TabularMLP(hidden=(4,)).fit(train), "last")
    assert last.is_convex()


@pytest.mark.parametrize("solver, options", [("lissa", {"scale": "auto", "depth": 20}), ("exact", {})])
def test_an_indefinite_hessian_is_warned_about(solver, options, wine, wine_mlp):
    train, valid = wine
    with pytest.warns(RuntimeWarning, match="negative"):
        inf.score(wine_mlp, train, target=valid, method="if", solver=solver, damping=1e-6, solver_options=options)


def test_cg_error_names_the_curvatures_that_exist(wine, wine_mlp):
    train, valid = wine
    with pytest.raises(InputError, match="'curvature': 'ggn'") as err:
        with pytest.warns(RuntimeWarning):
            inf.score(wine_mlp, train, target=valid, method="if", solver="cg", damping=0.0)
    assert "Gauss-Newton curvature" not in str(err.value).split(";")[0]
