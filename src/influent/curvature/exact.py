"""Identity and exact (explicit Hessian or Gauss-Newton, eigendecomposition) solvers."""

from __future__ import annotations

import torch

from .base import CurvatureContext, Solver, register


@register("identity")
class IdentitySolver(Solver):
    """``(I + damping I)^-1 V`` scaled to ``V / (1 + damping)``: Hessian-free influence (IP up to scale)."""

    def _fit(self, ctx: CurvatureContext) -> None:
        pass

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        return V / (1.0 + self.ctx.damping)


@register("exact")
class ExactSolver(Solver):
    """Explicit matrix and symmetric eigendecomposition.

    Parameters
    ----------
    curvature : "hessian" (default) or "ggn" (generalised Gauss-Newton, PSD for convex losses)
    rcond : eigenvalues of ``H + damping I`` with ``|lambda| <= rcond * max |lambda|`` are treated as zero
            (pseudo-inverse). Such null directions carry no gradient for models with a symmetry
            (e.g. the softmax intercept shift of unpenalised multinomial logistic regression).
    max_params : refuse larger problems (the matrix is p x p)
    """

    def __init__(self, curvature: str = "hessian", rcond: float | None = None, max_params: int = 20_000) -> None:
        super().__init__(curvature=curvature, rcond=rcond)
        if curvature not in ("hessian", "ggn"):
            raise ValueError(f"curvature must be 'hessian' or 'ggn', got {curvature!r}")
        self.curvature = curvature
        self.rcond = rcond
        self.max_params = max_params

    def _fit(self, ctx: CurvatureContext) -> None:
        if ctx.p > self.max_params:
            raise ValueError(f"exact solver: {ctx.p} parameters exceed max_params={self.max_params}; "
                             "use cg, lissa, arnoldi, ekfac or datainf, or analyse fewer parameters")
        H = ctx.hessian() if self.curvature == "hessian" else ctx.gauss_newton()
        H = H + ctx.damping * torch.eye(ctx.p, dtype=ctx.dtype)
        evals, evecs = torch.linalg.eigh(H)
        rcond = self.rcond if self.rcond is not None else (1e-10 if ctx.dtype == torch.float64 else 1e-5)
        keep = evals.abs() > rcond * evals.abs().max()
        self.matrix_ = H
        self.evals_, self.evecs_ = evals, evecs
        self.inv_evals_ = torch.where(keep, 1.0 / torch.where(keep, evals, torch.ones_like(evals)),
                                      torch.zeros_like(evals))
        self.n_null_ = int((~keep).sum())
        self.n_negative_ = int((evals[keep] < 0).sum())

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        return self.evecs_ @ (self.inv_evals_[:, None] * (self.evecs_.T @ V))

    def quad(self, G: torch.Tensor) -> torch.Tensor:
        P = G @ self.evecs_
        return (P**2 * self.inv_evals_).sum(1)
