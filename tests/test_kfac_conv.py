"""K-FAC and EK-FAC for nn.Conv2d (KFC: unfolded-patch factors) against the exact GGN and curvlinops.

float64 throughout, tiny images. Agreement numbers are printed (run with ``-s``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from influent.curvature import CurvatureContext, make_solver
from influent.data import from_arrays
from influent.models import TorchAdapter
from helpers import rel, one_thread  # noqa: F401 (one_thread: an autouse fixture)

F64 = torch.float64


def images(n: int, c: int, h: int, w: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, c, h, w)) + 0.3  # non-centred: the bias column couples with the weights
    y = np.arange(n) % k
    return from_arrays(X, y)


def one_position_net(loss: str, k: int = 3) -> TorchAdapter:
    """One convolution whose kernel covers the whole 3x3 image: one output position (T = 1)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, k, 3), nn.Flatten()).to(F64)
    classes = None if loss == "mse" else list(range(k))
    return TorchAdapter(net, loss=loss, dtype=F64, weight_decay=1e-2, fitted=True, classes=classes)


@pytest.mark.parametrize("name", ["kfac", "ekfac"])
@pytest.mark.parametrize("loss, n", [("cross_entropy", 1), ("mse", 12)])
def test_one_position_conv_equals_exact_ggn(name, loss, n):
    """T = 1: the layer's GGN is (1/n) sum_i Lambda_i (x) a~_i a~_i^T. With one sample (any loss) or
    Lambda = I (mse, any n) that is a Kronecker product, so K-FAC and EK-FAC equal the exact GGN."""
    adapter = one_position_net(loss, k=1 if loss == "mse" else 3)
    train = images(n, 2, 3, 3, 3)
    if loss == "mse":  # one float target per sample
        train = from_arrays(train.X, np.random.default_rng(1).normal(size=n))
    ctx = CurvatureContext(adapter, train, damping=1e-3)
    G = ctx.gauss_newton()  # jacrev of the outputs: independent of the K-FAC code
    solver = make_solver(name).fit(ctx)
    eye = torch.eye(ctx.p, dtype=F64)
    err_mat = rel(solver.matvec(eye), G)
    V = torch.randn(ctx.p, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    err_inv = rel(solver.solve(V), torch.linalg.solve(G + 1e-3 * eye, V))
    print(f"\n{name} one-position conv ({loss}, n={n}) vs exact GGN: matrix {err_mat:.1e}, inverse {err_inv:.1e}")
    assert err_mat < 1e-10 and err_inv < 1e-8


def test_many_positions_kfac_is_an_approximation():
    """With T > 1 positions the KFC factorisation is no longer exact (the test above could fail)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 2), nn.Flatten(), nn.Linear(12, 3)).to(F64)
    adapter = TorchAdapter(net, dtype=F64, weight_decay=1e-2, fitted=True, classes=[0, 1, 2], params=["0"])
    ctx = CurvatureContext(adapter, images(1, 2, 3, 3, 3), damping=1e-3)
    err = rel(make_solver("kfac").fit(ctx).matvec(torch.eye(ctx.p, dtype=F64)), ctx.gauss_newton())
    assert err > 1e-3


def small_cnn() -> tuple[TorchAdapter, object]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 2 * 2, 3)).to(F64)
    adapter = TorchAdapter(net, dtype=F64, weight_decay=1e-3, fitted=True, classes=[0, 1, 2])
    return adapter, images(40, 2, 6, 6, 3)


@pytest.mark.parametrize("name", ["kfac", "ekfac"])
def test_conv_matches_curvlinops(name):
    """Two convolutions (T = 16 and 4 positions, stride and padding) and a linear layer: our matvec
    minus reg equals curvlinops' K-FAC / EK-FAC ("expand", joint weight and bias, type-2, mean loss)."""
    curvlinops = pytest.importorskip("curvlinops")
    adapter, train = small_cnn()
    ctx = CurvatureContext(adapter, train, damping=1e-3, chunk_size=16)  # chunking differs from theirs
    solver = make_solver(name).fit(ctx)
    module = adapter.module
    params = [dict(module.named_parameters())[n] for n in adapter.param_names()]
    X, t = adapter.tensors(train)
    op_cls = curvlinops.KFACLinearOperator if name == "kfac" else curvlinops.EKFACLinearOperator
    op = op_cls(module, nn.CrossEntropyLoss(reduction="mean"), params, [(X[:25], t[:25]), (X[25:], t[25:])],
                fisher_type="type-2", separate_weight_and_bias=False, check_deterministic=False)
    K = op @ torch.eye(ctx.p, dtype=F64)
    V = torch.randn(ctx.p, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    err = rel(solver.matvec(V) - 1e-3 * V, K @ V)
    print(f"\n{name} conv matvec vs curvlinops: rel err {err:.2e}")
    assert err < 1e-8
    ref = torch.linalg.solve(K + 2e-3 * torch.eye(ctx.p, dtype=F64), V)
    assert rel(solver.solve(V), ref) < 1e-8


def test_ekfac_conv_eigenvalues_are_the_ggn_diagonal_in_the_kfac_basis():
    """EK-FAC's corrected eigenvalues = diag((Q_S (x) Q_A)^T G_layer (Q_S (x) Q_A)) with the exact
    per-layer GGN block (from jacobians), for convolutions with many positions."""
    adapter, train = small_cnn()
    ctx = CurvatureContext(adapter, train, damping=1e-3, chunk_size=16)
    solver = make_solver("ekfac", cache_mb=0).fit(ctx)  # no cache: the second-pass path
    cached = make_solver("ekfac").fit(ctx)
    G = ctx.gauss_newton() - torch.diag(ctx.reg_diag())
    for L in solver.layers_:
        idx = torch.cat([torch.arange(ctx.p)[L.w].reshape(L.d_out, L.d_in), torch.arange(ctx.p)[L.b][:, None]], 1)
        block = G[idx.reshape(-1)][:, idx.reshape(-1)]  # (d_out * cols) in [W | b] row-major order
        Q = torch.kron(solver.QS_[L.name], solver.QA_[L.name])
        expected = torch.diagonal(Q.T @ block @ Q).reshape(L.d_out, L.cols)
        assert rel(solver.evals_[L.name], expected) < 1e-10, L.name
        assert rel(cached.evals_[L.name], expected) < 1e-10, L.name


def test_kfac_rejects_grouped_convolution():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 3)).to(F64)
    adapter = TorchAdapter(net, dtype=F64, fitted=True, classes=[0, 1, 2])
    ctx = CurvatureContext(adapter, images(6, 2, 3, 3, 3), damping=1e-3)
    with pytest.raises(ValueError, match="'0'.*groups=2"):
        make_solver("kfac").fit(ctx)


def test_small_cnn_scores_with_ekfac():
    """The image model of the benchmarks: EK-FAC influence runs on all its parameters and tracks exact
    GGN influence (Spearman), through the public API."""
    import influent as inf
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 1, 12, 12))
    y = np.arange(60) % 3
    X[np.arange(60), 0, y * 4, y * 4] += 3.0
    train, valid = from_arrays(X[:45], y[:45]), from_arrays(X[45:], y[45:])
    model = inf.models.SmallCNN(channels=(2, 3), kernel=3, hidden=6, dtype=F64,
                                train=inf.models.TrainConfig(epochs=30)).fit(train)
    ek = inf.score(model, train, target=valid, method="if", solver="ekfac", damping=1e-2)
    ex = inf.score(model, train, target=valid, method="if", solver="exact", damping=1e-2,
                   solver_options={"curvature": "ggn"})
    rho = spearmanr(ek.values, ex.values)[0]
    print(f"\nSmallCNN ekfac vs exact GGN influence: spearman {rho:.3f}")
    assert rho > 0.7
