"""`curvature.factor`: the one robust factorisation (Cholesky, gauge lift, eigh pseudo-inverse), checked
against numpy's inverse, pseudo-inverse and solve on positive definite, singular, indefinite and
near-singular matrices, in float32 and float64, on every device torch sees."""

import numpy as np
import pytest
import torch

import influent as inf
from influent.curvature.factor import default_rcond, factorize, gram_pinv
from influent.methods.mislabel import _last_layer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: 1e-10, torch.float32: 2e-4}  # relative, for condition numbers <= 100


def _sym(evals, seed=0):
    """(p, p) float64 Q diag(evals) Q^T with a seeded random orthogonal Q, and Q."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((len(evals), len(evals))))
    return (Q * np.asarray(evals, dtype=np.float64)) @ Q.T, Q


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


def _t(A, dtype, device):
    return torch.as_tensor(A, dtype=dtype, device=device)


def _n(x):
    return x.detach().cpu().double().numpy()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_positive_definite_is_cholesky_and_equals_numpy_inverse(dtype, device):
    A, _ = _sym(np.linspace(1.0, 100.0, 12))
    At = _t(A, dtype, device)
    An = _n(At)  # the matrix as the factor sees it (float32-rounded)
    B = np.random.default_rng(1).standard_normal((12, 5))
    f = factorize(At)
    assert f.path == "cholesky" and f.dtype == dtype and f.n_null == 0 and f.n_negative == 0
    assert f.report() == {"path": "cholesky"}
    out = f.solve(_t(B, dtype, device))
    assert out.dtype == dtype and out.shape == (12, 5)
    assert _rel(_n(out), np.linalg.solve(An, B)) < TOL[dtype]
    vec = f.solve(_t(B[:, 0], torch.float64, device))  # (p,) right-hand side, returned in its own dtype
    assert vec.shape == (12,) and vec.dtype == torch.float64
    assert _rel(_n(vec), np.linalg.solve(An, B[:, 0])) < TOL[dtype]
    assert _rel(_n(f.inverse()), np.linalg.inv(An)) < TOL[dtype]
    quad = np.einsum("mp,pm->m", B.T, np.linalg.solve(An, B))
    assert _rel(_n(f.quad(_t(B.T, dtype, device))), quad) < TOL[dtype]
    assert torch.equal(At, _t(A, dtype, device))  # the input is not changed


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_indefinite_falls_back_to_eigh_and_equals_numpy_solve(dtype, device):
    evals = np.array([-5.0, -2.0, -1.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0])
    A, _ = _sym(evals, seed=2)
    At = _t(A, dtype, device)
    B = np.random.default_rng(3).standard_normal((10, 3))
    f = factorize(At)
    assert f.path == "eigh" and f.n_negative == 3 and f.n_null == 0
    assert f.report() == {"path": "eigh", "n_null": 0, "n_negative": 3}
    assert _rel(_n(f.solve(_t(B, dtype, device))), np.linalg.solve(_n(At), B)) < TOL[dtype]
    assert _rel(_n(f.inverse()), np.linalg.inv(_n(At))) < TOL[dtype]
    quad = np.einsum("mp,pm->m", B.T, np.linalg.solve(_n(At), B))
    assert _rel(_n(f.quad(_t(B.T, dtype, device))), quad) < TOL[dtype]
    psd = factorize(At, psd=True)  # declared PSD: the negative eigenvalues count as null, not inverted
    assert psd.n_negative == 0 and psd.n_null == 3
    A_plus = _sym(np.where(evals > 0, evals, 0.0), seed=2)[0]
    assert _rel(_n(psd.solve(_t(B, dtype, device))), np.linalg.pinv(A_plus, hermitian=True) @ B) < 10 * TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_known_null_direction_gauge_lift_is_the_pseudo_inverse(dtype, device):
    """A singular matrix with a known null direction u: with the gauge, Cholesky runs and every result is
    numpy's pseudo-inverse; without it, the eigh fallback finds the same pseudo-inverse."""
    evals = np.r_[0.0, np.linspace(1.0, 50.0, 9)]
    A, Q = _sym(evals, seed=4)
    u = Q[:, 0]
    A_pinv = np.linalg.pinv(A, rcond=1e-10, hermitian=True)
    B = np.random.default_rng(5).standard_normal((10, 4))
    At = _t(A, dtype, device)
    lifted = factorize(At, gauge=_t(u, dtype, device))
    assert lifted.path == "cholesky" and lifted.report() == {"path": "cholesky", "gauge": 1}
    plain = factorize(At)
    assert plain.path == "eigh" and plain.n_null == 1
    for f in (lifted, plain):
        assert _rel(_n(f.solve(_t(B, dtype, device))), A_pinv @ B) < TOL[dtype]
        assert _rel(_n(f.inverse()), A_pinv) < TOL[dtype]
        assert _rel(_n(f.quad(_t(B.T, dtype, device))), np.einsum("mp,pm->m", B.T, A_pinv @ B)) < TOL[dtype]
    assert np.abs(_n(lifted.solve(_t(B, dtype, device))).T @ u).max() < 10 * TOL[dtype]  # projected back


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_near_singular_is_cut_at_rcond(dtype, device):
    """Positive definite, but the smallest eigenvalue is below rcond times the largest: Cholesky's pivots
    are refused and the eigh pseudo-inverse drops that eigenvalue, as numpy's pinv with the same rcond."""
    rc = default_rcond(dtype)
    evals = np.r_[0.1 * rc, np.linspace(1.0, 20.0, 7)]
    A, _ = _sym(evals, seed=6)
    At = _t(A, dtype, device)
    B = np.random.default_rng(7).standard_normal((8, 2))
    f = factorize(At)
    assert f.path == "eigh" and f.n_null == 1 and f.rcond == rc
    A_pinv = np.linalg.pinv(_sym(np.r_[0.0, evals[1:]], seed=6)[0], rcond=1e-8, hermitian=True)
    assert _rel(_n(f.solve(_t(B, dtype, device))), A_pinv @ B) < 10 * TOL[dtype]
    # a looser matrix (smallest eigenvalue 100 rcond) keeps Cholesky and inverts every direction
    A2, _ = _sym(np.r_[100 * rc, np.linspace(1.0, 20.0, 7)], seed=6)
    g = factorize(_t(A2, torch.float64, device), rcond=rc)
    assert g.path == "cholesky"
    assert _rel(_n(g.solve(_t(B, torch.float64, device))), np.linalg.solve(A2, B)) < 1e-5


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="square"):
        factorize(torch.zeros(3, 4))


