"""FI local influence [FI], the IV baseline and the trimming runner: brute force, invariance, KFSVD,
subsampling, pairwise and paired forms."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

import influent as inf
from influent.evaluation.trimming import (format_wins, method_scorer, random_scorer, trim_curve,
    trimming_experiment, wins_table)
from influent.grads.per_sample import flatten, unflatten
from influent.methods.fi import FIConfig, fi_matrix, fi_paired_matrix, fi_pairwise, fit_solver


# ---- brute force ---------------------------------------------------------------------------------
def _brute(model, train, target_grad, h=1e-5, rcond=1e-10):
    """Per sample: explicit H (torch.func.hessian of the objective), J_z by central finite differences of
    grad_theta l in x, u_c from the definition, numpy pinv of G. Returns (FI, dtheta/dw list, u list, a list)."""
    params = model.params()
    theta = flatten(params).detach()
    X, t = model.tensors(train)
    n, p, d = len(train), theta.numel(), X.shape[1]

    def obj(th):
        P = unflatten(th, params)
        return model.per_sample_loss(P, X, t).mean() + model.regularizer(P)

    H = torch.func.hessian(obj)(theta).numpy()
    Hinv = np.linalg.pinv(H, rcond=1e-12, hermitian=True)

    def g_loss(x, ti):
        f = lambda th: model.per_sample_loss(unflatten(th, params), torch.as_tensor(x)[None], ti[None])[0]
        return torch.func.grad(f)(theta).numpy()

    def logp(th, x):
        out = model.outputs(unflatten(th, params), x[None]).reshape(-1)
        if model.loss == "bce":
            s = torch.sigmoid(out[0])
            return torch.stack([torch.log(1 - s), torch.log(s)])
        return torch.log_softmax(out, 0)

    fis, Ds, Us, Ps = [], [], [], []
    for i in range(n):
        x = X[i].numpy().astype(np.float64)
        J = np.zeros((p, d))
        for k in range(d):
            e = np.zeros(d)
            e[k] = h
            J[:, k] = (g_loss(x + e, t[i]) - g_loss(x - e, t[i])) / (2 * h)
        D = -(1.0 / n) * Hinv @ J
        xt = torch.as_tensor(x)
        P = logp(theta, xt).exp().detach().numpy()
        gth = torch.func.jacrev(lambda th: logp(th, xt))(theta).numpy()
        gx = torch.func.jacrev(lambda xx: logp(theta, xx))(xt).numpy()
        U = gth @ D + gx
        G = sum(P[c] * np.outer(U[c], U[c]) for c in range(len(P)))
        a = D.T @ np.asarray(target_grad)
        fis.append(a @ np.linalg.pinv(G, rcond=rcond, hermitian=True) @ a)
        Ds.append(D), Us.append((gth, gx)), Ps.append(P)
    return np.array(fis), Ds, Us, Ps


@pytest.fixture(scope="module")
def tiny_binary():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    y = (X[:, 0] + 0.6 * rng.normal(size=30) > 0).astype(int)
    Xv = rng.normal(size=(15, 3))
    yv = (Xv[:, 0] + 0.6 * rng.normal(size=15) > 0).astype(int)
    train, valid = inf.from_arrays(X, y), inf.from_arrays(Xv, yv)
    return inf.models.SklearnLogistic(C=1.0).fit(train), train, valid


@pytest.fixture(scope="module")
def tiny_mlp():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 3))
    y = np.digitize(X[:, 0] + 0.3 * X[:, 1] + 0.3 * rng.normal(size=30), [-0.5, 0.5])
    Xv = rng.normal(size=(15, 3))
    yv = np.digitize(Xv[:, 0] + 0.3 * Xv[:, 1], [-0.5, 0.5])
    train, valid = inf.from_arrays(X, y), inf.from_arrays(Xv, yv)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    model = inf.models.TorchAdapter(net, dtype=torch.float64, weight_decay=1e-2,
                                    train=inf.models.TrainConfig(epochs=300)).fit(train)
    return model, train, valid


@pytest.mark.parametrize("which", ["tiny_binary", "tiny_mlp"])
def test_fi_equals_brute_force(which, request):
    """Our batched FI (explicit J by jacfwd-over-grad, and the VJP path) equals the definition computed
    by brute force: explicit H, J_z by finite differences, numpy pinv of G (to 1e-5 relative)."""
    model, train, valid = request.getfixturevalue(which)
    target = inf.targets.Utility(valid)
    expected = _brute(model, train, target.grad(model).numpy())[0]
    s = inf.score(model, train, target=target, method="fi", jacobian="explicit")
    assert s.method == "fi" and s.settings["approx"] == "exact"
    np.testing.assert_allclose(s.raw, expected, rtol=1e-5)
    np.testing.assert_allclose(s.values, -s.raw)
    assert np.all(s.raw > 0) and len(np.unique(np.round(s.raw, 12))) == len(train)
    v = inf.score(model, train, target=target, method="fi", jacobian="vjp")
    np.testing.assert_allclose(v.raw, s.raw, rtol=1e-9)


def test_metric_rank_and_binary_closed_form(tiny_binary):
    """G has rank <= K - 1 (rank one for a binary model) because sum_c P_c u_c = 0; for a binary model
    FI = (a.v)^2 / (sigma (1 - sigma) |v|^4) with v = u_1 / (1 - sigma)."""
    model, train, valid = tiny_binary
    g = inf.targets.Utility(valid).grad(model).numpy()
    fis, Ds, Us, Ps = _brute(model, train, g)
    for i in range(5):
        gth, gx = Us[i]
        U = gth @ Ds[i] + gx
        P = Ps[i]
        np.testing.assert_allclose(P @ U, 0, atol=1e-12)
        v = U[1] / P[0]  # u_1 = (1 - sigma) v
        a = Ds[i].T @ g
        np.testing.assert_allclose(fis[i], (a @ v) ** 2 / (P[0] * P[1] * (v @ v) ** 2), rtol=1e-8)


def _scaled_copy(model, D, K, loss="cross_entropy"):
    """The same network reading features scaled by D: first-layer weight W D^-1 (an exact reparametrisation)."""
    net = copy.deepcopy(model.module)
    first = net[0] if isinstance(net, torch.nn.Sequential) else net
    with torch.no_grad():
        first.weight /= torch.as_tensor(D)
    return inf.models.TorchAdapter(net, loss=loss, dtype=torch.float64, fitted=True, classes=np.arange(K))


@pytest.mark.parametrize("hidden, scale", [(0, 1e3), (6, 10.0), (6, 1e-2)])
def test_fi_invariant_to_rescaling_one_feature(hidden, scale):
    """Theorem 1 of [FI]: rescaling an input feature (and the model with it) leaves FI unchanged, here to
    1e-6 relative. It needs an unregularised model (an L2 penalty is not invariant to rescaling) and an
    invertible G, i.e. d <= K - 1 (here d = 2 features, K = 3 classes)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 2))
    y = (X @ rng.normal(size=(2, 3)) + 0.8 * rng.normal(size=(60, 3))).argmax(1)
    Xv = rng.normal(size=(30, 2))
    yv = (Xv @ rng.normal(size=(2, 3))).argmax(1)
    torch.manual_seed(0)
    net = (torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 3)) if hidden
           else torch.nn.Linear(2, 3))
    model = inf.models.TorchAdapter(net, dtype=torch.float64, weight_decay=0.0,
                                    train=inf.models.TrainConfig(epochs=200)).fit(inf.from_arrays(X, y))
    D = np.array([scale, 1.0])
    f1 = inf.score(model, inf.from_arrays(X, y), target=inf.from_arrays(Xv, yv), method="fi").raw
    f2 = inf.score(_scaled_copy(model, D, 3), inf.from_arrays(X * D, y), target=inf.from_arrays(Xv * D, yv),
                   method="fi").raw
    np.testing.assert_allclose(f2, f1, rtol=1e-6)


