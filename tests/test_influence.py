"""Exactness: influence functions against leave-one-out retraining and explicit Hessians."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

import influent as inf
from influent.curvature import CurvatureContext


@pytest.mark.parametrize("data, C", [("cancer", 0.1), ("iris", 1.0)])
def test_exact_if_matches_leave_one_out(data, C, request):
    """Binary and multiclass logistic regression (float64): the 20 highest and 20 lowest |effect|
    samples, refit without each one; predicted and actual change of validation loss agree."""
    train, valid = request.getfixturevalue(data)
    model = inf.models.SklearnLogistic(C=C).fit(train)
    s = inf.score(model, train, target=inf.targets.Utility(valid), method="if", solver="exact", damping=0.0)
    order = np.argsort(-np.abs(s.values))
    sub = np.concatenate([order[:20], order[-20:]])
    loo = inf.score(model, train, target=inf.targets.Utility(valid), method="loo", subset=sub)
    assert np.isnan(loo.values).sum() == len(train) - 40
    assert pearsonr(s.values[sub], loo.values[sub])[0] > 0.95
    assert spearmanr(s.values[sub], loo.values[sub])[0] > 0.95
    # sign convention: removing a helpful sample raises the validation loss
    helpful = sub[np.argmax(s.values[sub])]
    assert loo.values[helpful] > 0


def test_if_equals_explicit_formula(iris):
    """effect_i = (1/n) grad f^T H^+ g_i with H built by brute force (per-sample Hessians)."""
    train, valid = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    s = inf.score(model, train, target=valid, method="if")
    params = model.params()
    theta = torch.cat([p.reshape(-1) for p in params.values()])
    shapes = {k: v.shape for k, v in params.items()}

    def unflat(th):
        out, i = {}, 0
        for k, sh in shapes.items():
            out[k] = th[i:i + int(np.prod(sh))].reshape(sh)
            i += int(np.prod(sh))
        return out

    X, t = model.tensors(train)
    H = sum(torch.func.hessian(lambda th: model.per_sample_loss(unflat(th), X[i:i + 1], t[i:i + 1])[0])(theta)
            for i in range(len(train))) / len(train)
    H = H + torch.func.hessian(lambda th: model.regularizer(unflat(th)))(theta)
    G = torch.stack([torch.func.grad(lambda th: model.per_sample_loss(unflat(th), X[i:i + 1], t[i:i + 1])[0])(theta)
                     for i in range(len(train))])
    Xv, tv = model.tensors(valid)
    gf = torch.func.grad(lambda th: model.per_sample_loss(unflat(th), Xv, tv).mean())(theta)
    expected = (G @ torch.linalg.pinv(H, rtol=1e-10) @ gf / len(train)).numpy()
    np.testing.assert_allclose(s.values, expected, rtol=1e-7, atol=1e-12)


def test_damping_means_the_same_for_sum_or_mean_losses(digits_small):
    """A user's loss reduced by sum or by mean trains the same model (lr rescaled); our H is the mean
    Hessian either way, so the same damping yields the same ranking, and duplicating the data (which
    doubles a summed objective) changes nothing."""
    train, valid = digits_small
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 6), torch.nn.Tanh(), torch.nn.Linear(6, 4))
    model = inf.models.TorchAdapter(net, dtype=torch.float64, weight_decay=1e-2,
                                    train=inf.models.TrainConfig(epochs=200)).fit(train)
    s1 = inf.score(model, train, target=valid, method="if", solver="exact", damping=0.05)
    doubled = inf.from_arrays(np.concatenate([train.X, train.X]), np.concatenate([train.y, train.y]))
    s2 = inf.score(model, doubled, target=valid, method="if", solver="exact", damping=0.05)
    # same H (mean over identical copies); effects carry 1/n so halve with n doubled
    np.testing.assert_allclose(s2.values[: len(train)] * 2, s1.values, rtol=1e-8)
    np.testing.assert_array_equal(np.argsort(s2.values[: len(train)]), np.argsort(s1.values))


def test_self_influence_and_pseudo_inverse(iris):
    train, _ = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    s = inf.score(model, train, method="self-if")
    assert np.all(s.raw >= -1e-12) and np.allclose(s.values, -s.raw)
    ctx = CurvatureContext(model, train)
    solver = inf.curvature.make_solver("exact").fit(ctx)
    assert solver.n_null_ == 1  # the unpenalised softmax intercept shift
    G = ctx.grad_source().matrix()
    np.testing.assert_allclose(s.raw, (G * solver.solve(G.T).T).sum(1).numpy(), rtol=1e-9)


def test_ggn_equals_hessian_for_logistic_regression(cancer):
    train, _ = cancer
    model = inf.models.SklearnLogistic(C=0.1).fit(train)
    ctx = CurvatureContext(model, train)
    torch.testing.assert_close(ctx.hessian(), ctx.gauss_newton(), rtol=1e-10, atol=1e-12)


def test_ip_and_pairwise_consistency(small_mlp, digits_small):
    train, valid = digits_small
    A = inf.attribute(small_mlp, train, valid, method="ip")
    s = inf.score(small_mlp, train, target=valid, method="ip")
    # utility IP = g_i . mean_j g_valid_j = row means of the pairwise matrix
    np.testing.assert_allclose(A.mean(1), s.values, rtol=1e-9, atol=1e-12)
    Aif = inf.attribute(small_mlp, train, valid, method="if", solver="exact", damping=0.1)
    sif = inf.score(small_mlp, train, target=valid, method="if", solver="exact", damping=0.1)
    np.testing.assert_allclose(Aif.mean(1), sif.values, rtol=1e-8, atol=1e-12)


def test_unknown_method_and_option_errors(iris):
    train, valid = iris
    model = inf.models.SklearnLogistic().fit(train)
    with pytest.raises(inf.InputError, match="unknown method"):
        inf.score(model, train, target=valid, method="nope")
    with pytest.raises(inf.InputError, match="does not take option"):
        inf.score(model, train, target=valid, method="ip", depth=3)
    with pytest.raises(inf.InputError, match="needs a target"):
        inf.score(model, train, method="if")
    with pytest.raises(inf.InputError, match="unknown solver"):
        inf.score(model, train, target=valid, method="if", solver="magic")