@pytest.mark.parametrize("device", DEVICES)
def test_gauge_lift_equals_eigh_pseudo_inverse_on_a_softmax_last_layer_hessian(iris, device):
    """The wrong-label detector's Hessian of an unpenalised-intercept softmax layer is singular along the
    common intercept shift; its gauge-lifted Cholesky inverse is the eigh pseudo-inverse (and numpy's)."""
    train, _ = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    prob = _last_layer(model, train, 0.0, 512)
    H = prob.hessian(prob.theta, None).to(device)
    u = prob.gauge()
    assert u is not None  # softmax, unpenalised intercept, no damping
    assert float((H @ u.to(device)).abs().max()) < 1e-12 * float(H.abs().max())  # u is a null direction
    lifted = factorize(H, gauge=u.to(device), psd=True)
    eigh = factorize(H, psd=True)
    assert lifted.path == "cholesky" and eigh.path == "eigh" and eigh.n_null == 1
    Hn = _n(H)
    pinv = np.linalg.pinv(0.5 * (Hn + Hn.T), rcond=1e-10, hermitian=True)
    assert _rel(_n(lifted.inverse()), _n(eigh.inverse())) < 1e-8
    assert _rel(_n(lifted.inverse()), pinv) < 1e-8
    assert _rel(_n(prob.inverse(H.cpu())), pinv) < 1e-8  # what mislabel uses
    g = torch.randn(H.shape[0], dtype=H.dtype, generator=torch.Generator().manual_seed(0)).to(device)
    assert _rel(_n(lifted.solve(g)), pinv @ _n(g)) < 1e-8


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("r", [1, 2])
def test_gram_pinv_equals_numpy_pinv_of_the_gram_matrix(dtype, r):
    """a^T pinv(S^T S) a from the square-root factor S, with r known null row combinations, against numpy's
    pinv of the explicit Gram matrix (float64, same cut-off)."""
    rng = np.random.default_rng(8)
    Bt, K, d = 6, 4, 7
    N = np.linalg.qr(rng.standard_normal((Bt, K, r)))[0]  # (B, K, r) orthonormal columns
    S = rng.standard_normal((Bt, K, d))
    S = S - N @ (N.transpose(0, 2, 1) @ S)  # N^T S = 0: G has rank K - r
    a = rng.standard_normal((Bt, d))
    Vh, inv_s = gram_pinv(torch.as_tensor(S, dtype=dtype), None, torch.as_tensor(N if r > 1 else N[..., 0], dtype=dtype))
    got = ((torch.einsum("brd,bd->br", Vh, torch.as_tensor(a, dtype=dtype)) * inv_s) ** 2).sum(1)
    want = [a[b] @ np.linalg.pinv(S[b].T @ S[b], rcond=1e-8, hermitian=True) @ a[b] for b in range(Bt)]
    assert (inv_s > 0).sum(1).tolist() == [K - r] * Bt
    assert _rel(_n(got), want) < (1e-10 if dtype == torch.float64 else 1e-3)
