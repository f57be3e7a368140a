"""`mislabel`: leave-one-out logits from one Newton step per sample, checked against an explicit Newton step
(explicit Hessian of the leave-one-out objective), against real leave-one-out refits, and as a detector."""

import numpy as np
import pytest
import torch
from torch.func import functional_call, hessian, jacrev

import influent as inf
from influent.actions import relabel
from influent.curvature import CurvatureContext
from influent.data import from_arrays
from influent.data.validate import InputError
from influent.evaluation.detection import detection
from influent.evaluation.noisy import flip_labels
from influent.models.refit import refit_many
from influent.grads.per_sample import flatten, unflatten
from influent.methods.mislabel import class_thresholds, label_scores, leave_one_out
from influent.models import SklearnLogistic, TabularMLP


def _blobs(n, K, d=3, seed=0, shift=1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    X = rng.standard_normal((n, d)) + shift * np.eye(d)[y % d] * (1 + y // d)[:, None]
    return from_arrays(X, y)


class Logits:
    """Picklable metric: the refit model's logits at the given rows."""

    def __init__(self, X):
        self.X = torch.as_tensor(X)

    def __call__(self, model):
        with torch.no_grad():
            return model.outputs(model.params(), self.X.to(model.dtype)).numpy()


def _explicit_newton(model, train, i, damping=0.0):
    """Outputs at x_i after one Newton step on the leave-one-out objective, explicit Hessian (pinv)."""
    params = model.params()
    theta = flatten(params)
    X, t = model.tensors(train)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[i] = False

    def obj(th):
        p = unflatten(th, params)
        return (model.per_sample_loss(p, X[keep], t[keep]).sum() / len(train) + model.regularizer(p)
                + 0.5 * damping * ((th - theta) ** 2).sum())

    g, H = torch.func.grad(obj)(theta), hessian(obj)(theta)
    new = theta - torch.linalg.pinv(H, rtol=1e-10, hermitian=True) @ g
    with torch.no_grad():
        return model.outputs(unflatten(new, params), X[i:i + 1])[0].numpy()


@pytest.mark.parametrize("K", [2, 3])
def test_loo_logits_equal_explicit_newton_step_and_match_refits(K):
    train = _blobs(200, K, seed=K)
    model = SklearnLogistic(C=1.0).fit(train)
    loo = leave_one_out(model, train)
    for i in (0, 7, 31):
        np.testing.assert_allclose(loo.loo_logits[i], _explicit_newton(model, train, i), atol=1e-9)
    # real refits without each sample
    true = refit_many(model, train, [np.delete(np.arange(len(train)), i) for i in range(len(train))],
                      Logits(train.X), n_jobs=1)
    true = np.stack([true[i][i] for i in range(len(train))])
    if K > 2:  # softmax logits are defined up to a common shift: compare centred logits
        true = true - true.mean(1, keepdims=True)
        est = loo.loo_logits - loo.loo_logits.mean(1, keepdims=True)
        base = loo.logits - loo.logits.mean(1, keepdims=True)
    else:
        est, base = loo.loo_logits, loo.logits
    shift_true, shift_est = true - base, est - base
    full = leave_one_out(model, train, hessian="full")
    shift_full = (full.loo_logits - full.logits) - ((full.loo_logits - full.logits).mean(1, keepdims=True) if K > 2 else 0)
    rel = lambda s: np.linalg.norm(s - shift_true) / np.linalg.norm(shift_true)
    assert np.abs(shift_true).max() > 0.1  # the removal moves the logits
    assert rel(shift_est) < 0.06  # the error of one Newton step is second order in the (1/n) step
    assert rel(shift_est) < 0.6 * rel(shift_full)  # the leave-one-out Hessian beats the classical influence step
    assert np.corrcoef(shift_est.ravel(), shift_true.ravel())[0, 1] > 0.998
    # leave-one-out probabilities of the given label are what refits give
    P = torch.softmax(torch.as_tensor(true), 1).numpy() if K > 2 else None
    if P is not None:
        idx = np.arange(len(train))
        np.testing.assert_allclose(loo.proba()[idx, loo.labels], P[idx, loo.labels], atol=0.01)


def test_last_layer_of_mlp_matches_brute_force_newton_step():
    train = _blobs(60, 3, d=4, seed=1)
    model = TabularMLP(hidden=(8,), params="last", dtype=torch.float64).fit(train)
    damping = 1e-2
    loo = leave_one_out(model, train, damping=damping)
    # brute force: explicit Hessian from HVPs, explicit per-sample Jacobian, one (p x p) solve per sample
    ctx = CurvatureContext(model, train, damping)
    H = ctx.hessian() + damping * torch.eye(ctx.p, dtype=torch.float64)
    params = model.params()
    X, t = model.tensors(train)
    out = lambda th, x: model.outputs(unflatten(th, params), x[None])[0]
    for i in (0, 5, 42):
        J = jacrev(out)(ctx.theta, X[i])  # (K, p)
        z = out(ctx.theta, X[i]).detach()
        P = torch.softmax(z, 0)
        r = P - torch.eye(3, dtype=torch.float64)[t[i]]
        Lam = torch.diag(P) - torch.outer(P, P)
        H_i = H - J.T @ Lam @ J / len(train)
        step = torch.linalg.solve(H_i, J.T @ r) / len(train)
        np.testing.assert_allclose(loo.loo_logits[i], (z + J @ step).numpy(), atol=1e-8)


def test_detects_flipped_labels_and_cleaning_rounds_help():
    train = _blobs(300, 4, d=4, seed=3, shift=2.0)
    noisy_y, mask = flip_labels(train.y, 0.3, "class-conditional", seed=0)
    noisy = train.with_labels(noisy_y)
    model = SklearnLogistic(C=1.0).fit(noisy)
    s = inf.score(model, noisy, method="mislabel", rounds=0)
    assert s.method == "mislabel" and s.settings["kind"] == "margin"
    d0 = detection(s, mask)
    d2 = detection(inf.score(model, noisy, method="mislabel", rounds=2), mask)
    assert d0.auc > 0.8 and d2.auc > d0.auc


def test_label_scores_and_thresholds_by_hand():
    P = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    y = np.array([0, 1, 0, 2])
    t = class_thresholds(P, y)
    np.testing.assert_allclose(t, [0.6, 0.6, 0.6])
    np.testing.assert_allclose(label_scores(P, y, "self-confidence", calibrate=False), [0.7, 0.6, 0.5, 0.6])
    np.testing.assert_allclose(label_scores(P, y, "margin", calibrate=False), [0.5, 0.3, 0.1, 0.4])
    Q = P / t
    np.testing.assert_allclose(label_scores(P, y, "margin"), [Q[0, 0] - Q[0, 1], Q[1, 1] - Q[1, 2],
                                                             Q[2, 0] - Q[2, 1], Q[3, 2] - Q[3, 0]])


def test_relabel_with_mislabel_scores_uses_leave_one_out_probabilities():
    train = _blobs(150, 3, seed=4)
    noisy_y, mask = flip_labels(train.y, 0.2, "uniform", seed=1)
    noisy = train.with_labels(noisy_y)
    model = SklearnLogistic(C=1.0).fit(noisy)
    s = inf.score(model, noisy, method="mislabel")
    edit = relabel(noisy, s, 20, model=model)
    pos = s.most_harmful(20)
    P = leave_one_out(model, noisy, rounds=5, refresh=5, precision="float32").proba()[pos]  # the defaults
    P[np.arange(20), np.searchsorted(model.classes_, noisy.y[pos])] = -np.inf
    np.testing.assert_array_equal(edit.split.y[pos], model.classes_[P.argmax(1)])
    assert np.mean(edit.split.y[mask] == train.y[mask]) > np.mean(noisy.y[mask] == train.y[mask])


def test_bad_input():
    train = _blobs(60, 3, d=4)
    mlp = TabularMLP(hidden=(8,), dtype=torch.float64).fit(train)
    with pytest.raises(InputError, match="final"):
        inf.score(mlp, train, method="mislabel", params="all")
    model = SklearnLogistic().fit(train)
    with pytest.raises(InputError, match="kind"):
        inf.score(model, train, method="mislabel", kind="nope")
    with pytest.raises(InputError, match="hessian"):
        inf.score(model, train, method="mislabel", hessian="nope")


def test_float32_products_match_float64():
    train = _blobs(400, 5, d=6, seed=5)
    noisy_y, _ = flip_labels(train.y, 0.2, "uniform", seed=2)
    noisy = train.with_labels(noisy_y)
    model = SklearnLogistic(C=1.0).fit(noisy)
    for rounds in (0, 3):
        a = leave_one_out(model, noisy, rounds=rounds)
        b = leave_one_out(model, noisy, rounds=rounds, precision="float32")
        shift = a.loo_logits - a.logits
        assert np.abs(shift).max() > 0.1
        # float32 error on the shift, relative to its size: a few float32 epsilons times the conditioning
        assert np.linalg.norm((b.loo_logits - b.logits) - shift) < 1e-4 * np.linalg.norm(shift)
        np.testing.assert_allclose(b.leverage, a.leverage, atol=1e-5)
    with pytest.raises(InputError, match="precision"):
        inf.score(model, noisy, method="mislabel", precision="float16")


def test_stale_rounds_return_exact_leave_one_out_at_the_last_parameters():
    """refresh > 1 flags from stale leverage blocks; the returned logits must still be the leave-one-out
    Newton step of the weighted objective at the last parameters (explicit Hessian per sample)."""
    train = _blobs(120, 3, d=3, seed=6)
    noisy_y, _ = flip_labels(train.y, 0.25, "uniform", seed=3)
    noisy = train.with_labels(noisy_y)
    model = SklearnLogistic(C=1.0).fit(noisy)
    loo = leave_one_out(model, noisy, rounds=20, refresh=20)  # stops early, on stale flags
    w = torch.as_tensor(loo.weights)
    assert 0 < (w == 0).sum() < len(w) and not np.allclose(loo.theta, leave_one_out(model, noisy).theta)
    params = {"weight": torch.as_tensor(loo.theta[:, :-1]), "bias": torch.as_tensor(loo.theta[:, -1])}
    theta = flatten(params)
    X, t = model.tensors(noisy)
    for i in [int(j) for j in torch.nonzero(w == 1)[:3, 0]] + [int(torch.nonzero(w == 0)[0, 0])]:
        wi = w.clone()
        wi[i] = 0

        def obj(th, wts=wi):
            p = unflatten(th, params)
            return (model.per_sample_loss(p, X, t) * wts).sum() / len(noisy) + model.regularizer(p)

        # the step treats the last parameters as the weighted optimum (as at the fitted model): the
        # leave-one-out gradient is the weighted objective's minus sample i's term, the latter taken as 0
        g = torch.func.grad(obj)(theta) - torch.func.grad(lambda th: obj(th, w))(theta)
        new = theta - torch.linalg.pinv(hessian(obj)(theta), rtol=1e-10, hermitian=True) @ g
        with torch.no_grad():
            z = model.outputs(unflatten(new, params), X[i:i + 1])[0].numpy()
            z0 = model.outputs(params, X[i:i + 1])[0].numpy()
        # softmax logits are defined up to a common shift (the Newton step moves along the lifted gauge)
        np.testing.assert_allclose(loo.loo_logits[i] - loo.loo_logits[i].mean(), z - z.mean(), atol=1e-9)
        if w[i] == 0:  # out of the objective already: its leave-one-out logits are the in-sample ones
            np.testing.assert_allclose(loo.loo_logits[i], z0, atol=1e-9)


def _overlapping(seed):
    """Unit-norm features (like sentence embeddings), overlapping classes, 20% flips, strong L2: the regime where
    the cleaning rounds drop clean-but-ambiguous samples until half the set is flagged."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((200, 40))
    y = (X @ rng.standard_normal(40) / 40**0.5 + 0.9 * rng.standard_normal(200) > 0).astype(int)
    noisy, flipped = flip_labels(y, 0.2, "uniform", seed)
    return from_arrays(X / np.linalg.norm(X, axis=1, keepdims=True), noisy), flipped


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_check_rounds_keeps_round_zero_when_the_rounds_lower_given_label_accuracy(seed):
    from sklearn.metrics import roc_auc_score
    from influent.methods.mislabel import given_label_accuracy

    train, flipped = _overlapping(seed)
    model = SklearnLogistic(C=0.3).fit(train)
    zero = leave_one_out(model, train, 0.0, "loo", 512, 0, 1, 5, "float32")
    rounds = leave_one_out(model, train, 0.0, "loo", 512, 5, 1, 5, "float32")
    checked = leave_one_out(model, train, 0.0, "loo", 512, 5, 1, 5, "float32", check=True)
    assert given_label_accuracy(rounds) < given_label_accuracy(zero) - 0.05  # the collapse
    assert checked.rounds_rejected and np.all(checked.weights == 1)
    np.testing.assert_allclose(checked.loo_logits, zero.loo_logits)
    auc = lambda r: roc_auc_score(flipped, -label_scores(r.proba(), r.labels, "margin", False))
    assert auc(checked) > auc(rounds) + 0.03
    # the method's default checks; check_rounds=False gives the rounds' scores
    np.testing.assert_allclose(inf.score(model, train, method="mislabel").values,
                               label_scores(zero.proba(), zero.labels, "margin", False), rtol=1e-6)
    np.testing.assert_allclose(inf.score(model, train, method="mislabel", check_rounds=False).values,
                               label_scores(rounds.proba(), rounds.labels, "margin", False), rtol=1e-6)


def test_check_rounds_keeps_the_rounds_where_they_help():
    train = _blobs(300, 3, seed=5)
    noisy, flipped = flip_labels(train.y, 0.3, "class-conditional", seed=1)
    train = train.with_labels(noisy)
    model = SklearnLogistic(C=1.0).fit(train)
    rounds = leave_one_out(model, train, 0.0, "loo", 512, 5, 1, 5, "float32")
    checked = leave_one_out(model, train, 0.0, "loo", 512, 5, 1, 5, "float32", check=True)
    assert not checked.rounds_rejected and (checked.weights == 0).any()
    np.testing.assert_allclose(checked.loo_logits, rounds.loo_logits)
