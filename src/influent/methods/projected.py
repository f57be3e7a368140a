"""Influence functions in a randomly projected parameter space (``method="if", projection={...}``).

With a sketch P (k, p) (`grads.projection`), the model restricted to the subspace theta* + P^T z has
gradient P g and Hessian H_k = P H P^T at z = 0, so the exact influence function of that restricted model
(Koh & Liang, 2017, Sec. 2, applied in the subspace; the projected-gradient setting of TRAK, Park et al.
2023, Sec. 3) is

    effect_i = (1/n) (P grad f)^T (P H P^T + damping I)^-1 (P g_i).

H_k is built explicitly from k Hessian-vector products (or from the closed-form Hessian of a linear
model) and solved exactly; memory O(p * block + k^2). With k = p and an invertible P and no damping this
is the unprojected influence function exactly (tested). Damping: 0 for convex models; for non-convex
ones `curvature.policy.projected_damping`, 0.1 * trace(H_k) / k (a warning says when H_k + damping I has
negative eigenvalues). H_k + damping I is factored by `curvature.factor.factorize`.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from ..curvature import CurvatureContext
from ..curvature.factor import Factor, factorize
from ..curvature.policy import PROJECTED_DAMPING_RULE, given_damping, projected_damping
from ..data import Split
from ..grads.source import GradientSource
from ..targets import Target
from .registry import Job, Result, to_numpy

_BLOCK = 256  # columns of P^T per batch of Hessian-vector products


def projected_hessian(job: Job, src: GradientSource) -> torch.Tensor:
    """(k, k) P H P^T for the training objective H of design promise 2 (without damping)."""
    P = src.projection
    assert P is not None
    ctx = CurvatureContext(job.adapter, job.train, 0.0, job.chunk_size, job.seed)
    closed = job.adapter.closed_form_hessian(ctx.X, ctx.t) if ctx.p <= 20_000 else None
    if closed is not None:
        H = 0.5 * (closed + closed.T)
        return P.vectors(P.vectors(H).T)
    Hk = torch.empty(P.k, P.k, dtype=ctx.dtype, device=ctx.device)
    for s in range(0, P.k, _BLOCK):
        e = min(P.k, s + _BLOCK)
        Hk[:, s:e] = P.vectors(ctx.hvp(P.transpose_block(s, e).to(ctx.dtype)))
    return 0.5 * (Hk + Hk.T)


def _factor(job: Job, src: GradientSource) -> Factor:
    """The factorisation of P H P^T + damping I (k, k)."""
    Hk = projected_hessian(job, src)
    convex = job.adapter.is_convex()
    damping = given_damping(job.options.damping, convex)
    if damping is not None:
        job.used["damping"] = damping
    else:
        damping = projected_damping(Hk)
        job.used["damping"] = damping
        job.used["damping_rule"] = PROJECTED_DAMPING_RULE
    job.used["solver"] = "exact (projected Hessian P H P^T)"
    factor = factorize(Hk + damping * torch.eye(Hk.shape[0], dtype=Hk.dtype, device=Hk.device))
    if factor.n_negative and not convex:
        warnings.warn(f"projected influence: P H P^T + damping*I has {factor.n_negative} negative eigenvalue(s) on "
                      "this non-convex model; raise damping", RuntimeWarning, stacklevel=4)
    return factor


def _rows_dot(src: GradientSource, U: torch.Tensor) -> torch.Tensor:
    """(n, m) products of the projected training rows with U (k, m)."""
    out = torch.empty(src.n, U.shape[1], dtype=U.dtype, device=U.device)
    for sl, G in src.chunks():
        out[sl] = G.to(U.dtype) @ U
    return out


def projected_influence(job: Job, target: Target) -> Result:
    """effect_i = (1/n) (P grad f)^T (P H P^T + damping I)^-1 P g_i; values = effect."""
    t0 = time.perf_counter()
    src = job.source()
    factor = _factor(job, src)
    t1 = time.perf_counter()
    u = factor.solve(src.project(target.grad(job.adapter).to(factor.dtype)))
    effect = _rows_dot(src, u[:, None])[:, 0] / len(job.train)
    job.timing.update(curvature=t1 - t0, scoring=time.perf_counter() - t1)
    v = to_numpy(effect)
    return Result(v, v)


def projected_influence_pairwise(job: Job, test: Split) -> np.ndarray:
    """(n_train, n_test): (1/n) (P g_test_j)^T (P H P^T + damping I)^-1 P g_i."""
    src = job.source()
    factor = _factor(job, src)
    U = factor.solve(job.source(split=test).matrix().T.to(factor.dtype))
    return to_numpy(_rows_dot(src, U) / len(job.train))