def test_fi_invariant_to_isotropic_rescaling_even_when_g_is_singular(tiny_binary):
    """With d > K - 1 the pseudo-inverse makes FI depend on the relative scale of the features (see
    docs/fi.md), but scaling all features by one factor still leaves it unchanged."""
    _, train, valid = tiny_binary
    net = torch.nn.Linear(3, 1)
    model = inf.models.TorchAdapter(net, loss="bce", dtype=torch.float64, weight_decay=0.0,
                                    train=inf.models.TrainConfig(epochs=150)).fit(train)
    f1 = inf.score(model, train, target=valid, method="fi").raw
    s = 7.0
    scaled = _scaled_copy(model, np.full(3, s), 2, loss="bce")
    f2 = inf.score(scaled, inf.from_arrays(train.X * s, train.y), target=inf.from_arrays(valid.X * s, valid.y),
                   method="fi").raw
    np.testing.assert_allclose(f2, f1, rtol=1e-6)


def test_kfsvd_full_rank_equals_exact_on_single_layer(tiny_binary):
    """At full rank (k = d) the truncated SVD reproduces J_z, so KFSVD equals the exact path with the same
    curvature: exact H, and K-FAC H. (K-FAC itself is not the exact Hessian of a logistic layer.)"""
    model, train, valid = tiny_binary
    target = inf.targets.Utility(valid)
    exact = inf.score(model, train, target=target, method="fi").raw
    k_exact = inf.score(model, train, target=target, method="fi", approx="kfsvd", rank=3, solver="exact").raw
    np.testing.assert_allclose(k_exact, exact, rtol=1e-8)
    kfac_path = inf.score(model, train, target=target, method="fi", solver="kfac").raw
    kfsvd = inf.score(model, train, target=target, method="fi", approx="kfsvd", rank=3)
    assert kfsvd.settings["solver"] == "kfac" and kfsvd.settings["rank"] == 3
    np.testing.assert_allclose(kfsvd.raw, kfac_path, rtol=1e-8)
    # a rank-1 truncation is an approximation, and a seeded one
    r1 = inf.score(model, train, target=target, method="fi", approx="kfsvd", rank=1, solver="exact", seed=3).raw
    r1b = inf.score(model, train, target=target, method="fi", approx="kfsvd", rank=1, solver="exact", seed=3).raw
    np.testing.assert_array_equal(r1, r1b)
    assert np.max(np.abs(r1 - exact) / exact) > 1e-3


