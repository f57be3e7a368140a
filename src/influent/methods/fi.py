"""FI local influence [FI] (Yu et al., "Enhancing Prediction Performance through Influence Measure").

Perturb one training input ``x -> x + w`` (``w`` in R^d) and follow the fitted parameters. With the
training objective ``mean_i l(z_i) + reg`` and ``H`` its Hessian (plus ``damping * I``):

- ``J_z = d/dx grad_theta l(z)``, shape (p, d), the input-parameter cross derivatives;
- ``dtheta/dw = -(1/n) H^-1 J_z`` (the minus sign: moving ``x`` changes the stationarity condition by
  ``(1/n) J_z w``, which ``H dtheta`` must cancel);
- ``u_c = (dtheta/dw)^T grad_theta log P(c|x) + grad_x log P(c|x)`` (d,), for every class c;
- the metric tensor ``G_z = sum_c P(c|x) u_c u_c^T`` (d, d), the Fisher information of the perturbed
  sample's predictive distribution with respect to ``w``;
- ``FI(z', z) = a^T pinv(G_z) a`` with ``a = (dtheta/dw)^T grad_theta L(z')``; ``FI_util(z)`` uses the
  gradient of a target (the mean validation loss for utility, any `influent.targets` Target otherwise).

FI is unsigned; trimming removes the highest, so ``values = -FI`` and ``raw = FI``.

Pseudo-inverse. ``sum_c P(c|x) u_c = grad_w sum_c P(c|x) = 0`` for every model, so ``G_z`` has rank at
most ``K - 1`` (rank one for a binary classifier) whatever ``d`` is. We factor ``G = S^T S`` with
``S = diag(sqrt P) U`` (K, d), remove the component of ``S`` along the known null vector ``sqrt P``
(exactly zero in exact arithmetic; dropping it removes round-off that a pseudo-inverse would otherwise
blow up), and keep the eigenvalues ``s_r^2`` of ``G`` with ``s_r^2 > rcond * max_r s_r^2`` (relative to the
largest eigenvalue of the same sample's ``G``; ``rcond`` 1e-10 in float64, 1e-5 in float32). Then
``FI = sum_r (v_r . a / s_r)^2`` over the kept right singular vectors ``v_r`` of ``S``.
For a binary classifier this is ``(a . v)^2 / (sigma (1 - sigma) |v|^4)`` with ``v`` the total derivative
of the perturbed sample's logit: confidently misclassified samples get the largest FI.

Products with ``J_z``. ``u_c`` needs ``J_z^T H^-1 grad_theta log P(c|x)`` (K products per sample); then
``FI(z', z) = sum_r (e_{z,r} . H^-1 grad L(z'))^2`` with ``e_{z,r} = -(1/n) J_z v_r / s_r`` (R <= K more
products per sample), or, for m <= K directions, ``v_r . (-(1/n) J_z^T H^-1 grad L)`` directly. A matrix
over m query samples and n training samples costs m + nK solves, about n(K + R) products with J, and one
(n x p) by (p x m) product: never one operation per pair.

Approximations (``approx``):

- ``"exact"``: with any curvature solver (default the exact one). ``jacobian="explicit"`` builds ``J_z``
  in batches (torch.func: vmap over samples of jacfwd over x of grad over theta; d forward products per
  sample); ``jacobian="vjp"`` never forms it (vector-Jacobian products ``J_z^T y``, reverse over reverse,
  and Jacobian-vector products ``J_z v``, forward over reverse); ``"auto"`` (default) takes the explicit
  form only when ``d <= 2 max(K, 2)``. Both give the same numbers.
- ``"kfsvd"``: K-FAC inverse Hessian (default solver ``"kfac"``) and a rank-``k`` truncated SVD of each
  ``J_z`` by randomised subspace (power) iteration on Jacobian-vector products ``J_z v`` (forward over
  reverse) and ``J_z^T u``; memory O(sum over layers of the Kronecker factors + B (p + d) k).
- ``subsample=alpha`` ([FI] Appendix, Algorithm 6): FI on a seeded random fraction ``alpha`` of the samples,
  a random forest fitted on (x_i', rank_i') of that subsample, and the forest's predicted rank for every
  sample, the subsample included. Variant (options): ``rank_features="xy+model"`` also feeds the one-hot
  label and the model's loss and outputs to the forest, and ``keep_exact=True`` keeps the computed FI of
  the sampled rows (the forest predicts only the others).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import grad, jacfwd, jacrev, jvp, vjp, vmap

from ..curvature import Solver
from ..curvature.factor import default_rcond, gram_pinv
from ..curvature.policy import fit_solver, local_influence_damping, local_influence_solver
from ..data import Split
from ..data.executor import sharding
from ..data.validate import InputError, check_choice, check_number
from ..grads.per_sample import flatten
from ..grads.source import GradientSource
from ..models.base import ModelAdapter, Params
from .options import SolverOptions, opt
from .registry import Job, Result, register_method, register_pairwise, to_numpy

APPROX = ("exact", "kfsvd")
JACOBIANS = ("auto", "explicit", "vjp")
# elements of one batch of explicit cross Jacobians (B * p * d); bounds memory of the exact path
_MAX_ELEMENTS = 2**20


# ---- per-sample derivatives ---------------------------------------------------------------------
def _check_classifier(adapter: ModelAdapter) -> None:
    if adapter.loss not in ("bce", "cross_entropy"):
        raise InputError(f"FI needs a classifier (loss 'bce' or 'cross_entropy'), got loss {adapter.loss!r}")


def _flat_grad_fn(adapter: ModelAdapter, params: Params) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """x, t -> (p,) gradient of the single-sample loss w.r.t. the analysed parameters."""

    def loss(p: Params, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return adapter.per_sample_loss(p, x.unsqueeze(0), t.unsqueeze(0))[0]

    g = grad(loss)
    return lambda x, t: flatten(g(params, x, t))


def _log_probs_fn(adapter: ModelAdapter) -> Callable[[Params, torch.Tensor], torch.Tensor]:
    """(params, x) -> (K,) log P(c|x); bce models: classes (0, 1) from the one logit."""
    _check_classifier(adapter)
    kind = adapter.loss

    def lp(params: Params, x: torch.Tensor) -> torch.Tensor:
        out = adapter.outputs(params, x.unsqueeze(0)).reshape(-1)
        if kind == "bce":
            return torch.stack([F.logsigmoid(-out[0]), F.logsigmoid(out[0])])
        return torch.log_softmax(out, dim=0)

    return lp


def _own(X: torch.Tensor) -> torch.Tensor:
    """A detached copy with its own storage: forward-mode AD on a slice (a view) of a large tensor is
    orders of magnitude slower in torch (make_dual on views)."""
    return X.detach().clone()


def cross_jacobians(adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor, params: Params | None = None) -> torch.Tensor:
    """(B, p, d) input-parameter cross derivatives ``J_z = d/dx grad_theta l(z)`` of every row, batched
    (vmap over samples of jacfwd over x of grad over theta). Inputs of any shape are flattened to d."""
    params = adapter.params() if params is None else params
    fg = _flat_grad_fn(adapter, params)

    def one(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        J = jacfwd(fg, argnums=0)(x, tt)
        return J.reshape(J.shape[0], -1)

    return vmap(one)(_own(X), t)


def cross_tmul(adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor, Y: torch.Tensor,
               params: Params | None = None) -> torch.Tensor:
    """(B, m, d) products ``J_z^T y`` for every row z and column y of ``Y``, without forming ``J_z``.

    ``Y`` is (p, m), shared by all rows, or (B, p, m), one per row (vector-Jacobian products).
    """
    params = adapter.params() if params is None else params
    fg = _flat_grad_fn(adapter, params)

    def one(x: torch.Tensor, tt: torch.Tensor, Yz: torch.Tensor) -> torch.Tensor:
        _, pull = vjp(lambda xx: fg(xx, tt), x)
        return vmap(lambda y: pull(y)[0].reshape(-1))(Yz.T)

    return vmap(one, in_dims=(0, 0, None if Y.ndim == 2 else 0))(_own(X), t, Y)


def cross_mul(adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor, V: torch.Tensor,
              params: Params | None = None) -> torch.Tensor:
    """(B, p, k) products ``J_z v`` for every row z and column v of ``V`` ((d, k) shared or (B, d, k)),
    without forming ``J_z`` (Jacobian-vector products, forward over reverse)."""
    params = adapter.params() if params is None else params
    fg = _flat_grad_fn(adapter, params)

    def one(x: torch.Tensor, tt: torch.Tensor, Vz: torch.Tensor) -> torch.Tensor:
        f = lambda xx: fg(xx, tt)
        cols = vmap(lambda v: jvp(f, (x,), (v.reshape(x.shape),))[1])(Vz.T)  # (k, p)
        return cols.T

    return vmap(one, in_dims=(0, 0, None if V.ndim == 2 else 0))(_own(X), t, V)


def truncated_cross_svd(adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor, rank: int, power_iters: int = 2,
                        generator: torch.Generator | None = None, params: Params | None = None):
    """Rank-k truncated SVD ``J_z ~ U diag(S) V^T`` of every row's cross Jacobian by randomised subspace
    iteration on ``J v`` and ``J^T u`` products (Halko, Martinsson & Tropp 2011), never forming ``J_z``.

    Returns U (B, p, k), S (B, k), V (B, d, k) with ``k = min(rank, p, d)``; exact when ``k = min(p, d)``.
    Memory O(B (p + d) k).
    """
    params = adapter.params() if params is None else params
    p = sum(v.numel() for v in params.values())
    d = int(np.prod(X.shape[1:]))
    k = max(1, min(int(rank), p, d))
    omega = torch.randn(d, k, generator=generator, dtype=X.dtype).to(X.device)  # drawn on the CPU
    Q = torch.linalg.qr(cross_mul(adapter, X, t, omega, params)).Q  # (B, p, k)
    for _ in range(int(power_iters)):
        Z = torch.linalg.qr(cross_tmul(adapter, X, t, Q, params).transpose(1, 2)).Q  # (B, d, k)
        Q = torch.linalg.qr(cross_mul(adapter, X, t, Z, params)).Q
    Bm = cross_tmul(adapter, X, t, Q, params)  # (B, k, d) = Q^T J
    Ub, S, Vt = torch.linalg.svd(Bm, full_matrices=False)
    return Q @ Ub, S, Vt.transpose(1, 2)


class _CrossJacobian:
    """J_z for one batch of rows, in one of three forms; only ``J^T Y`` products are needed."""

    def __init__(self, adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor, params: Params, mode: str,
                 rank: int = 10, power_iters: int = 2, generator: torch.Generator | None = None) -> None:
        self.adapter, self.X, self.t, self.params, self.mode = adapter, X, t, params, mode
        if mode == "explicit":
            self.J = cross_jacobians(adapter, X, t, params)
        elif mode == "kfsvd":
            self.U, self.S, self.V = truncated_cross_svd(adapter, X, t, rank, power_iters, generator, params)
        elif mode != "vjp":
            raise ValueError(f"unknown cross-Jacobian mode {mode!r}")

    def tmul(self, Y: torch.Tensor) -> torch.Tensor:
        """(B, m, d) ``J_z^T Y`` for Y (p, m) shared or (B, p, m) per row."""
        if self.mode == "explicit":
            return torch.einsum("bpd,pm->bmd" if Y.ndim == 2 else "bpd,bpm->bmd", self.J, Y)
        if self.mode == "kfsvd":
            UtY = torch.einsum("bpk,pm->bkm" if Y.ndim == 2 else "bpk,bpm->bkm", self.U, Y)
            return torch.einsum("bdk,bkm->bmd", self.V, self.S[:, :, None] * UtY)
        return cross_tmul(self.adapter, self.X, self.t, Y, self.params)

    def mul(self, V: torch.Tensor) -> torch.Tensor:
        """(B, p, r) ``J_z V_z`` for per-row V (B, d, r)."""
        if self.mode == "explicit":
            return torch.einsum("bpd,bdr->bpr", self.J, V)
        if self.mode == "kfsvd":
            return torch.einsum("bpk,bkr->bpr", self.U, self.S[:, :, None] * torch.einsum("bdk,bdr->bkr", self.V, V))
        return cross_mul(self.adapter, self.X, self.t, V, self.params)


# ---- the metric tensor ----------------------------------------------------------------------------
def metric_factors(log_probs: torch.Tensor, U: torch.Tensor, rcond: float,
                   project: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-inverse factors of ``G = sum_c P_c u_c u_c^T`` for a batch.

    Parameters
    ----------
    log_probs : (B, K) log P(c|x)
    U : (B, K, d) the vectors u_c
    rcond : eigenvalues of G below ``rcond * max eigenvalue`` (per sample) are dropped
    project : remove the component along the exact null vector ``sqrt(P)`` first (see module docstring)

    `curvature.factor.gram_pinv` on ``S = diag(sqrt P) U`` (the cut-off rule of `curvature.factor.factorize`).

    Returns
    -------
    Vh : (B, R, d) right singular vectors of ``S = diag(sqrt P) U`` (eigenvectors of G)
    inv_s : (B, R) ``1 / s_r`` for kept eigenvalues ``s_r^2``, 0 for dropped ones;
        ``a^T pinv(G) a = sum_r (inv_s_r * Vh_r . a)^2``.
    """
    q = log_probs.exp().sqrt()
    return gram_pinv(q[:, :, None] * U, rcond, q / q.norm(dim=1, keepdim=True) if project else None)


