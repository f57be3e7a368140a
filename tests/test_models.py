import numpy as np
import pytest
import torch

import influent as inf
from influent.data import InputError


@pytest.mark.parametrize("data", ["cancer", "iris"])
def test_sklearn_objective_is_reproduced(data, request):
    """At scikit-learn's optimum the gradient of our mean-loss + |W|^2/(2Cn) objective vanishes."""
    train, _ = request.getfixturevalue(data)
    for C in (0.1, 1.0):
        m = inf.models.SklearnLogistic(C=C, newton_steps=0).fit(train)
        p = {k: v.requires_grad_(True) for k, v in m.params().items()}
        X, t = m.tensors(train)
        obj = m.per_sample_loss(p, X, t).mean() + m.regularizer(p)
        g = torch.autograd.grad(obj, list(p.values()))
        assert max(float(x.abs().max()) for x in g) < 1e-6
        np.testing.assert_allclose(m.predict_proba(train.X), m.estimator_.predict_proba(train.X), atol=1e-12)


def test_newton_polish_reaches_machine_precision(iris):
    train, _ = iris
    m = inf.models.SklearnLogistic(C=1.0).fit(train)
    p = {k: v.requires_grad_(True) for k, v in m.params().items()}
    X, t = m.tensors(train)
    g = torch.autograd.grad(m.per_sample_loss(p, X, t).mean() + m.regularizer(p), list(p.values()))
    assert max(float(x.abs().max()) for x in g) < 1e-12


@pytest.mark.parametrize("data", ["cancer", "iris"])
@pytest.mark.parametrize("intercept", [True, False])
def test_closed_form_hessian_equals_autodiff_hessian(data, intercept, request):
    """The logistic closed-form Hessian (weighted) equals torch.func.hessian of the same objective."""
    from influent.grads.per_sample import flatten, unflatten

    train, _ = request.getfixturevalue(data)
    m = inf.models.SklearnLogistic(C=0.3, fit_intercept=intercept).fit(train)
    X, t = m.tensors(train)
    w = torch.linspace(0.5, 2.0, X.shape[0], dtype=torch.float64)
    params = m.params()

    def objective(theta):
        p = unflatten(theta, params)
        return (w * m.per_sample_loss(p, X, t)).sum() / X.shape[0] + m.regularizer(p)

    H = torch.func.hessian(objective)(flatten(params))
    torch.testing.assert_close(m.closed_form_hessian(X, t, w, chunk_size=37), H, rtol=1e-10, atol=1e-13)


def test_mlp_is_deterministic_and_clone_retrains_identically(digits_small):
    train, valid = digits_small
    cfg = inf.models.TrainConfig(epochs=30, batch_size=32, seed=3)
    a = inf.models.TabularMLP(hidden=(16,), train=cfg).fit(train)
    b = a.clone().fit(train)
    for (na, pa), (nb, pb) in zip(a.params().items(), b.params().items()):
        assert na == nb and torch.equal(pa, pb)
    assert a.accuracy(valid) > 0.8


def test_param_subsets(small_mlp):
    assert small_mlp.param_names() == ["0.weight", "0.bias", "2.weight", "2.bias"]
    last = small_mlp.clone()
    last.params_spec = "last"
    last.module = small_mlp.module
    assert last.param_names() == small_mlp.param_names()[-2:]
    named = small_mlp.clone()
    named.module = small_mlp.module
    named.params_spec = [small_mlp.param_names()[0].split(".")[0]]
    assert named.param_names() == small_mlp.param_names()[:2]
    named.params_spec = ["nope"]
    with pytest.raises(InputError, match="match no parameter"):
        named.param_names()


def test_user_torch_module_and_unknown_labels(digits_small):
    train, _ = digits_small
    net = torch.nn.Sequential(torch.nn.Linear(64, 10), torch.nn.Tanh(), torch.nn.Linear(10, 4))
    m = inf.models.TorchAdapter(net, train=inf.models.TrainConfig(epochs=50)).fit(train)
    assert m.predict_proba(train.X).shape == (len(train), 4)
    with pytest.raises(InputError, match="unknown label"):
        m.encode(np.array([0, 7]))
    with pytest.raises(InputError, match="not fitted"):
        inf.models.TorchAdapter(net, fitted=False).predict_proba(train.X)
