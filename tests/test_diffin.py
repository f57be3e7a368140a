"""Diff-In: finite-difference vs exact HVPs, the formula against explicit Hessians, the sign against
leave-one-out retraining under the same SGD schedule, options, and the three tasks."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.datasets import load_breast_cancer
from sklearn.preprocessing import StandardScaler
from torch.func import grad, hessian

import influent as inf
from influent.actions import diffin_tasks
from influent.grads import flatten, per_sample_grads, unflatten
from influent.methods.diffin import _Objective, diffin_parts, hvp, proxy_batches, select_checkpoints
from influent.models import TorchAdapter, TrainConfig, TrainingRecorder
from influent.targets import Utility


def _tanh_mlp(d, k, hidden, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, k))


@pytest.fixture(scope="module")
def recorded_mlp(digits_small):
    """Small tanh MLP (float64) trained by minibatch SGD, four checkpoints."""
    train, valid = digits_small
    rec = TrainingRecorder(every=10)
    m = TorchAdapter(_tanh_mlp(64, 4, 8), dtype=torch.float64, weight_decay=1e-3,
                     train=TrainConfig(optimizer="sgd", lr=0.3, epochs=10, batch_size=40)).fit(train, recorder=rec)
    return m, rec


def _cancer(n, n_features=30):
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)[:, :n_features]
    idx = np.random.default_rng(0).permutation(len(X))
    return inf.from_arrays(X[idx[:n]], y[idx[:n]]), inf.from_arrays(X[idx[300:]], y[idx[300:]])


def _logistic(train, lr, epochs, every):
    torch.manual_seed(0)
    rec = TrainingRecorder(every=every)
    m = TorchAdapter(torch.nn.Linear(train.n_features, 2), dtype=torch.float64,
                     train=TrainConfig(optimizer="sgd", lr=lr, epochs=epochs)).fit(train, recorder=rec)
    return m, rec


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


# ---- finite differences against exact double-backward -------------------------------------------
def test_fd_hvp_matches_exact_hvp_float64(recorded_mlp, digits_small):
    m, rec = recorded_mlp
    train, valid = digits_small
    X, t = m.tensors(train)
    obj = _Objective(m, m.params())
    theta = flatten(rec.checkpoints[-1].params)
    g = grad(obj.batch(X[:64], t[:64]))
    v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = hvp(g, theta, v, "exact")
    H = hessian(obj.batch(X[:64], t[:64]))(theta)
    np.testing.assert_allclose(exact, H @ v, rtol=1e-9, atol=1e-12)
    err3 = float((hvp(g, theta, v, "fd", 1e-3) - exact).norm() / exact.norm())
    err4 = float((hvp(g, theta, v, "fd", 1e-4) - exact).norm() / exact.norm())
    print(f"batch HVP relative error: eps=1e-3 {err3:.2e}, eps=1e-4 {err4:.2e}")
    assert err3 < 1e-2
    assert err4 < err3 / 5  # first-order accurate in eps
    assert torch.equal(hvp(g, theta, torch.zeros_like(v), "fd"), torch.zeros_like(v))
    # every per-sample term and the final statistics, target and self versions
    target = Utility(valid)
    for tg in (target, None):
        fd = diffin_parts(m, train, rec.checkpoints, tg, batch_size=32, hvp_kind="fd", eps=1e-3)
        ex = diffin_parts(m, train, rec.checkpoints, tg, batch_size=32, hvp_kind="exact")
        np.testing.assert_array_equal(fd.first, ex.first)
        for name in ("batch_term", "sample_term"):
            e = _rel(getattr(fd, name), getattr(ex, name))
            print(f"{'target' if tg else 'self'} {name}: relative error {e:.2e}")
            assert e < 1e-2
        assert _rel(fd.raw(), ex.raw()) < 1e-2


# ---- the formula against explicit Hessians ---------------------------------------------------------
def test_formula_matches_brute_force_with_explicit_hessians():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=40) > 0).astype(int)
    train, valid = inf.from_arrays(X[:24], y[:24]), inf.from_arrays(X[24:], y[24:])
    rec = TrainingRecorder(every=4)
    m = TorchAdapter(_tanh_mlp(3, 2, 3, seed=1), dtype=torch.float64, weight_decay=1e-2,
                     train=TrainConfig(optimizer="sgd", lr=0.5, epochs=6, batch_size=8)).fit(train, recorder=rec)
    ckpts = rec.checkpoints  # steps 4, 8, 12, 16, 18
    n, M, T = len(train), len(ckpts), ckpts[-1].step
    assert T == 18 and M == 5
    like = m.params()
    Xt, tt = m.tensors(train)
    Xv, tv = m.tensors(valid)
    batches = proxy_batches(n, M, batch_size=8, n_batches=2, seed=0)
    raw_t, raw_s, first_t, first_s = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    for c, ck in enumerate(ckpts):
        th = flatten(ck.params)
        P = lambda th_: unflatten(th_, like)  # noqa: E731
        G = per_sample_grads(m, Xt, tt, params=ck.params, method="loop")
        gV = grad(lambda th_: m.per_sample_loss(P(th_), Xv, tv).mean())(th)
        Hz = [hessian(lambda th_, i=i: m.per_sample_loss(P(th_), Xt[i:i + 1], tt[i:i + 1])[0])(th) for i in range(n)]
        tot_t, tot_s = np.zeros(n), np.zeros(n)
        for B in batches[c]:
            Bi = torch.as_tensor(B)
            obj = lambda th_: m.per_sample_loss(P(th_), Xt[Bi], tt[Bi]).mean() + m.regularizer(P(th_))  # noqa: E731
            HB, GB = hessian(obj)(th), grad(obj)(th)
            for i in range(n):
                tot_t[i] += float(gV @ (HB @ G[i] + Hz[i] @ GB)) / 2
                tot_s[i] += float(G[i] @ (HB @ G[i] + Hz[i] @ GB)) / 2
        a = -ck.step * ck.lr**2 / (n * M)
        raw_t += a * tot_t
        raw_s += a * tot_s
        first_t += ck.lr / (n * M) * (G @ gV).numpy()
        first_s += ck.lr / (n * M) * (G**2).sum(1).numpy()
    opts = dict(hvp="exact", batch_size=8, n_batches=2)
    s = inf.score(m, train, target=valid, method="diffin", **opts)
    np.testing.assert_allclose(s.raw, raw_t, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(s.values, -T * raw_t, rtol=1e-9, atol=1e-15)
    s1 = inf.score(m, train, target=valid, method="diffin", first_order=True, **opts)
    np.testing.assert_allclose(s1.values, T * (first_t + raw_t), rtol=1e-9, atol=1e-15)
    ss = inf.score(m, train, method="self-diffin", **opts)
    np.testing.assert_allclose(ss.raw, raw_s, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(ss.values, T * raw_s, rtol=1e-9, atol=1e-15)  # -(rise) = -(-T raw)
    ss1 = inf.score(m, train, method="self-diffin", first_order=True, **opts)
    np.testing.assert_allclose(ss1.values, -T * (first_s + raw_s), rtol=1e-9, atol=1e-15)
    assert ss.settings["hvp"] == "exact" and ss.settings["checkpoint_steps"] == [4, 8, 12, 16, 18]
    # a subset of checkpoints: m and the proxy batches follow the subset, T stays the training length
    sub = inf.score(m, train, target=valid, method="diffin", checkpoint_subset=[8, 18], **opts)
    parts = diffin_parts(m, train, [ckpts[1], ckpts[4]], Utility(valid), hvp_kind="exact", batch_size=8, n_batches=2)
    np.testing.assert_allclose(sub.values, -T * parts.raw(), rtol=1e-12)


# ---- the sign against leave-one-out retraining under the same schedule ----------------------------
def _loo(m, train, valid):
    base = m.loss_on(valid)
    fits = [m.clone().fit(train.without([i])) for i in range(len(train))]
    rise = np.array([f.loss_on(valid) - base for f in fits])
    own = np.array([f.loss_on(train.subset([i])) - m.loss_on(train.subset([i])) for i, f in enumerate(fits)])
    return rise, own


@pytest.mark.slow
def test_sign_follows_leave_one_out_retraining_logistic_regression():
    """Full-batch SGD, the same initial weights and steps with sample i removed: values correlate
    positively with the rise of the validation loss; the paper's raw statistic negatively."""
    train, valid = _cancer(50)
    m, rec = _logistic(train, lr=0.3, epochs=60, every=6)
    loo, own = _loo(m, train, valid)
    s = inf.score(m, train, target=valid, method="diffin")
    r_values, r_raw = pearsonr(s.values, loo)[0], pearsonr(s.raw, loo)[0]
    r_self = pearsonr(-inf.score(m, train, method="self-diffin").values, own)[0]
    print(f"pearson with LOO: values {r_values:.3f}, paper raw {r_raw:.3f}, self vs own-loss LOO {r_self:.3f}")
    assert r_values > 0.25
    assert r_raw < -0.25
    assert r_self > 0.5