def test_kfsvd_full_rank_on_mlp_with_exact_solver(tiny_mlp):
    model, train, valid = tiny_mlp
    exact = inf.score(model, train, target=valid, method="fi").raw
    k = inf.score(model, train, target=valid, method="fi", approx="kfsvd", rank=3, solver="exact",
                  power_iters=0).raw
    np.testing.assert_allclose(k, exact, rtol=1e-8)
    # the pairwise route (more directions than classes: products J_z v) at full rank, too
    query = valid.subset(np.arange(5))
    np.testing.assert_allclose(fi_pairwise(model, train, query, solver="exact", approx="kfsvd", rank=3),
                               fi_pairwise(model, train, query), rtol=1e-8)


def _algorithm6(exact, features, rows, seed, trees, quantile=False):
    """[FI] Algorithm 6 written out: a forest fitted on (x_i', rank_i') of the subsample (raw ranks 1..m),
    its predicted rank for every sample, read back on the FI scale through the subsample's quantiles.
    ``quantile``: regress (rank - 1) / (m - 1) instead (the same splits, but exact ties between redundant
    features, e.g. the two one-hot columns, can then be broken differently by round-off)."""
    from scipy.stats import rankdata
    from sklearn.ensemble import RandomForestRegressor

    m = len(rows)
    r = rankdata(exact[rows])
    forest = RandomForestRegressor(n_estimators=trees, max_features="sqrt", random_state=seed, n_jobs=1)
    forest.fit(features[rows], (r - 1) / (m - 1) if quantile else r)
    pred = forest.predict(features)
    return np.quantile(exact[rows], pred if quantile else (pred - 1) / (m - 1))


