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
