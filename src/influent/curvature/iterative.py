"""Matrix-free iterative solvers: conjugate gradient and LiSSA.

Both only use Hessian-vector products (`CurvatureContext.hvp`) and solve
``(H + damping I) X = V`` with the shared, absolute `damping` (see `base`).
"""

from __future__ import annotations

import math
import warnings

import torch

from ..data.validate import InputError, check_number
from .base import CurvatureContext, Solver, register


@register("cg")
class CGSolver(Solver):
    """Conjugate gradient on all k right-hand sides at once, with full-data Hessian-vector products.

    Every iteration costs one batched HVP over the training set (only for the columns not yet
    converged). CG needs ``H + damping I`` to be positive definite; if it meets a direction of
    non-positive curvature it stops with an error (raise `damping`, or use the Gauss-Newton-based
    or exact solvers).

    Parameters
    ----------
    tol : stop a column when ``|r| <= tol * |v|`` (relative residual); never below 10 eps of the dtype
    max_iter : iteration cap; None means p (the exact-arithmetic bound). A warning is issued when
               a column has not converged by then.

    Attributes
    ----------
    n_iter_ : iterations used by the last `solve`
    residual_ : (k,) final relative residuals of the last `solve`
    """

    def __init__(self, tol: float = 1e-8, max_iter: int | None = None) -> None:
        super().__init__(tol=tol, max_iter=max_iter)
        self.tol = check_number(tol, "cg: tol", low=0, low_open=True)
        self.max_iter = check_number(max_iter, "cg: max_iter", kind=int, low=1, none=True)

    def _fit(self, ctx: CurvatureContext) -> None:
        self.n_iter_ = 0
        self.residual_ = None

    def fit_report(self) -> dict:
        return {"hvp": dict(self.ctx.hvp_modes_)}

    def _apply(self, P: torch.Tensor) -> torch.Tensor:
        return self.ctx.hvp(P) + self.ctx.damping * P

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        ctx = self.ctx
        max_iter = self.max_iter if self.max_iter is not None else ctx.p
        X = torch.zeros_like(V)
        R = V.clone()
        P = R.clone()
        rs = (R * R).sum(0)
        bnorm = V.norm(dim=0)
        # below ~10 eps the residual is round-off: further steps cannot improve it (and p^T A p may vanish)
        tol = max(self.tol, 10 * torch.finfo(V.dtype).eps)
        active = rs.sqrt() > tol * bnorm
        active &= bnorm > 0
        it = 0
        while bool(active.any()) and it < max_iter:
            idx = active.nonzero().flatten()
            Pa = P[:, idx]
            APa = self._apply(Pa)
            pAp = (Pa * APa).sum(0)
            bad = pAp <= 0
            # a column already at the precision the products allow (sqrt eps) stops there: its p^T A p is
            # round-off, not a sign of indefiniteness
            done = bad & (rs[idx].sqrt() <= torch.finfo(V.dtype).eps ** 0.5 * bnorm[idx])
            if bool(done.any()):
                active[idx[done]] = False
                keep = ~done
                idx, Pa, APa, pAp, bad = idx[keep], Pa[:, keep], APa[:, keep], pAp[keep], bad[keep]
                if idx.numel() == 0:
                    break
            if bool(bad.any()):
                raise InputError(
                    f"cg: H + damping*I is not positive definite (found p^T A p = {float(pAp[bad][0]):.3g} <= 0 "
                    f"at iteration {it + 1}, damping={ctx.damping:g}); cg inverts the Hessian only: increase "
                    "damping, or use solver 'exact' with solver_options={'curvature': 'ggn'} (positive "
                    "semi-definite), 'ekfac' or 'kfac' (Gauss-Newton approximations)")
            alpha = rs[idx] / pAp
            X[:, idx] += alpha * Pa
            R[:, idx] -= alpha * APa
            rs_new = (R[:, idx] ** 2).sum(0)
            beta = rs_new / rs[idx]
            P[:, idx] = R[:, idx] + beta * Pa
            rs[idx] = rs_new
            active[idx] = rs_new.sqrt() > tol * bnorm[idx]
            it += 1
        self.n_iter_ = it
        self.residual_ = torch.where(bnorm > 0, rs.sqrt() / bnorm.clamp_min(torch.finfo(V.dtype).tiny),
                                     torch.zeros_like(bnorm))
        if bool(active.any()):
            warnings.warn(f"cg: {int(active.sum())} of {V.shape[1]} right-hand sides did not reach tol={self.tol:g} "
                          f"in {it} iterations (worst relative residual {float(self.residual_.max()):.3g}); "
                          "increase max_iter or damping", RuntimeWarning, stacklevel=3)
        return X


