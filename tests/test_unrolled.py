"""Unrolled metagradients (method "unrolled", issue 26) against finite differences and retraining."""

import numpy as np
import pytest
import torch
from torch import nn

import influent as inf
from influent.data.validate import InputError
from influent.models import TorchAdapter, TrainConfig
from influent.models.training import optimizer_step
from influent.targets import Utility


def _data(n=16, d=3, m=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + 0.7 * rng.normal(size=n) > 0).astype(int)
    Xv = rng.normal(size=(m, d))
    return inf.data.from_arrays(X, y), inf.data.from_arrays(Xv, (Xv[:, 0] > 0).astype(int))


def _mlp(cfg, d=3, linear=False, **kw):
    torch.manual_seed(0)
    net = nn.Linear(d, 2) if linear else nn.Sequential(nn.Linear(d, 4), nn.Tanh(), nn.Linear(4, 2))
    return TorchAdapter(net.double(), train=cfg, fitted=False, weight_decay=1e-2, **kw)


CONFIGS = {
    "sgd-momentum": TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, epochs=3, batch_size=5, seed=3),
    "adam": TrainConfig(optimizer="adam", lr=0.05, epochs=3, batch_size=5, seed=3),
    "sgd-cosine": TrainConfig(optimizer="sgd", lr=0.2, epochs=3, batch_size=4, seed=1, schedule="cosine"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_metagradient_equals_finite_differences_of_retraining(name):
    train, valid = _data()
    model = _mlp(CONFIGS[name]).fit(train)
    assert len(model.record_.states) > 1  # several segments: the sweep crosses recorded states
    sc = inf.score(model, train, valid, method="unrolled")
    target = Utility(valid).prepare(model)
    eps = 1e-5
    for i in (0, 7, 15):
        f = []
        for s in (1, -1):
            w = np.ones(len(train))
            w[i] += s * eps
            f.append(target.evaluate(model.refit(train, sample_weight=w)))
        fd = (f[0] - f[1]) / (2 * eps)
        assert abs(sc.raw[i] - fd) <= 1e-4 * abs(fd)
        assert sc.values[i] == -sc.raw[i]


def test_segmenting_does_not_change_the_metagradient():
    train, valid = _data()
    vals = []
    for every in (1, 3, 100):
        cfg = TrainConfig(optimizer="adam", lr=0.05, epochs=3, batch_size=5, seed=3, record_every=every)
        model = _mlp(cfg).fit(train)
        assert len(model.record_.states) == -(-model.record_.steps // every)
        vals.append(inf.score(model, train, valid, method="unrolled").values)
    np.testing.assert_allclose(vals[0], vals[1], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(vals[0], vals[2], rtol=1e-10, atol=1e-14)


def test_leave_one_out_to_first_order():
    """On a smooth problem (logistic regression, small steps) the value predicts the retrained removal
    effect (weight 0, the same batches); the error is second order in the removed weight."""
    train, valid = _data(n=30)
    cfg = TrainConfig(optimizer="sgd", lr=0.02, momentum=0.5, epochs=4, batch_size=10, seed=0)
    model = _mlp(cfg, linear=True).fit(train)
    values = inf.score(model, train, valid, method="unrolled").values
    target = Utility(valid).prepare(model)
    f0 = target.evaluate(model)
    for i in (2, 11, 29):
        errs = []
        for delta in (1.0, 0.1):
            w = np.ones(len(train))
            w[i] -= delta
            actual = target.evaluate(model.refit(train, sample_weight=w)) - f0
            errs.append(abs(actual - delta * values[i]))
        assert errs[0] <= 0.05 * abs(values[i])  # leave-one-out itself within 5%
        assert errs[1] <= 0.015 * errs[0]  # and the error shrinks like delta^2 (0.01)


def test_pairwise_form_averages_to_the_mean_test_loss_scores():
    train, valid = _data()
    model = _mlp(CONFIGS["adam"]).fit(train)
    A = inf.attribute(model, train, valid, method="unrolled", test_batch=4)  # two batches of test adjoints
    assert A.shape == (len(train), len(valid))
    one = inf.score(model, train, inf.data.from_arrays(valid.X[2:3], valid.y[2:3]), method="unrolled").values
    np.testing.assert_allclose(A[:, 2], one, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(A.mean(1), inf.score(model, train, valid, method="unrolled").values,
                               rtol=1e-9, atol=1e-14)


def test_pairwise_without_batched_backward_gives_the_same_matrix(monkeypatch):
    """Where the double backward of an operation cannot be batched, the test adjoints go one at a time."""
    train, valid = _data()
    model = _mlp(CONFIGS["sgd-momentum"]).fit(train)
    batched = inf.attribute(model, train, valid, method="unrolled")
    grad = torch.autograd.grad

    def no_batching(*args, **kw):
        if kw.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented")
        return grad(*args, **kw)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    np.testing.assert_allclose(inf.attribute(model, train, valid, method="unrolled"), batched, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("name", ["sgd-momentum", "adam"])
def test_refit_with_weights_replays_the_same_recipe(name):
    train, _ = _data()
    model = _mlp(CONFIGS[name]).fit(train)
    again = model.refit(train, sample_weight=np.ones(len(train)))
    for (n, a), (_, b) in zip(model.module.named_parameters(), again.module.named_parameters()):
        assert torch.equal(a, b), n  # bit for bit
    w = np.ones(len(train))
    w[3] = 0.0
    removed = model.refit(train, sample_weight=w)
    assert removed.record_.order_key == model.record_.order_key
    assert [b.tolist() for b in removed.record_.batches()] == [b.tolist() for b in model.record_.batches()]
    assert not torch.equal(removed.module[0].weight, model.module[0].weight)


@pytest.mark.parametrize("name", ["sgd-momentum", "adam", "sgd-cosine"])
def test_record_replays_training_with_the_functional_optimizer(name):
    """The recorded states, batches and learning rates reproduce torch.optim's run step by step."""
    train, _ = _data()
    model = _mlp(CONFIGS[name]).fit(train)
    rec = model.record_
    X, t = model.tensors(train)
    params = {k: v.clone() for k, v in rec.states[0]["params"].items()}
    state = {k: v for k, v in rec.states[0].items() if k != "params"}
    module = model.module
    for k, idx in enumerate(rec.batches()):
        if k in rec.states:
            for name_, v in rec.states[k]["params"].items():
                torch.testing.assert_close(params[name_], v, rtol=1e-12, atol=1e-13)
        leaves = {n: p.requires_grad_(True) for n, p in params.items()}
        out = torch.func.functional_call(module, leaves, (X[idx],))
        obj = torch.nn.functional.cross_entropy(out, t[idx]) + sum(0.5 * 1e-2 * (p**2).sum() for p in leaves.values())
        g = dict(zip(leaves, torch.autograd.grad(obj, list(leaves.values()))))
        params, state = optimizer_step(rec.optimizer, rec.hyper, {n: p.detach() for n, p in leaves.items()},
                                       state, g, rec.lrs[k], k + 1)
    for n, p in module.named_parameters():
        torch.testing.assert_close(params[n], p.detach(), rtol=1e-12, atol=1e-13)


def test_smoothness_check_is_reported_with_the_scores():
    train, valid = _data(n=40)
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.5, epochs=3, batch_size=8, seed=0)
    model = _mlp(cfg, linear=True).fit(train)
    sc = inf.score(model, train, valid, method="unrolled", smoothness=2, fractions=[0.05, 0.25])
    rep = sc.settings["smoothness"]
    assert set(rep) == {"0.05", "0.25"}
    for f, r in rep.items():
        assert len(r["predicted"]) == len(r["actual"]) == 2
        assert r["relative_error"] < (0.2 if f == "0.05" else 0.5)
    target = Utility(valid).prepare(model)  # the reported actual change is a real retraining
    rng = np.random.default_rng(0)
    S = rng.choice(40, 2, replace=False)
    w = np.ones(40)
    w[S] = 0
    assert rep["0.05"]["actual"][0] == pytest.approx(target.evaluate(model.refit(train, sample_weight=w))
                                                     - target.evaluate(model), abs=1e-8)


def test_refuses_training_it_cannot_replay():
    train, valid = _data()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with pytest.raises(InputError, match="not fitted by influent's trainer"):
        inf.score(TorchAdapter(net), train, valid, method="unrolled")  # a user's own trained module
    with pytest.raises(InputError, match="not fitted by influent's trainer"):
        inf.score(_mlp(TrainConfig(epochs=2, record=False)).fit(train), train, valid, method="unrolled")
    model = _mlp(CONFIGS["adam"]).fit(train)
    other, _ = _data(seed=5)
    with pytest.raises(InputError, match="not the split the model was fitted on"):
        inf.score(model, other, valid, method="unrolled")
    with torch.no_grad():
        model.module[0].weight.add_(0.1)
    with pytest.raises(InputError, match="weights changed after the recorded fit"):
        inf.score(model, train, valid, method="unrolled")
    drop = TorchAdapter(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.Linear(4, 2)).double(),
                        train=TrainConfig(epochs=2), fitted=False).fit(train)
    with pytest.raises(InputError, match="Dropout"):
        inf.score(drop, train, valid, method="unrolled")
    model = _mlp(CONFIGS["adam"]).fit(train)
    model.record_.deterministic = False  # as recorded on a GPU without deterministic kernels
    with pytest.raises(InputError, match="deterministic"):
        inf.score(model, train, valid, method="unrolled")


def _user_loop(train, w, kind, recorder=False, loss_scale=1.0):
    """A training loop of a user's own (batches from its own generator, lr decayed by a scheduler)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    model = TorchAdapter(net)
    opt = (torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.8, weight_decay=1e-2) if kind == "sgd"
           else torch.optim.Adam(net.parameters(), lr=0.03))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    X, y = torch.as_tensor(train.X), torch.as_tensor(train.y)
    rec = inf.models.LoopRecorder(model, opt, train, steps=12) if recorder else None
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        order = torch.randperm(len(y), generator=gen)
        for b in range(0, len(y), 4):
            idx = order[b:b + 4]
            opt.zero_grad()
            losses = nn.functional.cross_entropy(net(X[idx]), y[idx], reduction="none")
            (loss_scale * (losses * w[idx]).mean()).backward()
            if rec is not None:
                rec.step(idx)
            opt.step()
            sched.step()
    if rec is not None:
        rec.finish()
    return model


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_loop_recorder_replays_a_users_own_loop(kind):
    train, valid = _data()
    model = _user_loop(train, torch.ones(16, dtype=torch.float64), kind, recorder=True)
    assert sorted(model.record_.states) == [0, 4, 8]  # ceil(sqrt(12)) = 4 steps apart
    raw = inf.score(model, train, valid, method="unrolled").raw
    target = Utility(valid).prepare(model)
    eps = 1e-5
    for i in (1, 9):
        f = []
        for s in (1, -1):
            w = torch.ones(16, dtype=torch.float64)
            w[i] += s * eps
            f.append(target.evaluate(_user_loop(train, w, kind)))
        fd = (f[0] - f[1]) / (2 * eps)
        assert abs(raw[i] - fd) <= 1e-4 * abs(fd)


def test_loop_recorder_refuses_a_loop_that_does_not_replay():
    train, valid = _data()
    model = _user_loop(train, torch.ones(16, dtype=torch.float64), "sgd", recorder=True, loss_scale=2.0)
    with pytest.raises(InputError, match="training does not replay"):
        inf.score(model, train, valid, method="unrolled")
    model = _user_loop(train, torch.ones(16, dtype=torch.float64), "sgd", recorder=True)
    with pytest.raises(InputError, match="cannot rerun a loop of your own"):
        inf.score(model, train, valid, method="unrolled", smoothness=1)
    net = nn.Linear(3, 2).double()
    with pytest.raises(InputError, match="SGD and torch.optim.Adam"):
        inf.models.LoopRecorder(TorchAdapter(net), torch.optim.RMSprop(net.parameters()), train)
    with pytest.raises(InputError, match="cannot replay this optimizer"):
        inf.models.LoopRecorder(TorchAdapter(net), torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9,
                                                                   nesterov=True), train)