@pytest.mark.slow
def test_first_order_term_makes_the_paper_sign_right_on_short_training():
    """With eta * lambda * T small the full second-order expansion (first_order=True) estimates the
    rise itself: high correlation and a regression slope near one."""
    train, valid = _cancer(50)
    m, rec = _logistic(train, lr=0.01, epochs=10, every=1)
    loo, own = _loo(m, train, valid)
    s = inf.score(m, train, target=valid, method="diffin", first_order=True)
    r = pearsonr(s.values, loo)[0]
    slope = np.polyfit(s.values, loo, 1)[0]
    r_self = pearsonr(-inf.score(m, train, method="self-diffin", first_order=True).values, own)[0]
    print(f"first_order=True: pearson {r:.3f}, slope {slope:.2f}, self {r_self:.4f}")
    assert r > 0.85 and 0.6 < slope < 1.6
    assert r_self > 0.99
    # data deletion: the prediction for a set is the centred sum of the values, in the target's units
    rng = np.random.default_rng(0)
    sets = [rng.choice(50, size=k, replace=False) for k in rng.integers(1, 6, size=20)]
    actual = np.array([m.clone().fit(train.without(S)).loss_on(valid) - m.loss_on(valid) for S in sets])
    pred = diffin_tasks.delete(m, train, valid, sets, scores=s)
    plain = diffin_tasks.delete(m, train, valid, sets, scores=s, center=False)
    np.testing.assert_allclose(plain, [s.values[S].sum() for S in sets])
    r_del, r_plain = pearsonr(pred, actual)[0], pearsonr(plain, actual)[0]
    print(f"deletion of 1-5 of 50: pearson centred {r_del:.3f}, uncentred {r_plain:.3f}")
    assert r_del > 0.85 and r_del > r_plain + 0.1
    assert 0.6 < np.polyfit(pred, actual, 1)[0] < 1.6