@register("lissa")
class LiSSASolver(Solver):
    """LiSSA: the stochastic Neumann series of Agarwal et al. (2017), as used by Koh & Liang (2017).

    With ``A = H + damping I`` and ``v`` a right-hand side::

        h_0 = v,    h_j = v + (I - (H_B + damping I) / scale) h_{j-1},    result = h_depth / scale

    where ``H_B`` is the Hessian of a fresh random minibatch (the regulariser included) at each step.
    The series converges to ``A^-1 v`` when ``0 < eig(A) < 2 * scale`` (in practice: A positive
    definite and ``scale`` above its top eigenvalue); the error after `depth` steps shrinks like
    ``(1 - lambda_min(A) / scale)^depth``, so small damping needs a deep recursion.

    Parameters
    ----------
    depth : recursion steps per repeat
    scale : a number above the largest eigenvalue of ``H + damping I``, or "auto": estimated by
            `power_iter` power iterations on the full-data ``H + damping I`` (seeded by ctx.seed),
            times 1.1 (power iteration approaches the top eigenvalue from below)
    batch_size : samples per minibatch HVP, taken in order from a fresh random permutation of the
                 training set (no repeats within a batch; reshuffled when too few remain); None or
                 >= n uses all data (then the recursion is deterministic Richardson iteration)
    repeats : independent recursions averaged (reduces the minibatch noise)
    power_iter : power iterations for ``scale="auto"``

    Notes
    -----
    Deterministic: the minibatches are drawn from a generator seeded with ``ctx.seed`` at every
    `solve`, and all right-hand sides of one call share them.
    """

    def __init__(self, depth: int = 1000, scale: float | str = 10.0, batch_size: int | None = 64,
                 repeats: int = 1, power_iter: int = 20) -> None:
        super().__init__(depth=depth, scale=scale, batch_size=batch_size, repeats=repeats)
        self.depth = check_number(depth, "lissa: depth", kind=int, low=1)
        self.repeats = check_number(repeats, "lissa: repeats", kind=int, low=1)
        if scale != "auto" and not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0):
            raise InputError(f"lissa: scale must be a positive number or 'auto', got {scale!r}")
        self.scale = scale
        self.batch_size = check_number(batch_size, "lissa: batch_size", kind=int, low=1, none=True)
        self.power_iter = check_number(power_iter, "lissa: power_iter", kind=int, low=0)

    def _fit(self, ctx: CurvatureContext) -> None:
        if self.scale == "auto":
            gen = torch.Generator().manual_seed(ctx.seed)
            v = torch.randn(ctx.p, generator=gen, dtype=ctx.dtype).to(ctx.device)  # drawn on the CPU
            v /= v.norm()
            lam = 0.0
            for _ in range(max(1, self.power_iter)):
                w = ctx.hvp(v) + ctx.damping * v
                lam = float(v @ w)
                nrm = float(w.norm())
                if nrm == 0.0:
                    break
                v = w / nrm
            # |Rayleigh quotient| <= |lambda_max|; the last norm |A v| is a tighter-from-above guess
            top = max(abs(lam), nrm)
            if top == 0.0:
                raise InputError("lissa: H + damping*I is zero; nothing to invert (set damping > 0)")
            self.scale_ = 1.1 * top
        else:
            self.scale_ = float(self.scale)

    def fit_report(self) -> dict:
        return {"hvp": dict(self.ctx.hvp_modes_), "scale": self.scale_}

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        ctx = self.ctx
        gen = torch.Generator().manual_seed(ctx.seed)
        full = self.batch_size is None or self.batch_size >= ctx.n
        total = torch.zeros_like(V)
        vnorm = float(V.norm()) or 1.0
        perm, pos = torch.randperm(ctx.n, generator=gen), 0
        for _ in range(self.repeats):
            h = V.clone()
            for j in range(self.depth):
                index = None
                if not full:  # shuffled passes over the data, batches without replacement
                    if pos + self.batch_size > ctx.n:
                        perm, pos = torch.randperm(ctx.n, generator=gen), 0
                    index, pos = perm[pos:pos + self.batch_size], pos + self.batch_size
                Ah = ctx.hvp(h, index) + ctx.damping * h
                h = V + h - Ah / self.scale_
                if (j + 1) % 50 == 0 or j + 1 == self.depth:
                    hn = float(h.norm())
                    if not math.isfinite(hn) or hn > 1e12 * vnorm * max(1.0, j + 1):
                        raise InputError(
                            f"lissa diverged after {j + 1} steps (scale={self.scale_:.4g}, damping={ctx.damping:g}): "
                            "scale must exceed the largest eigenvalue of H + damping*I and H + damping*I must be "
                            "positive definite; increase scale (or use scale='auto') or damping")
            total += h / self.scale_
        return total / self.repeats
