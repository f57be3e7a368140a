"""Solvers build their tensors on the model's device. No GPU here: a model on PyTorch's "meta" device
stands in for one, since any tensor created on the CPU regardless of the model's device fails to mix with it.
Solvers that read a number back during their fit (exact, cg, lissa, arnoldi: `.item()`) cannot run on
"meta" and are not covered by this check."""

import numpy as np
import pytest
import torch

import influent as inf
from influent.curvature import SOLVERS, CurvatureContext


@pytest.mark.parametrize("name", ["kfac", "ekfac", "datainf"])
def test_solver_follows_the_model_device(name):
    X, y = np.random.default_rng(0).normal(size=(40, 6)), np.arange(40) % 3
    train = inf.from_arrays(X, y)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double().to("meta")
    m = inf.models.TorchAdapter(net, dtype=torch.float64, classes=np.arange(3), weight_decay=1e-3)
    ctx = CurvatureContext(m, train, damping=0.1, chunk_size=16)
    solver = SOLVERS[name]()
    solver.fit(ctx)
    out = solver.solve(torch.zeros(ctx.p, 2, dtype=torch.float64, device="meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (ctx.p, 2)


# ---- methods --------------------------------------------------------------------------------------------
# A method body hands its tensor to `to_numpy` (the one place results come back to the CPU); on "meta" that
# copy has no data, so the tests catch the tensor there and check its device and shape. The target is the
# real `Utility`, marked prepared (its fingerprint reads parameter values). Not covered, because they read a
# number back on the way (`.item()`, `float(tensor)`, NumPy): loo, tmc-shapley, label-quality, mislabel
# (NumPy between rounds), diffin / self-diffin (per-chunk NumPy terms), fi-paired, fi with the exact solver,
# outlier with detector 'iforest' / 'ocsvm' (scikit-learn on the gradients), the default solvers and damping
# rule of if / self-if / iv, and the factor of projected influence (it counts negative eigenvalues; its
# Hessian and row products are checked below).

def _meta_job(method, monkeypatch, dropout=False, **opts):
    import importlib

    from influent.methods import METHODS
    from influent.methods.options import build_options
    from influent.methods.registry import Job
    from influent.models.training import Checkpoint
    from influent.targets import Utility

    X, y = np.random.default_rng(0).normal(size=(40, 6)), np.arange(40) % 3
    train, valid = inf.from_arrays(X, y), inf.from_arrays(X[:10], y[:10])
    layers = [torch.nn.Linear(6, 5), torch.nn.Tanh()] + ([torch.nn.Dropout(0.1)] if dropout else [])
    net = torch.nn.Sequential(*layers, torch.nn.Linear(5, 3)).double().to("meta")
    m = inf.models.TorchAdapter(net, dtype=torch.float64, classes=np.arange(3), weight_decay=1e-3)
    if "checkpoints" in opts:
        opts["checkpoints"] = [Checkpoint(s, 0.1, m.params()) for s in (1, 2)]
    target = Utility(valid)
    target.prepared_for_ = "meta"  # skip the fingerprint (it reads parameter values)
    spec = METHODS[method]
    seen = []

    def caught(x):
        seen.append((x.device.type, tuple(x.shape)))
        return np.zeros(tuple(x.shape))

    module = importlib.import_module(spec.score.__module__)
    monkeypatch.setattr(module, "to_numpy", caught)
    monkeypatch.setattr("influent.methods.influence.to_numpy", caught)  # iv calls into influence
    job = Job(m, train, target, build_options(method, spec.options, opts), chunk_size=16)
    return job, spec, seen, inf.from_arrays(X[:7], y[:7])


KFAC = {"solver": "kfac", "damping": 0.1}
GAUSS = {"kind": "gaussian", "dim": 4}


@pytest.mark.parametrize("method, opts", [
    ("ip", {}), ("tracin", {"checkpoints": True}), ("self-tracin", {}),
    ("self-tracin", {"over": "checkpoints", "checkpoints": True}),
    ("ip-ensemble", {"members": 3}), ("ip-ensemble", {"members": 3, "mode": "noise"}),
    ("ip-ensemble", {"members": 3, "mode": "dropout", "dropout": True}),
    ("gex", {"members": 2, "steps": 2}), ("self-gex", {"members": 2, "steps": 2}),
    ("outlier", {"detector": "l1", "project": 4}), ("outlier", {"detector": "l2", "project": 4}),
    ("outlier", {"detector": "l2"}), ("if", KFAC), ("self-if", KFAC), ("iv", KFAC),
    ("fi", {**KFAC, "approx": "kfsvd", "rank": 2}), ("fi", {**KFAC, "jacobian": "explicit"}),
    ("fi", {**KFAC, "jacobian": "vjp"}), ("ip", {"projection": GAUSS}),
    ("outlier", {"detector": "l2", "projection": GAUSS})])
def test_method_follows_the_model_device(method, opts, monkeypatch):
    opts = dict(opts)
    dropout = opts.pop("dropout", False)
    job, spec, seen, _ = _meta_job(method, monkeypatch, dropout=dropout, **opts)
    spec.score(job)
    assert seen and all(dev == "meta" for dev, _ in seen), seen
    assert sum(shape[0] for _, shape in seen if len(shape) == 1) in (40, 80), seen


@pytest.mark.parametrize("method, opts", [("ip", {}), ("tracin", {"checkpoints": True}),
                                          ("ip-ensemble", {"members": 3}), ("gex", {"members": 2, "steps": 2}),
                                          ("if", KFAC)])
def test_pairwise_follows_the_model_device(method, opts, monkeypatch):
    job, spec, seen, test = _meta_job(method, monkeypatch, **dict(opts))
    spec.pairwise(job, test)
    assert seen[-1] == ("meta", (40, 7)), seen


def test_regulariser_diagonal_and_projection_follow_the_model_device():
    from influent.methods.outlier import GaussianProjection

    net = torch.nn.Sequential(torch.nn.Linear(6, 3)).double().to("meta")
    m = inf.models.TorchAdapter(net, dtype=torch.float64, classes=np.arange(3), weight_decay=1e-3)
    d = m.reg_hessian_diag()
    assert d.device.type == "meta" and tuple(d.shape) == (21,)
    for p in (21, 5000):  # a cached R and one regenerated block by block
        out = GaussianProjection(p, 4, seed=1, device="meta")(torch.zeros(3, p, dtype=torch.float64, device="meta"))
        assert out.device.type == "meta" and tuple(out.shape) == (3, 4)


def test_projected_hessian_and_row_products_follow_the_model_device(monkeypatch):
    from influent.methods.projected import _rows_dot, projected_hessian

    job, _, _, _ = _meta_job("if", monkeypatch, projection=dict(GAUSS), damping=0.1)
    src = job.source()
    Hk = projected_hessian(job, src)
    assert Hk.device.type == "meta" and tuple(Hk.shape) == (4, 4)
    out = _rows_dot(src, Hk[:, :2])
    assert out.device.type == "meta" and tuple(out.shape) == (40, 2)
