"""Arnoldi (Lanczos, H being symmetric) low-rank inverse: Schioppa et al., "Scaling Up Influence
Functions" (AAAI 2022)."""

from __future__ import annotations

import torch

from ..data.validate import check_number
from .base import CurvatureContext, Solver, register


@register("arnoldi")
class ArnoldiSolver(Solver):
    """Top eigenpairs of H from a Krylov basis, and the inverse restricted to their span.

    A Krylov basis ``Q`` (p, m) is built from a seeded random start with one full-data HVP per step
    and full re-orthogonalisation (twice, classical Gram-Schmidt). If the Krylov space is exhausted
    early (H has repeated eigenvalues, e.g. inputs that are constant), the basis is continued from
    a fresh random vector orthogonal to it. The Rayleigh-Ritz matrix ``T = Q^T H Q`` is formed from
    the stored products ``H Q`` and eigendecomposed; the `rank` Ritz pairs ``(lambda_k, q_k)`` of
    largest ``|lambda_k|`` are kept and

        solve(V) = sum_k q_k q_k^T V / (lambda_k + damping)

    Directions outside the kept span contribute nothing (as in the paper). With ``rank = n_iter = p``
    the basis spans everything and the result equals the exact solver.

    Parameters
    ----------
    rank : number of eigenpairs kept (clipped to n_iter)
    n_iter : Krylov basis size (HVPs); None means ``min(p, 2 * rank)``
    rcond : kept eigenvalues with ``|lambda + damping| <= rcond * max|lambda + damping|`` are
            dropped (pseudo-inverse, as in the exact solver); None: 1e-10 (float64) / 1e-5

    Attributes
    ----------
    evals_ : (rank,) kept eigenvalues of H (without damping), by decreasing magnitude
    evecs_ : (p, rank) their orthonormal eigenvectors
    n_restarts_ : how many times the Krylov space was exhausted and restarted
    """

    def __init__(self, rank: int = 50, n_iter: int | None = None, rcond: float | None = None) -> None:
        super().__init__(rank=rank, n_iter=n_iter, rcond=rcond)
        self.rank = check_number(rank, "arnoldi: rank", kind=int, low=1)
        self.n_iter = check_number(n_iter, "arnoldi: n_iter", kind=int, low=1, none=True)
        self.rcond = check_number(rcond, "arnoldi: rcond", low=0, none=True)

    def _fit(self, ctx: CurvatureContext) -> None:
        p = ctx.p
        m = min(p, self.n_iter if self.n_iter is not None else 2 * self.rank)
        rank = min(self.rank, m)
        gen = torch.Generator().manual_seed(ctx.seed)
        eps = torch.finfo(ctx.dtype).eps
        breakdown = 1e3 * eps

        def orthogonalise(w: torch.Tensor, upto: int) -> torch.Tensor:
            B = Q[:, :upto]
            for _ in range(2):
                w = w - B @ (B.T @ w)
            return w

        Q = torch.zeros(p, m, dtype=ctx.dtype, device=ctx.device)
        HQ = torch.zeros(p, m, dtype=ctx.dtype, device=ctx.device)
        q = torch.randn(p, generator=gen, dtype=ctx.dtype).to(ctx.device)  # drawn on the CPU: the same on every device
        q /= q.norm()
        restarts = 0
        for j in range(m):
            Q[:, j] = q
            w = ctx.hvp(q)
            HQ[:, j] = w
            if j == m - 1:
                break
            ref = float(w.norm())
            w = orthogonalise(w, j + 1)
            while float(w.norm()) <= breakdown * max(ref, 1.0):
                # Krylov space exhausted: continue from a random direction orthogonal to the basis
                restarts += 1
                w = orthogonalise(torch.randn(p, generator=gen, dtype=ctx.dtype).to(ctx.device), j + 1)
                ref = 1.0
            q = w / w.norm()
        T = Q.T @ HQ
        T = 0.5 * (T + T.T)
        evals, U = torch.linalg.eigh(T)
        order = torch.argsort(evals.abs(), descending=True)[:rank]
        self.evals_ = evals[order]
        self.evecs_ = Q @ U[:, order]
        self.n_restarts_ = restarts
        d = self.evals_ + ctx.damping
        rcond = self.rcond if self.rcond is not None else (1e-10 if ctx.dtype == torch.float64 else 1e-5)
        keep = d.abs() > rcond * d.abs().max()
        self.inv_evals_ = torch.where(keep, 1.0 / torch.where(keep, d, torch.ones_like(d)), torch.zeros_like(d))

    def fit_report(self) -> dict:
        return {"hvp": dict(self.ctx.hvp_modes_), "n_restarts": self.n_restarts_}

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        return self.evecs_ @ (self.inv_evals_[:, None] * (self.evecs_.T @ V))

    def quad(self, G: torch.Tensor) -> torch.Tensor:
        P = G @ self.evecs_
        return (P**2 * self.inv_evals_).sum(1)