# ---- the core: FI of a set of training rows against a set of directions -------------------------
@dataclass
class FIConfig:
    """How FI is computed (see the module docstring).

    sign : the sign of ``dtheta/dw = sign * (1/n) H^-1 J_z``; -1 is the correct one (kept as a
        parameter only for the sign ablation in `docs/fi.md`)
    rcond : relative eigenvalue cut-off of pinv(G); None: `default_rcond`
    project : remove the exact null direction of G before the pseudo-inverse
    jacobian : "auto" | "explicit" | "vjp" | "kfsvd" — how products with J_z are formed ("auto": explicit
        when d <= 2 max(K, 2), else products)
    rank, power_iters : truncated SVD settings for "kfsvd"
    chunk_size : rows per batch (the explicit path also caps B * p * d)
    seed : seed of the random start of the power iteration
    """

    sign: float = -1.0
    rcond: float | None = None
    project: bool = True
    jacobian: str = "auto"
    rank: int = 10
    power_iters: int = 2
    chunk_size: int = 256
    seed: int = 0


def fi_matrix(adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor, n: int, solver: Solver,
              Y: torch.Tensor, config: FIConfig | None = None) -> torch.Tensor:
    """(B, m) ``FI(y_j, z_i) = a_ij^T pinv(G_zi) a_ij`` with ``a_ij = (dtheta/dw_i)^T y_j`` for rows
    z_i = (X[i], t[i]) and the columns ``y_j`` of ``Y`` (p, m), e.g. gradients of validation losses.

    ``n`` is the size of the training set the model was fitted on (``dtheta/dw`` carries 1/n); ``solver``
    a fitted curvature solver for that training set. Batched over rows; no loop over pairs.
    """
    cfg = config or FIConfig()
    _check_classifier(adapter)
    params = adapter.params()
    p = sum(v.numel() for v in params.values())
    d = int(np.prod(X.shape[1:]))
    mode = cfg.jacobian
    if mode == "auto":  # explicit J_z costs d forward products per sample, the product form about 2K
        mode = "explicit" if d <= 2 * max(2, adapter.n_classes) else "vjp"
    rcond = default_rcond(adapter.dtype) if cfg.rcond is None else float(cfg.rcond)
    Y = Y.reshape(p, -1).to(adapter.dtype)
    HY = solver.solve(Y)  # (p, m)
    m = HY.shape[1]
    scale = cfg.sign / n
    lp = _log_probs_fn(adapter)
    lp_all = vmap(lp, in_dims=(None, 0))
    jac_lp = vmap(jacrev(lp, argnums=(0, 1)), in_dims=(None, 0))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    B = max(1, int(cfg.chunk_size))
    if mode == "explicit":
        B = max(1, min(B, _MAX_ELEMENTS // max(1, p * d)))
    out = torch.empty(X.shape[0], Y.shape[1], dtype=adapter.dtype, device=adapter.device)
    for s in range(0, X.shape[0], B):
        Xc, tc = X[s:s + B], t[s:s + B]
        b = Xc.shape[0]
        logp = lp_all(params, Xc)  # (b, K)
        gth, gx = jac_lp(params, Xc)
        K = logp.shape[1]
        gth = torch.cat([v.reshape(b, K, -1) for v in gth.values()], dim=2)  # (b, K, p)
        gx = gx.reshape(b, K, d)
        Hg = solver.solve(gth.reshape(b * K, p).T).T.reshape(b, K, p)
        J = _CrossJacobian(adapter, Xc, tc, params, mode, cfg.rank, cfg.power_iters, gen)
        if m <= K:  # few directions: a = scale J^T H^-1 y directly, in the same products as u_c
            T = J.tmul(torch.cat([Hg.transpose(1, 2), HY.expand(b, p, m)], 2))  # (b, K + m, d)
            U, A = scale * T[:, :K] + gx, scale * T[:, K:]
            Vh, inv_s = metric_factors(logp, U, rcond, cfg.project)  # (b, R, d), R = min(K, d)
            proj = torch.einsum("brd,bmd->bmr", Vh, A) * inv_s[:, None, :]
        else:  # many directions: v_r . a = (scale J v_r) . H^-1 y, R products with J per row
            U = scale * J.tmul(Hg.transpose(1, 2)) + gx  # (b, K, d)
            Vh, inv_s = metric_factors(logp, U, rcond, cfg.project)
            E = scale * J.mul(Vh.transpose(1, 2)) * inv_s[:, None, :]  # (b, p, R)
            proj = torch.einsum("bpr,pm->bmr", E, HY)
        out[s:s + b] = (proj**2).sum(2)
    return out


# ---- options and solvers (`fit_solver`, from curvature.policy: the one way a solver is built) ----------
@dataclass
class FISolverOptions(SolverOptions):
    """The solver of FI and FI-paired: named as in `SolverOptions`, but without the non-convex defaults
    ([FI] Sec. 3: the exact Hessian of the fitted model, no damping), and the metric's cut-off."""

    solver: str | None = opt(None, "curvature solver from influent.curvature.SOLVERS; None: 'exact' "
                                   "('kfac' for fi with approx='kfsvd')")
    damping: float | None = opt(0.0, "added to the Hessian's diagonal")
    rcond: float | None = opt(None, "pinv cut-off of G_z relative to its largest eigenvalue; None: 1e-10 "
                                    "(float64) / 1e-5")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rcond is not None and not (0 <= check_number(self.rcond, "rcond") < 1):
            raise InputError(f"rcond must be in [0, 1), got {self.rcond}")


@dataclass
class FIOptions(FISolverOptions):
    """Options of FI local influence [FI]."""

    approx: str = opt("exact", "'exact' (explicit cross Jacobians J_z) | 'kfsvd' (rank-`rank` truncated SVD of J_z)")
    jacobian: str = opt("auto", "approx='exact': 'auto' | 'explicit' | 'vjp' (how products with J_z are formed)")
    rank: int = opt(10, "approx='kfsvd': rank of the truncated SVD")
    power_iters: int = opt(2, "approx='kfsvd': power iterations of the truncated SVD")
    subsample: float | None = opt(None, "fraction alpha: [FI] Algorithm 6, a random forest fitted on the "
                                        "subsample's (features, rank of FI) predicts the rank of every sample")
    rank_features: str = opt("x", "subsample: the forest's inputs, 'x' (the paper's) | 'xy' | 'xy+model'")
    n_estimators: int = opt(25, "subsample: trees of the rank forest")
    keep_exact: bool = opt(False, "subsample: keep the computed FI of the subsample")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.approx, APPROX, "approx")
        check_choice(self.jacobian, JACOBIANS, "jacobian")
        self.rank = check_number(self.rank, "rank", kind=int, low=1)
        self.power_iters = check_number(self.power_iters, "power_iters", kind=int, low=0)
        if self.subsample is not None and not 0 < check_number(self.subsample, "subsample") <= 1:
            raise InputError(f"subsample must be a fraction in (0, 1], got {self.subsample}")
        check_choice(self.rank_features, RANK_FEATURES, "rank_features")
        self.n_estimators = check_number(self.n_estimators, "n_estimators", kind=int, low=1)
        check_choice(self.keep_exact, (False, True), "keep_exact")


@dataclass
class FIPairedOptions(FISolverOptions):
    """Options of FI-paired."""

    reduce: str = opt("max", "raw_i = max_j FI_ij ('max') or the mean over j ('mean')")
    max_n: int = opt(2000, "refuse more training samples than this (quadratic in n)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reduce not in ("max", "mean"):
            raise InputError(f"fi-paired: reduce must be 'max' or 'mean', got {self.reduce!r}")
        self.max_n = check_number(self.max_n, "fi-paired: max_n", kind=int, low=1)


def _fit(job: Job, default: str) -> Solver:
    """The FI solver of a job (the options `solver`, `damping`, `solver_options`; defaults from
    `curvature.policy.local_influence_solver` and `local_influence_damping`)."""
    o = job.options
    name = default if o.solver is None else o.solver
    job.used["solver"] = name
    return fit_solver(job.adapter, job.train, name, local_influence_damping(o.damping), job.chunk_size,
                      job.seed, job.store, **(o.solver_options or {}))


def _job_config(job: Job, method: str) -> tuple[Solver, FIConfig, float]:
    """Read the FI options of a job; returns the fitted solver, the config and the solver time."""
    o = job.options
    kfsvd = o.approx == "kfsvd"
    jacobian, rank, iters = ("kfsvd", int(o.rank), int(o.power_iters)) if kfsvd else (o.jacobian, 10, 2)
    default_solver = local_influence_solver(kfsvd)
    rcond = o.rcond
    t0 = time.perf_counter()
    solver = _fit(job, default_solver)
    cfg = FIConfig(rcond=None if rcond is None else float(rcond), jacobian=jacobian, rank=rank,
                   power_iters=iters, chunk_size=min(job.chunk_size, 256), seed=job.seed)
    return solver, cfg, time.perf_counter() - t0


RANK_FEATURES = ("x", "xy", "xy+model")


def rank_model_features(train: Split, adapter: ModelAdapter, mode: str) -> np.ndarray:
    """Inputs of the rank model: the flattened features ("x"), plus the one-hot label ("xy"), plus the
    fitted model's per-sample loss and outputs ("xy+model", one forward pass)."""
    if mode not in RANK_FEATURES:
        raise InputError(f"rank_features must be one of {RANK_FEATURES}, got {mode!r}")
    X = train.X.reshape(len(train), -1).astype(np.float64)
    if mode == "x":
        return X
    codes = adapter.encode(train.y).cpu().numpy()
    onehot = np.zeros((len(train), max(2, adapter.n_classes)))
    onehot[np.arange(len(train)), codes] = 1.0
    parts = [X, onehot]
    if mode == "xy+model":
        Xt, t = adapter.tensors(train)
        params = adapter.params()
        with torch.no_grad():
            parts.append(to_numpy(adapter.per_sample_loss(params, Xt, t))[:, None])
            parts.append(to_numpy(adapter.outputs(params, Xt)).reshape(len(train), -1))
    return np.hstack(parts)


def subsample_fi(fi_of: Callable[[np.ndarray], np.ndarray], features: np.ndarray, alpha: float, seed: int,
                 n_estimators: int = 25, keep_exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """[FI] Algorithm 6: FI on a seeded random fraction ``alpha`` of the rows, a random-forest rank model
    for every row.

    ``fi_of(rows) -> FI`` computes FI exactly (or by KFSVD) for the given row positions; ``features`` (n, f)
    are the forest's inputs (the paper: the features x). The forest (``n_estimators`` trees, sqrt(f)
    candidate features per split, seeded by ``seed``) regresses the rank quantile ``(rank - 1) / (m - 1)``
    of the subsample's FI (0 = lowest, 1 = highest; an affine map of the paper's rank, which leaves a
    regression forest's splits unchanged) on the subsample's features, and predicts it for **every** row,
    the subsample included (the paper's rule). With ``keep_exact`` (our variant) the sampled rows keep
    their computed FI and only the others are predicted. A predicted quantile is mapped to the FI scale
    through the empirical quantiles of the computed FI (monotone: the order is the forest's), so ``raw``
    stays on the FI scale.

    Returns (raw FI for every row (n,), boolean mask (n,) of the rows whose FI was computed).
    """
    from scipy.stats import rankdata
    from sklearn.ensemble import RandomForestRegressor

    n = features.shape[0]
    m = min(n, max(2, int(math.ceil(alpha * n))))
    rows = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
    fi = np.asarray(fi_of(rows), dtype=np.float64)
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    if m == n:
        return fi, mask
    q = (rankdata(fi) - 1) / max(1, m - 1)
    forest = RandomForestRegressor(n_estimators=n_estimators, max_features="sqrt", random_state=seed, n_jobs=1)
    forest.fit(features[rows], q)
    predict = ~mask if keep_exact else np.ones(n, dtype=bool)
    raw = np.empty(n)
    raw[rows] = fi
    raw[predict] = np.quantile(fi, np.clip(forest.predict(features[predict]), 0.0, 1.0))
    return raw, mask


# ---- registered methods -------------------------------------------------------------------------
def _fi_kernel(adapter: ModelAdapter, shard: Split, payload: tuple) -> np.ndarray:
    """Shard kernel: (B,) FI of the shard's rows (`fi_matrix` with the driver's fitted solver, the target's
    gradient g and the training set's size n)."""
    solver, g, cfg, n = payload
    X, t = adapter.tensors(shard)
    return to_numpy(fi_matrix(adapter, X, t, n, solver, g, cfg)[:, 0])


def _target_fi(job: Job, method: str) -> np.ndarray:
    target = job.need_target(method)
    alpha = job.options.subsample
    ex = sharding(job.train)
    if ex is not None and (alpha is not None or job.options.approx != "exact"):
        raise InputError(f"method {method!r} with approx={job.options.approx!r}"
                         f"{'' if alpha is None else f', subsample={alpha}'} cannot run on a distributed backend "
                         "(its random draws follow the row order of one process); use approx='exact' without "
                         "subsample, or backend='local'")
    solver, cfg, t_solver = _job_config(job, method)
    g = target.grad(job.adapter)
    t1 = time.perf_counter()
    if ex is not None:  # the rows' FI on the shards: the solver and g travel once, n numbers come back
        parts = ex.map_shards(_fi_kernel, job.adapter, job.train, (solver, g, cfg, len(job.train)), job.progress)
        job.timing.update(curvature=t_solver, scoring=time.perf_counter() - t1)
        return np.concatenate(parts)
    X, t = job.adapter.tensors(job.train)
    fi_rows = lambda rows: to_numpy(fi_matrix(job.adapter, X[rows], t[rows], len(job.train), solver, g, cfg)[:, 0])
    if alpha is None:
        raw = fi_rows(np.arange(len(job.train)))
        job.timing.update(curvature=t_solver, scoring=time.perf_counter() - t1)
        return raw
    alpha = float(alpha)
    feats = rank_model_features(job.train, job.adapter, job.options.rank_features)
    trees = int(job.options.n_estimators)
    raw, _ = subsample_fi(fi_rows, feats, alpha, job.seed, trees, bool(job.options.keep_exact))
    job.timing.update(curvature=t_solver, scoring=time.perf_counter() - t1)
    return raw


LOCAL_ONLY = "it solves its local-influence system over the whole training set in one process"


@register_method("fi", title="FI local influence", options=FIOptions)
def fi_util(job: Job) -> Result:
    """FI local influence [FI]: raw = a^T pinv(G_z) a with a = (dtheta/dw)^T grad f; values = -raw.

    Options: `FIOptions` (``influent methods fi``): explicit cross Jacobians or their truncated SVD, the solver
    (default "exact", "kfac" for kfsvd), and the subsample of [FI] Algorithm 6, where a random forest fitted on
    the subsample's (x, rank of FI) predicts the rank of every sample.
    """
    raw = _target_fi(job, "fi")
    return Result(-raw, raw)


def fi_pairwise(adapter: ModelAdapter, train: Split, query: Split, *, solver: Solver | str | None = None,
                damping: float = 0.0, approx: str = "exact", rank: int = 10, power_iters: int = 2,
                rcond: float | None = None, chunk_size: int = 256, seed: int = 0) -> np.ndarray:
    """(n_train, n_query) matrix ``FI(z'_j, z_i)``: the influence measure of perturbing training sample
    z_i on the loss of query sample z'_j = (x'_j, y'_j) (for FI-active, y' is the predicted label).

    One solve per query sample and one per training sample and class; the matrix is computed in
    batches of training rows (memory O(chunk_size * n_query * K) besides the result), with no loop over
    pairs (cost model in docs/active-learning.md).

    Parameters
    ----------
    adapter : fitted classifier; train : the split it was fitted on; query : the z' samples
    solver : a fitted `Solver` or a solver name (None: "exact", or "kfac" for approx="kfsvd")
    approx : "exact" (explicit J_z) | "kfsvd" (rank-`rank` truncated SVD of J_z)
    rcond : pinv cut-off of G_z relative to its largest eigenvalue (None: 1e-10 float64 / 1e-5)
    """
    if approx not in APPROX:
        raise InputError(f"approx must be one of {APPROX}, got {approx!r}")
    if solver is None:
        solver = local_influence_solver(approx == "kfsvd")
    if isinstance(solver, str):
        solver = fit_solver(adapter, train, solver, local_influence_damping(damping), chunk_size, seed)
    Gq = GradientSource(adapter, query, chunk_size).matrix()  # (m, p)
    cfg = FIConfig(rcond=rcond, jacobian="kfsvd" if approx == "kfsvd" else "auto", rank=rank,
                   power_iters=power_iters, chunk_size=chunk_size, seed=seed)
    X, t = adapter.tensors(train)
    return to_numpy(fi_matrix(adapter, X, t, len(train), solver, Gq.T, cfg))


@register_pairwise("fi")
def fi_attribute(job: Job, test: Split) -> np.ndarray:
    """(n_train, n_test) ``-FI(z_test_j, z_i)`` (values orientation: the most influential pairs lowest)."""
    solver, cfg, _ = _job_config(job, "fi")
    Gq = GradientSource(job.adapter, test, job.chunk_size).matrix()
    X, t = job.adapter.tensors(job.train)
    return -to_numpy(fi_matrix(job.adapter, X, t, len(job.train), solver, Gq.T, cfg))


# ---- FI-paired -------------------------------------------------------------------------------------
def fi_paired_matrix(adapter: ModelAdapter, train: Split, target_grad: torch.Tensor, solver: Solver,
                     rcond: float | None = None, chunk_size: int = 64, max_n: int = 2000) -> np.ndarray:
    """(n, n) FI of perturbing two training inputs together, ``w = (w_i, w_j)`` in R^{2d}.

    ``dtheta/dw = -(1/n) H^-1 [J_i, J_j]``; the metric is the Fisher information of both perturbed
    samples' predictive distributions, ``G_ij = sum_c P_c(x_i) u_c^(i) u_c^(i)T + sum_c P_c(x_j) u_c^(j) u_c^(j)T``
    with ``u_c^(k) = (dtheta/dw)^T grad_theta log P_c(x_k) + [grad_x log P_c(x_k)]`` placed in sample k's
    block; ``FI_ij = a^T pinv(G_ij) a`` with ``a = (dtheta/dw)^T grad f``. The diagonal holds the single-
    sample FI. Quadratic in n in time and memory (n^2 K d): for small sets only (``max_n``).
    """
    _check_classifier(adapter)
    n = len(train)
    if n > max_n:
        raise InputError(f"fi-paired is quadratic in the number of samples; {n} > max_n={max_n} "
                         "(use method='fi', or pass a larger max_n)")
    if n * n * max(2, adapter.n_classes) * train.n_features > 2**27:
        raise InputError(f"fi-paired: {n} samples x {train.n_features} features needs an n x n x K x d "
                         "array too large for memory; use method='fi' or fewer samples")
    params = adapter.params()
    p = sum(v.numel() for v in params.values())
    X, t = adapter.tensors(train)
    d = int(np.prod(X.shape[1:]))
    rc = default_rcond(adapter.dtype) if rcond is None else float(rcond)
    lp = _log_probs_fn(adapter)
    logp = vmap(lp, in_dims=(None, 0))(params, X)  # (n, K)
    gth, gx = vmap(jacrev(lp, argnums=(0, 1)), in_dims=(None, 0))(params, X)
    K = logp.shape[1]
    gth = torch.cat([v.reshape(n, K, -1) for v in gth.values()], dim=2)
    gx = gx.reshape(n, K, d)
    Hg = solver.solve(gth.reshape(n * K, p).T)  # (p, n K)
    h = solver.solve(target_grad.reshape(p, 1).to(adapter.dtype))  # (p, 1)
    J = cross_jacobians(adapter, X, t, params)  # (n, p, d)
    # C[j, i, c] = -(1/n) J_j^T H^-1 grad_theta log P_c(x_i): effect of perturbing x_j on log P_c(x_i)
    C = (-1.0 / n) * torch.einsum("jpd,pq->jqd", J, Hg).reshape(n, n, K, d)
    a = (-1.0 / n) * torch.einsum("jpd,p->jd", J, h[:, 0])  # (n, d)
    q = logp.exp().sqrt()  # (n, K)
    qn = q / q.norm(dim=1, keepdim=True)
    out = np.empty((n, n))
    for s in range(0, n, chunk_size):
        I = torch.arange(s, min(n, s + chunk_size), device=X.device)
        b = len(I)
        # rows of S for pair (i, j): sample i's K rows then sample j's K rows; columns (w_i, w_j)
        own_i = C[I, I] + gx[I]  # (b, K, d): u^(i) in block i
        cross_ij = C[:, I].transpose(0, 1)  # (b, n, K, d): [j, i] -> effect of w_j on log P(x_i)
        Si = torch.cat([own_i[:, None].expand(b, n, K, d), cross_ij], dim=3)  # block (w_i, w_j) for sample i
        own_j = C[torch.arange(n, device=X.device), torch.arange(n, device=X.device)] + gx  # (n, K, d)
        cross_ji = C[I]  # (b, n, K, d): [i, j] -> effect of w_i on log P(x_j)
        Sj = torch.cat([cross_ji, own_j[None].expand(b, n, K, d)], dim=3)
        S = torch.cat([q[I][:, None, :, None] * Si, q[None, :, :, None] * Sj], dim=2)  # (b, n, 2K, 2d)
        null = torch.zeros(b, n, 2 * K, 2, dtype=S.dtype, device=S.device)  # sqrt P of each sample's rows
        null[:, :, :K, 0] = qn[I][:, None, :]
        null[:, :, K:, 1] = qn[None, :, :]
        Vh, inv = gram_pinv(S, rc, null)
        A = torch.cat([a[I][:, None, :].expand(b, n, d), a[None].expand(b, n, d)], dim=2)  # (b, n, 2d)
        proj = torch.einsum("bjrd,bjd->bjr", Vh, A) * inv
        out[s:s + b] = to_numpy((proj**2).sum(2))
    single = fi_matrix(adapter, X, t, n, solver, target_grad, FIConfig(rcond=rcond))[:, 0]
    np.fill_diagonal(out, to_numpy(single))
    return out


@register_method("fi-paired", title="FI paired", options=FIPairedOptions, local_only=LOCAL_ONLY)
def fi_paired(job: Job) -> Result:
    """FI-paired: FI of perturbing two samples together (masking); raw_i = max_j FI_ij (or the mean,
    ``reduce="mean"``); values = -raw. Quadratic in n (small sets; ``max_n``, default 2000)."""
    target = job.need_target("fi-paired")
    o = job.options
    reduce, rcond, max_n = o.reduce, o.rcond, int(o.max_n)
    t0 = time.perf_counter()
    solver = _fit(job, local_influence_solver(False))
    t1 = time.perf_counter()
    M = fi_paired_matrix(job.adapter, job.train, target.grad(job.adapter), solver, rcond, max_n=max_n)
    off = M.copy()
    np.fill_diagonal(off, np.nan)
    raw = np.nanmax(off, axis=1) if reduce == "max" else np.nanmean(off, axis=1)
    if len(job.train) == 1:
        raw = np.diag(M).copy()
    job.timing.update(curvature=t1 - t0, scoring=time.perf_counter() - t1)
    return Result(-raw, raw)