def test_subsampling_default_is_algorithm_6(tiny_binary):
    """Default: the forest reads x only and predicts the rank of every sample, the subsample included."""
    model, train, valid = tiny_binary
    exact = inf.score(model, train, target=valid, method="fi").raw
    a = inf.score(model, train, target=valid, method="fi", subsample=0.4, seed=5, n_estimators=20)
    b = inf.score(model, train, target=valid, method="fi", subsample=0.4, seed=5, n_estimators=20)
    c = inf.score(model, train, target=valid, method="fi", subsample=0.4, seed=6, n_estimators=20)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    assert a.settings["rank_features"] == "x" and a.settings["keep_exact"] is False
    rows = np.sort(np.random.default_rng(5).choice(len(train), size=12, replace=False))
    np.testing.assert_allclose(a.raw, _algorithm6(exact, train.X, rows, 5, 20), rtol=1e-10)
    # the sampled rows get the forest's prediction, not their computed FI
    assert not np.allclose(a.raw[rows], exact[rows])
    full = inf.score(model, train, target=valid, method="fi", subsample=1.0)
    np.testing.assert_allclose(full.raw, exact, rtol=1e-12)
    with pytest.raises(inf.InputError, match="subsample"):
        inf.score(model, train, target=valid, method="fi", subsample=1.5)
    with pytest.raises(inf.InputError, match="rank_features"):
        inf.score(model, train, target=valid, method="fi", subsample=0.5, rank_features="xyz")


def test_subsampling_variant_keeps_exact_fi_and_ranks_the_rest(tiny_binary):
    """The variant: exact FI on the sampled rows; the forest (features, one-hot label, the model's loss and
    outputs) predicts the others, and its order agrees with exact FI on the rows it never saw."""
    from scipy.stats import spearmanr

    model, train, valid = tiny_binary
    exact = inf.score(model, train, target=valid, method="fi").raw
    s = inf.score(model, train, target=valid, method="fi", subsample=0.4, seed=5, n_estimators=20,
                  rank_features="xy+model", keep_exact=True)
    rows = np.sort(np.random.default_rng(5).choice(len(train), size=12, replace=False))
    others = np.setdiff1d(np.arange(len(train)), rows)
    np.testing.assert_allclose(s.raw[rows], exact[rows], rtol=1e-12)
    X, t = model.tensors(train)
    with torch.no_grad():
        loss = model.per_sample_loss(model.params(), X, t).numpy()[:, None]
        out = model.outputs(model.params(), X).numpy().reshape(len(train), -1)
    feats = np.hstack([train.X, np.eye(2)[train.y], loss, out])
    np.testing.assert_allclose(s.raw[others], _algorithm6(exact, feats, rows, 5, 20, quantile=True)[others], rtol=1e-10)
    assert spearmanr(s.raw[others], exact[others])[0] > 0.5


def test_pairwise_matrix_and_target_swap(tiny_mlp):
    """FI(z'_j, z_i) for a set of queries equals FI with each query's own loss as the target; any Target
    works (here demographic parity through its gradient)."""
    model, train, valid = tiny_mlp
    query = valid.subset(np.arange(4))
    M = fi_pairwise(model, train, query)
    assert M.shape == (len(train), 4)
    for j in range(4):
        col = inf.score(model, train, target=inf.targets.Utility(query.subset([j])), method="fi").raw
        np.testing.assert_allclose(M[:, j], col, rtol=1e-9)
    A = inf.attribute(model, train, query, method="fi")
    np.testing.assert_allclose(A, -M, rtol=1e-9)
    solver = fit_solver(model, train)
    X, t = model.tensors(train)
    grads = inf.grads.GradientSource(model, query).matrix()
    # both product routes (m <= K directions: J^T y; m > K: J v) with both Jacobian forms
    for mode in ("explicit", "vjp"):
        cfg = FIConfig(jacobian=mode)
        np.testing.assert_allclose(fi_matrix(model, X, t, len(train), solver, grads.T, cfg).numpy(), M, rtol=1e-9)
        np.testing.assert_allclose(fi_matrix(model, X, t, len(train), solver, grads[:1].T, cfg).numpy(), M[:, :1],
                                   rtol=1e-9)