# ---- options and errors -----------------------------------------------------------------------------
def test_options_and_clear_errors(recorded_mlp, digits_small):
    m, rec = recorded_mlp
    train, valid = digits_small
    assert [c.step for c in select_checkpoints(rec.checkpoints, 2)] == [20, 40]
    assert [c.step for c in select_checkpoints(rec.checkpoints, 1)] == [40]
    assert [c.step for c in select_checkpoints(rec.checkpoints, [30, 10])] == [10, 30]
    with pytest.raises(inf.InputError, match="no checkpoint at step"):
        inf.score(m, train, target=valid, method="diffin", checkpoint_subset=[11])
    with pytest.raises(inf.InputError, match="between 1 and the 4"):
        inf.score(m, train, target=valid, method="diffin", checkpoint_subset=9)
    with pytest.raises(inf.InputError, match="hvp must be one of"):
        inf.score(m, train, target=valid, method="diffin", hvp="cg")
    with pytest.raises(inf.InputError, match="eps must be a positive"):
        inf.score(m, train, target=valid, method="diffin", eps=0)
    with pytest.raises(inf.InputError, match="batch_size must be a positive"):
        inf.score(m, train, target=valid, method="diffin", batch_size=0)
    with pytest.raises(inf.InputError, match="needs a target"):
        inf.score(m, train, method="diffin")
    with pytest.raises(inf.InputError, match="does not take"):
        inf.score(m, train, target=valid, method="diffin", solver="cg")
    plain = TorchAdapter(_tanh_mlp(64, 4, 8), dtype=torch.float64, train=TrainConfig(epochs=2)).fit(train)
    with pytest.raises(inf.InputError, match="needs training checkpoints"):
        inf.score(plain, train, method="self-diffin")
    # proxy batches: fresh per checkpoint, distinct positions, the whole set when batch_size >= n
    b = proxy_batches(10, 3, batch_size=4, n_batches=2, seed=1)
    assert len(b) == 3 and all(len(x) == 2 and all(len(np.unique(i)) == 4 for i in x) for x in b)
    assert not np.array_equal(b[0][0], b[1][0])
    assert np.array_equal(proxy_batches(10, 1, batch_size=50)[0][0], np.arange(10))
    # several proxy batches average the batch-dependent terms; the first-order term does not depend on them
    p1 = diffin_parts(m, train, rec.checkpoints[-1:], Utility(valid), batch_size=16, n_batches=1, seed=5)
    p3 = diffin_parts(m, train, rec.checkpoints[-1:], Utility(valid), batch_size=16, n_batches=3, seed=5)
    np.testing.assert_array_equal(p1.first, p3.first)
    assert not np.allclose(p1.second, p3.second)


