"""Approximate curvature solvers against the exact solver (design promise 3) and against peers.

Every test is float64 on a tiny model. Agreement numbers are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

from influent.curvature import CurvatureContext, make_solver
from influent.data import from_arrays
from influent.grads.per_sample import mean_grad, per_sample_grads
from influent.models import SklearnLogistic, TabularMLP, TorchAdapter
from helpers import rel, one_thread  # noqa: F401 (one_thread: an autouse fixture)

F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# fixtures: small problems, fitted once per module
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    keep = y < 4
    X, y = X[keep] / 16.0, y[keep]
    return from_arrays(X[:120], y[:120]), from_arrays(X[120:180], y[120:180])


@pytest.fixture(scope="module")
def mlp(digits):
    torch.manual_seed(0)
    train, val = digits
    adapter = TabularMLP(hidden=(8,), dtype=F64, weight_decay=1e-3).fit(train)
    Xv, tv = adapter.tensors(val)
    return adapter, train, mean_grad(adapter, Xv, tv)


@pytest.fixture(scope="module")
def logistic(digits):
    train, val = digits
    adapter = SklearnLogistic().fit(train)
    Xv, tv = adapter.tensors(val)
    return adapter, train, mean_grad(adapter, Xv, tv)


@pytest.fixture(scope="module")
def blobs_mlp():
    """A 2-layer MLP (5 -> 8 -> 3) on Gaussian blobs: continuous inputs, no degenerate factors."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=2.0, size=(3, 5))
    y = np.repeat(np.arange(3), 30)
    X = centers[y] + rng.normal(size=(90, 5))
    train = from_arrays(X, y)
    torch.manual_seed(0)
    adapter = TabularMLP(hidden=(8,), dtype=F64, weight_decay=1e-3).fit(train)
    return adapter, train