def test_fi_with_fairness_target():
    rng = np.random.default_rng(3)
    n = 60
    g = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 3)) + g[:, None] * np.array([0.8, 0, 0])
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0.4).astype(int)
    train, valid = inf.from_arrays(X[:40], y[:40], g[:40]), inf.from_arrays(X[40:], y[40:], g[40:])
    model = inf.models.SklearnLogistic().fit(train)
    dp = inf.targets.DemographicParity(valid)
    s = inf.score(model, train, target=dp, method="fi")
    np.testing.assert_allclose(s.raw, _brute(model, train, dp.grad(model).numpy())[0], rtol=1e-5)


def _pair_brute(brute, g, i, j, rcond=1e-10):
    """FI of perturbing samples i and j together, from the definition (brute-force pieces of `_brute`)."""
    fis, Ds, Us, Ps = brute
    D = np.hstack([Ds[i], Ds[j]])  # (p, 2d)
    d = Ds[i].shape[1]
    G = 0
    for k, block in ((i, 0), (j, 1)):
        gth, gx = Us[k]
        ex = np.zeros((gx.shape[0], 2 * d))
        ex[:, block * d:(block + 1) * d] = gx
        U = gth @ D + ex
        G = G + sum(Ps[k][c] * np.outer(U[c], U[c]) for c in range(len(Ps[k])))
    a = D.T @ g
    return a @ np.linalg.pinv(G, rcond=rcond, hermitian=True) @ a


def test_fi_paired_matches_definition(tiny_mlp):
    model, train, valid = tiny_mlp
    sub = train.subset(np.arange(12))
    model = model.refit(sub)
    g = inf.targets.Utility(valid).grad(model)
    M = fi_paired_matrix(model, sub, g, fit_solver(model, sub))
    np.testing.assert_allclose(M, M.T, rtol=1e-8)
    brute = _brute(model, sub, g.numpy())
    for i, j in [(0, 1), (3, 7), (10, 2)]:
        np.testing.assert_allclose(M[i, j], _pair_brute(brute, g.numpy(), i, j), rtol=1e-5)
    np.testing.assert_allclose(np.diag(M), brute[0], rtol=1e-5)
    s = inf.score(model, sub, target=valid, method="fi-paired")
    off = M + np.diag(np.full(12, -np.inf))
    np.testing.assert_allclose(s.raw, off.max(1), rtol=1e-10)
    with pytest.raises(inf.InputError, match="quadratic"):
        inf.score(model, sub, target=valid, method="fi-paired", max_n=5)


def test_iv_is_exact_influence_removing_the_lowest(tiny_binary):
    """[IV] = g_i^T H_sum^-1 grad f = (1/n) g_i^T H^-1 grad f: our exact 'if' effect (an alias)."""
    model, train, valid = tiny_binary
    iv = inf.score(model, train, target=valid, method="iv")
    ref = inf.score(model, train, target=valid, method="if", solver="exact", damping=0.0)
    np.testing.assert_allclose(iv.values, ref.values, rtol=1e-12)
    assert iv.method == "iv" and iv.settings["solver"] == "exact"
    # the paper's formula with the summed-loss Hessian and the summed validation loss
    params = model.params()
    theta = flatten(params)
    X, t = model.tensors(train)
    Xv, tv = model.tensors(valid)
    n = len(train)
    Hsum = torch.func.hessian(lambda th: model.per_sample_loss(unflatten(th, params), X, t).sum()
                              + n * model.regularizer(unflatten(th, params)))(theta)
    G = inf.grads.GradientSource(model, train).matrix()
    gF = torch.func.grad(lambda th: model.per_sample_loss(unflatten(th, params), Xv, tv).sum())(theta)
    paper = (G @ torch.linalg.solve(Hsum, gF)).numpy()
    np.testing.assert_allclose(paper, iv.raw * len(valid), rtol=1e-8)
    # removing the lowest lowers the validation loss (first order, convex model)
    worst = iv.most_harmful(3)
    refit = model.refit(train.without(worst))
    assert inf.targets.Utility(valid).evaluate(refit) < inf.targets.Utility(valid).evaluate(model)