def test_validation_gradients_are_cached_per_checkpoint(recorded_mlp, digits_small, monkeypatch):
    m, rec = recorded_mlp
    train, valid = digits_small
    target = Utility(valid)
    calls = []
    original = Utility.grad

    def counting(self, adapter, params=None):
        calls.append(1)
        return original(self, adapter, params)

    monkeypatch.setattr(Utility, "grad", counting)
    a = inf.score(m, train, target=target, method="diffin", n_batches=2)
    assert len(calls) == len(rec.checkpoints)
    b = inf.score(m, train, target=target, method="diffin", n_batches=2, hvp="exact")
    assert len(calls) == len(rec.checkpoints)  # reused by a second run on the same checkpoints
    assert _rel(a.values, b.values) < 1e-2
    inf.score(m, train, target=Utility(valid), method="diffin")
    assert len(calls) == 2 * len(rec.checkpoints)  # a new target computes its own


# ---- the three tasks --------------------------------------------------------------------------------
def test_tasks_clean_delete_coreset(recorded_mlp, digits_small):
    m, rec = recorded_mlp
    train, valid = digits_small
    s = inf.score(m, train, target=valid, method="diffin")
    # coreset: the k highest-valued samples, refit from the same initial weights and schedule
    res = diffin_tasks.coreset(m, train, valid, 0.25, scores=s)
    assert len(res.kept) == 40 and set(res.kept) == set(np.argsort(-s.values)[:40])
    assert set(res.kept).isdisjoint(res.removed) and len(res.removed) == 120
    np.testing.assert_array_equal(res.split.ids, train.ids[res.kept])
    again = m.clone().fit(train.subset(res.kept))
    np.testing.assert_array_equal(res.model.predict_proba(valid), again.predict_proba(valid))
    # stratified: the highest-valued within each class, class shares kept (largest remainders)
    st = diffin_tasks.coreset(m, train, valid, 30, scores=s, stratify=True, refit=False)
    classes, counts = np.unique(train.y, return_counts=True)
    kept_counts = np.array([np.sum(train.y[st.kept] == c) for c in classes])
    assert kept_counts.sum() == 30 and np.all(np.abs(kept_counts - 30 * counts / 160) < 1)
    for c in classes:
        in_c = np.flatnonzero(train.y == c)
        top = in_c[np.argsort(-s.values[in_c], kind="stable")[:np.sum(train.y[st.kept] == c)]]
        assert set(top) == set(st.kept[train.y[st.kept] == c])
    # clean: the lowest self-influence values go first
    ss = inf.score(m, train, method="self-diffin")
    cl = diffin_tasks.clean(m, train, 16, refit=False, hvp="fd")
    np.testing.assert_array_equal(cl.removed, np.argsort(ss.values, kind="stable")[:16])
    assert cl.model is None and len(cl.split) == 144
    # delete: sums of values, one number per set
    sets = [np.array([1, 2, 3]), np.array([], dtype=int), np.arange(160) % 7 == 0]
    pred = diffin_tasks.delete(m, train, valid, sets, scores=s, center=False)
    np.testing.assert_allclose(pred, [s.values[[1, 2, 3]].sum(), 0.0, s.values[::7].sum()])
    c = s.values - s.values.mean()
    np.testing.assert_allclose(diffin_tasks.delete(m, train, valid, sets, scores=s),
                               [159 / 157 * c[[1, 2, 3]].sum(), 0.0, 159 / (160 - 23) * c[::7].sum()])
    assert diffin_tasks.delete(m, train, valid, [4, 9], scores=s, center=False) == pytest.approx(s.values[[4, 9]].sum())
    with pytest.raises(inf.InputError, match="positions must lie in"):
        diffin_tasks.delete(m, train, valid, [0, 160], scores=s)
    with pytest.raises(inf.InputError, match="listed twice"):
        diffin_tasks.delete(m, train, valid, [3, 3], scores=s)
    with pytest.raises(inf.InputError, match="larger than the 160"):
        diffin_tasks.coreset(m, train, valid, 500, scores=s)
    with pytest.raises(inf.InputError, match="not used when scores are given"):
        diffin_tasks.coreset(m, train, valid, 10, scores=s, hvp="exact")