def rhs(ctx: CurvatureContext, v: torch.Tensor, k: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.cat([v[:, None], torch.randn(ctx.p, k, generator=gen, dtype=F64)], dim=1)


def scores(ctx: CurvatureContext, solver, v: torch.Tensor) -> np.ndarray:
    """effect_i (up to the 1/n factor): g_i . (H + damping I)^-1 v."""
    return ctx.grad_source().dot(solver.solve(v)).numpy()


# ---------------------------------------------------------------------------------------------
# Hessian-vector products and the exact solver
# ---------------------------------------------------------------------------------------------
def explicit_hessian(adapter, train) -> torch.Tensor:
    """H of mean loss + regulariser by torch.func.hessian of the whole objective (the direct route)."""
    from influent.grads.per_sample import flatten, unflatten

    params = adapter.params()
    X, t = adapter.tensors(train)
    obj = lambda th: adapter.per_sample_loss(unflatten(th, params), X, t).mean() + adapter.regularizer(unflatten(th, params))
    return torch.func.hessian(obj)(flatten(params))


@pytest.mark.parametrize("kind", ["rev", "fwd", "auto"])
def test_hvp_kinds_equal_explicit_hessian(kind, mlp):
    adapter, train, _ = mlp
    H = explicit_hessian(adapter, train)
    ctx = CurvatureContext(adapter, train, chunk_size=50, hvp_kind=kind, hvp_block=7)  # several chunks and blocks
    V = torch.randn(ctx.p, 9, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert rel(ctx.hvp(V), H @ V) < 1e-10
    assert rel(ctx.hvp(V[:, 0]), H @ V[:, 0]) < 1e-10
    assert rel(ctx.hessian(), H) < 1e-10
    index = torch.arange(0, 120, 3)
    sub = from_arrays(train.X[index.numpy()], train.y[index.numpy()])
    assert rel(ctx.hvp(V, index), explicit_hessian(adapter, sub) @ V) < 1e-10
    for k in (1, 9):
        assert ctx.hvp_mode(k) in ("rev", "fwd") and (kind == "auto" or ctx.hvp_mode(k) == kind)


def test_hessian_chooses_mode_inside_the_build(mlp):
    """auto on a fresh context: the build times its own first blocks in both modes (no separate probe)
    and the matrix is still exact, whichever mode won."""
    adapter, train, _ = mlp
    H = explicit_hessian(adapter, train)
    ctx = CurvatureContext(adapter, train, chunk_size=50, hvp_kind="auto", hvp_block=7)
    assert "block" not in ctx.hvp_modes_
    assert rel(ctx.hessian(), H) < 1e-10
    assert ctx.hessian_route_ in ("hvp-rev", "hvp-fwd")
    assert ctx.hvp_modes_["block"] == ctx.hessian_route_[4:]  # reused by later block products


def test_exact_cholesky_and_eigh_paths(mlp):
    """Positive definite: Cholesky; indefinite (negative damping): the eigh fallback, still the exact inverse."""
    adapter, train, v = mlp
    H = explicit_hessian(adapter, train)
    V = torch.randn(H.shape[0], 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    G = V.T
    for damping, path in ((0.1, "cholesky"), (-0.02, "eigh")):
        A = H + damping * torch.eye(H.shape[0], dtype=F64)
        ev = torch.linalg.eigvalsh(A)
        assert (ev.min() > 0) == (path == "cholesky")
        solver = make_solver("exact").fit(CurvatureContext(adapter, train, damping=damping))
        assert solver.path_ == path and solver.fit_report()["path"] == path
        ref = torch.linalg.solve(A, V)
        assert rel(solver.solve(V), ref) < 1e-9
        assert rel(solver.quad(G), (G * ref.T).sum(1)) < 1e-9
    assert solver.n_negative_ > 0


def test_exact_singular_takes_pseudo_inverse(logistic):
    """Unpenalised softmax intercepts: H is singular without damping; the factor is refused and the
    pseudo-inverse answers, as the explicit pinv does."""
    adapter, train, v = logistic
    H = explicit_hessian(adapter, train)
    solver = make_solver("exact").fit(CurvatureContext(adapter, train, damping=0.0))
    assert solver.path_ == "eigh" and solver.n_null_ >= 1 and solver.hessian_route_ == "closed form"
    assert rel(solver.solve(v), torch.linalg.pinv(H, rtol=1e-10, hermitian=True) @ v) < 1e-8


def test_exact_float32_model_factors_in_float64(digits):
    """A float32 model: H is built in float32, factored in float64; the answer matches the float64
    solve of the same float32 matrix to float64 round-off, far below float32's."""
    train, _ = digits
    torch.manual_seed(0)
    adapter = TabularMLP(hidden=(8,), dtype=torch.float32, weight_decay=1e-3).fit(train)
    ctx = CurvatureContext(adapter, train, damping=0.1)
    V = torch.randn(ctx.p, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    solver = make_solver("exact").fit(ctx)
    assert solver.factor_dtype_ == F64 and solver.path_ == "cholesky"
    A = ctx.hessian().double() + 0.1 * torch.eye(ctx.p, dtype=F64)
    ref = torch.linalg.solve(A, V.double())
    out = solver.solve(V)
    assert out.dtype == torch.float32
    assert rel(out.double(), ref) < 1e-6  # float32 rounding of the result only
    narrow = make_solver("exact", float64=False).fit(ctx)
    assert narrow.factor_dtype_ == torch.float32
    assert rel(narrow.solve(V).double(), ref) > rel(out.double(), ref)


def test_exact_path_is_saved_in_scores_settings(mlp, digits):
    import influent as inf

    adapter, train, _ = mlp
    s = inf.score(adapter, train, target=digits[1], method="if", solver="exact", damping=0.1)
    assert s.settings["solver_fit"]["path"] == "cholesky"
    assert s.settings["solver_fit"]["hessian_route"] in ("hvp-rev", "hvp-fwd")
    assert s.settings["solver_fit"]["factor_dtype"] == "float64"


@pytest.mark.filterwarnings("ignore:cg:RuntimeWarning")
def test_inner_loops_copy_no_parameters(mlp, monkeypatch):
    """CG, LiSSA and Arnoldi take every HVP from the context's one parameter snapshot: no call of
    adapter.params() (a copy of every analysed tensor) once the context exists."""
    adapter, train, v = mlp
    ctx = CurvatureContext(adapter, train, damping=0.1)
    calls = []
    original = type(adapter).params
    monkeypatch.setattr(type(adapter), "params", lambda self: calls.append(1) or original(self))
    make_solver("cg", max_iter=5).fit(ctx).solve(v)
    make_solver("lissa", depth=20, scale=5.0).fit(ctx).solve(v)
    make_solver("arnoldi", rank=5).fit(ctx).solve(v)
    assert calls == []
    make_solver("exact").fit(CurvatureContext(adapter, train, damping=0.1))  # the patch sees real calls
    assert calls


# ---------------------------------------------------------------------------------------------
# CG
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("problem", ["mlp", "logistic"])
def test_cg_equals_exact(problem, request):
    adapter, train, v = request.getfixturevalue(problem)
    ctx = CurvatureContext(adapter, train, damping=1e-2)
    V = rhs(ctx, v)
    exact = make_solver("exact").fit(ctx).solve(V)
    cg = make_solver("cg", tol=1e-10).fit(ctx)
    X = cg.solve(V)
    err = max(rel(X[:, j], exact[:, j]) for j in range(V.shape[1]))
    print(f"\ncg vs exact ({problem}): max rel err {err:.2e} in {cg.n_iter_} iterations")
    assert err < 1e-6
    # a single vector gives the same answer as its column in the batch
    assert rel(cg.solve(V[:, 1]), X[:, 1]) < 1e-8


def test_cg_rejects_indefinite(logistic):
    adapter, train, v = logistic
    ctx = CurvatureContext(adapter, train, damping=-1e3)  # H - 1000 I is negative definite
    with pytest.raises(ValueError, match="not positive definite.*damping"):
        make_solver("cg").fit(ctx).solve(v)


def test_cg_warns_when_not_converged(mlp):
    adapter, train, v = mlp
    ctx = CurvatureContext(adapter, train, damping=1e-2)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        make_solver("cg", max_iter=2).fit(ctx).solve(v)


# ---------------------------------------------------------------------------------------------
# LiSSA
# ---------------------------------------------------------------------------------------------
def test_lissa_full_batch_equals_exact(mlp):
    adapter, train, v = mlp
    ctx = CurvatureContext(adapter, train, damping=0.1)
    exact = make_solver("exact").fit(ctx).solve(v)
    lissa = make_solver("lissa", depth=150, scale="auto", batch_size=None).fit(ctx)
    err = rel(lissa.solve(v), exact)
    print(f"\nlissa full batch vs exact: rel err {err:.2e} (scale {lissa.scale_:.3f})")
    assert err < 1e-6


def test_lissa_scores_match_exact(mlp):
    adapter, train, v = mlp
    ctx = CurvatureContext(adapter, train, damping=0.1)
    exact = make_solver("exact").fit(ctx)
    # the recursion contracts like (1 - 0.097/0.78)^j: depth 60 leaves ~3e-4 truncation error;
    # the minibatch noise (~2% relative error per repeat here) is averaged over 6 repeats
    lissa = make_solver("lissa", depth=60, scale="auto", batch_size=32, repeats=6).fit(ctx)
    x = lissa.solve(v)
    rho = spearmanr(scores(ctx, exact, v), ctx.grad_source().dot(x).numpy())[0]
    print(f"\nlissa (batch 32, 6 repeats) vs exact: spearman {rho:.4f}, rel err {rel(x, exact.solve(v)):.3f}")
    assert rho >= 0.99
    # deterministic under ctx.seed
    assert torch.equal(lissa.solve(v), x)


def test_lissa_scale_too_small_diverges(mlp):
    adapter, train, v = mlp
    ctx = CurvatureContext(adapter, train, damping=0.1)
    with pytest.raises(ValueError, match="diverged"):
        make_solver("lissa", depth=400, scale=0.1, batch_size=None).fit(ctx).solve(v)


# ---------------------------------------------------------------------------------------------
# Arnoldi
# ---------------------------------------------------------------------------------------------
def test_arnoldi_full_rank_equals_exact(logistic):
    adapter, train, v = logistic
    ctx = CurvatureContext(adapter, train, damping=1e-2)
    V = rhs(ctx, v)
    exact = make_solver("exact").fit(ctx).solve(V)
    arnoldi = make_solver("arnoldi", rank=ctx.p).fit(ctx)
    err = max(rel(arnoldi.solve(V)[:, j], exact[:, j]) for j in range(V.shape[1]))
    print(f"\narnoldi full rank vs exact: max rel err {err:.2e} ({arnoldi.n_restarts_} Krylov restarts)")
    assert err < 1e-6


def test_arnoldi_low_rank_scores(mlp):
    adapter, train, v = mlp
    ctx = CurvatureContext(adapter, train, damping=0.1)
    exact = make_solver("exact").fit(ctx)
    se = scores(ctx, exact, v)
    rhos = {}
    for rank in (10, 30):
        arnoldi = make_solver("arnoldi", rank=rank).fit(ctx)
        rhos[rank] = spearmanr(se, scores(ctx, arnoldi, v))[0]
        # the kept Ritz values approximate the top of the exact spectrum (without damping)
        top = torch.linalg.eigvalsh(ctx.hessian()).abs().sort(descending=True).values[:3]
        assert torch.allclose(arnoldi.evals_.abs()[:3], top, rtol=1e-6)
    print(f"\narnoldi low rank vs exact, spearman by rank: {rhos}")
    assert rhos[30] >= 0.98 and rhos[30] >= rhos[10] - 1e-3


# ---------------------------------------------------------------------------------------------
# K-FAC and EK-FAC
# ---------------------------------------------------------------------------------------------
def linear_regression(n: int = 60, d: int = 5, weight_decay: float = 1e-2):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)) + 0.5  # non-centred inputs: the bias column couples with the weights
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    train = from_arrays(X, y)
    assert train.y.dtype.kind == "f"  # float targets stay float
    torch.manual_seed(0)
    adapter = TorchAdapter(torch.nn.Linear(d, 1), loss="mse", dtype=F64, weight_decay=weight_decay).fit(train)
    return adapter, train


@pytest.mark.parametrize("name", ["kfac", "ekfac"])
def test_kfac_linear_mse_equals_exact_ggn(name):
    adapter, train = linear_regression()
    ctx = CurvatureContext(adapter, train, damping=1e-3)
    assert rel(ctx.gauss_newton(), ctx.hessian()) < 1e-12  # linear model + mse: GGN = Hessian
    V = torch.randn(ctx.p, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = make_solver("exact", curvature="ggn").fit(ctx)
    solver = make_solver(name).fit(ctx)
    err = rel(solver.solve(V), exact.solve(V))
    print(f"\n{name} vs exact GGN (linear, mse): rel err {err:.2e}")
    assert err < 1e-6
    assert rel(solver.matvec(V), ctx.hvp(V)) < 1e-10


@pytest.mark.parametrize("loss", ["cross_entropy", "bce"])
@pytest.mark.parametrize("name", ["kfac", "ekfac"])
def test_kfac_linear_one_sample(name, loss):
    """With one sample the layer's GGN is exactly Lambda (x) a~ a~^T, so both equal the exact GGN."""
    torch.manual_seed(0)
    k = 3 if loss == "cross_entropy" else 1
    lin = torch.nn.Linear(4, k).to(F64)
    adapter = TorchAdapter(lin, loss=loss, dtype=F64, weight_decay=1e-2, fitted=True, classes=list(range(max(k, 2))))
    train = from_arrays(np.random.default_rng(0).normal(size=(1, 4)), np.array([1]))
    ctx = CurvatureContext(adapter, train, damping=1e-3)
    V = torch.randn(ctx.p, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    err = rel(make_solver(name).fit(ctx).solve(V), make_solver("exact", curvature="ggn").fit(ctx).solve(V))
    print(f"\n{name} vs exact GGN (linear, {loss}, n=1): rel err {err:.2e}")
    assert err < 1e-6


def test_ekfac_beats_kfac_on_mlp(blobs_mlp):
    """EK-FAC's eigenvalues are the GGN's diagonal in the K-FAC basis: a closer fit than K-FAC's."""
    adapter, train = blobs_mlp
    ctx = CurvatureContext(adapter, train, damping=1e-3)
    G = ctx.gauss_newton()
    eye = torch.eye(ctx.p, dtype=F64)
    Mk = make_solver("kfac").fit(ctx).matvec(eye)
    Me = make_solver("ekfac").fit(ctx).matvec(eye)
    # compare block-diagonal parts only (both drop cross-layer terms)
    mask = torch.zeros(ctx.p, ctx.p, dtype=torch.bool)
    mask[:48, :48] = True
    mask[48:, 48:] = True
    ek, kf = rel(Me[mask], G[mask]), rel(Mk[mask], G[mask])
    print(f"\nblock-diagonal GGN fit: kfac rel err {kf:.3f}, ekfac rel err {ek:.3f}")
    assert ek <= kf


def curvlinops_dense(op_cls, adapter, train) -> torch.Tensor:
    """The dense (p, p) curvlinops K-FAC/EK-FAC matrix, in our flat parameter order."""
    module = adapter.module
    table = dict(module.named_parameters())
    params = [table[n] for n in adapter.param_names()]
    X, t = adapter.tensors(train)
    op = op_cls(module, torch.nn.CrossEntropyLoss(reduction="mean"), params, [(X[:50], t[:50]), (X[50:], t[50:])],
                fisher_type="type-2", separate_weight_and_bias=False, check_deterministic=False)
    p = sum(q.numel() for q in params)
    return op @ torch.eye(p, dtype=F64)


@pytest.mark.parametrize("name", ["kfac", "ekfac"])
def test_kfac_matches_curvlinops(name, blobs_mlp):
    """curvlinops conventions, as read from its source (v3.0.1):

    - ``separate_weight_and_bias=False`` treats ``[W, b]`` jointly with a 1 appended to the inputs,
      as we do (its default keeps separate weight and bias blocks);
    - with ``reduction="mean"`` its factors are ``A = (1/N) sum a a^T`` and ``S = (1/N) sum_i sum_c
      s_ic s_ic^T`` (the 1/N of the mean loss is folded back in), our normalisation, over
      any batching of the data;
    - its operator is the bare approximation: neither the regulariser nor damping is included,
      so we compare with our ``matvec`` (which adds ``reg * I``) minus ``reg * V``.
    """
    curvlinops = pytest.importorskip("curvlinops")
    adapter, train = blobs_mlp
    ctx = CurvatureContext(adapter, train, damping=1e-3, chunk_size=32)  # chunking differs from theirs
    solver = make_solver(name).fit(ctx)
    op_cls = curvlinops.KFACLinearOperator if name == "kfac" else curvlinops.EKFACLinearOperator
    K = curvlinops_dense(op_cls, adapter, train)
    V = torch.randn(ctx.p, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    reg = 1e-3
    err = rel(solver.matvec(V) - reg * V, K @ V)
    print(f"\n{name} matvec vs curvlinops: rel err {err:.2e}")
    assert err < 1e-6
    # and our inverse is the inverse of their matrix plus reg + damping
    ref = torch.linalg.solve(K + (reg + ctx.damping) * torch.eye(ctx.p, dtype=F64), V)
    assert rel(solver.solve(V), ref) < 1e-6


def test_kfac_rejects_non_linear_parameters():
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)).to(F64)
    adapter = TorchAdapter(module, dtype=F64, fitted=True, classes=[0, 1, 2])
    train = from_arrays(np.random.default_rng(0).normal(size=(6, 4)), np.array([0, 1, 2, 0, 1, 2]))
    ctx = CurvatureContext(adapter, train, damping=1e-3)
    with pytest.raises(ValueError, match=r"'1\.(weight|bias)'.*nn\.Linear"):
        make_solver("ekfac").fit(ctx)
    # analysing only the linear layer works
    adapter_lin = TorchAdapter(module, dtype=F64, fitted=True, classes=[0, 1, 2], params=["0"])
    make_solver("kfac").fit(CurvatureContext(adapter_lin, train, damping=1e-3))


# ---------------------------------------------------------------------------------------------
# DataInf
# ---------------------------------------------------------------------------------------------
def datainf_brute_force(adapter, train, V: torch.Tensor, damping: float, paper: bool) -> torch.Tensor:
    """The closed form, one explicit per-sample gradient at a time."""
    X, t = adapter.tensors(train)
    G = per_sample_grads(adapter, X, t, method="loop")
    n = G.shape[0]
    out = torch.zeros_like(V)
    off = 0
    for name, p in adapter.params().items():
        if name.endswith("weight"):  # TabularMLP: each layer is (weight, bias), adjacent
            d = p.numel() + p.shape[0]
            idx = slice(off, off + d)
            Gl = G[:, idx]
            lam = 0.1 * float((Gl**2).sum(1).mean()) / d if paper else damping + adapter.reg_coef[name]
            for j in range(V.shape[1]):
                v = V[idx, j]
                acc = torch.zeros_like(v)
                for i in range(n):
                    g = Gl[i]
                    acc += v - (v @ g) / (lam + g @ g) * g
                out[idx, j] = acc / (n * lam)
            off += d
    assert off == V.shape[0]
    return out


@pytest.mark.parametrize("lam,damping", [("paper", 0.0), ("auto", 0.0), ("damping", 1e-2), ("auto", 1e-2)])
def test_datainf_equals_brute_force(lam, damping, mlp):
    adapter, train, v = mlp
    ctx = CurvatureContext(adapter, train, damping=damping, chunk_size=50)  # several chunks
    V = rhs(ctx, v, k=2)
    solver = make_solver("datainf", lam=lam).fit(ctx)
    paper = solver.lam_mode_ == "paper"
    assert paper == (lam == "paper" or (lam == "auto" and damping == 0))
    err = rel(solver.solve(V), datainf_brute_force(adapter, train, V, damping, paper))
    print(f"\ndatainf ({solver.lam_mode_}) vs brute force: rel err {err:.2e}")
    assert err < 1e-10


def test_datainf_needs_positive_lambda(blobs_mlp):
    adapter, train = blobs_mlp
    adapter0 = TorchAdapter(adapter.module, dtype=F64, fitted=True, classes=[0, 1, 2])  # no weight decay
    with pytest.raises(ValueError, match="lam is not positive"):
        make_solver("datainf", lam="damping").fit(CurvatureContext(adapter0, train, damping=0.0))


# ---------------------------------------------------------------------------------------------
# the damping convention: H is the mean curvature, so duplicating the data changes nothing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", [
    ("exact", {}), ("cg", {"tol": 1e-12}), ("lissa", {"depth": 150, "scale": "auto", "batch_size": None}),
    ("arnoldi", {"rank": 75}), ("kfac", {}), ("ekfac", {}), ("datainf", {}), ("datainf", {"lam": "paper"}),
])
def test_damping_meaning_does_not_depend_on_n(name, options, blobs_mlp):
    adapter, train = blobs_mlp  # TorchAdapter: fixed weight decay, independent of n
    doubled = from_arrays(np.concatenate([train.X, train.X]), np.concatenate([train.y, train.y]))
    V = torch.randn(75, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    once = make_solver(name, **options).fit(CurvatureContext(adapter, train, damping=0.5)).solve(V)
    twice = make_solver(name, **options).fit(CurvatureContext(adapter, doubled, damping=0.5)).solve(V)
    err = rel(twice, once)
    print(f"\n{name} {options}: n vs 2n rel diff {err:.2e}")
    assert err < 1e-8
    if name in ("cg", "lissa", "arnoldi"):
        exact = make_solver("exact").fit(CurvatureContext(adapter, train, damping=0.5)).solve(V)
        assert rel(once, exact) < 1e-6


@pytest.mark.parametrize("name", ["kfac", "ekfac"])
def test_kfac_pairwise_shortcut_equals_solve(name, blobs_mlp):
    """The rank-one eigenbasis products (no (p, m) solve) equal g_i^T solve(h_j) from explicit gradients."""
    from influent.grads.source import GradientSource

    adapter, train = blobs_mlp
    test = from_arrays(train.X[:7] + 0.1, train.y[:7])
    ctx = CurvatureContext(adapter, train, damping=1e-2, chunk_size=32)
    solver = make_solver(name).fit(ctx)
    tr, te = GradientSource(adapter, train, 32), GradientSource(adapter, test, 4)
    assert tr.factorised and te.factorised
    fast = solver.pairwise(tr, te)
    G, Ht = per_sample_grads(adapter, *adapter.tensors(train)), per_sample_grads(adapter, *adapter.tensors(test))
    assert rel(fast, G @ solver.solve(Ht.T)) < 1e-10