def test_fi_input_errors(tiny_binary):
    model, train, valid = tiny_binary
    with pytest.raises(inf.InputError, match="approx"):
        inf.score(model, train, target=valid, method="fi", approx="magic")
    with pytest.raises(inf.InputError, match="jacobian"):
        inf.score(model, train, target=valid, method="fi", jacobian="magic")
    with pytest.raises(inf.InputError, match="needs a target"):
        inf.score(model, train, method="fi")
    reg = inf.models.TorchAdapter(torch.nn.Linear(3, 1), loss="mse", dtype=torch.float64,
                                  train=inf.models.TrainConfig(epochs=5)).fit(inf.from_arrays(train.X, train.X[:, 0]))
    with pytest.raises(inf.InputError, match="classifier"):
        inf.score(reg, inf.from_arrays(train.X, train.X[:, 0]),
                  target=inf.from_arrays(valid.X, valid.X[:, 0]), method="fi")


# ---- trimming runner -----------------------------------------------------------------------------
def test_trim_curve_refits_without_the_lowest(tiny_binary):
    model, train, valid = tiny_binary
    s = inf.score(model, train, target=valid, method="iv")
    accs = trim_curve(model, train, valid, s, [0, 4])
    assert accs[0] == model.accuracy(valid)
    assert accs[1] == model.refit(train.without(s.order()[:4])).accuracy(valid)


def test_trimming_experiment_and_wins_table():
    def splits(seed):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 2, 90)
        X = np.array([[-1.0, 0], [1.0, 0]])[y] + rng.normal(size=(90, 2))
        return {k: inf.from_arrays(X[s], y[s]) for k, s in
                (("train", slice(0, 40)), ("valid", slice(40, 60)), ("test", slice(60, 90)))}

    res = trimming_experiment(splits, lambda s: inf.models.SklearnLogistic(), {
        "fi": method_scorer("fi"), "iv": method_scorer("iv"), "random": random_scorer()}, [0, 3], [0, 1])
    assert set(res.columns) >= {"seed", "method", "budget", "accuracy", "seconds"} and len(res) == 12
    base = res[res.budget == 0].groupby("seed").accuracy.nunique()
    assert (base == 1).all()  # b = 0: the same model for every method
    table = wins_table(res)
    assert list(table.budget) == [0, 3] and (table.n_seeds == 2).all()
    assert (table.wins + table.ties + table.losses == 2).all()
    # a handcrafted table: FI beats IV in seeds 0 and 2, ties in 1, loses in 3
    fake = pd.DataFrame({"seed": [0, 1, 2, 3] * 2, "budget": 5, "method": ["fi"] * 4 + ["iv"] * 4,
                         "accuracy": [0.9, 0.8, 0.7, 0.5, 0.8, 0.8, 0.6, 0.6]})
    t = wins_table(fake)
    assert (t.wins[0], t.ties[0], t.losses[0]) == (2, 1, 1)
    np.testing.assert_allclose(t.acc_fi[0], 72.5)
    text = format_wins(t, paper={5: (96.22, 95.77, "23/30")})
    assert "2/4" in text and "96.22" in text and "FI beats IV" in text
