"""Identity and exact (explicit Hessian or Gauss-Newton, factored by `factor.factorize`) solvers."""

from __future__ import annotations

from typing import Any

import torch

from ..data.validate import InputError, check_choice, check_number
from .base import CurvatureContext, Solver, register
from .factor import Factor, factorize


@register("identity")
class IdentitySolver(Solver):
    """``(I + damping I)^-1 V`` scaled to ``V / (1 + damping)``: Hessian-free influence (IP up to scale)."""

    def _fit(self, ctx: CurvatureContext) -> None:
        pass

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        return V / (1.0 + self.ctx.damping)


def _fits_in_float64(p: int, budget_bytes: float) -> bool:
    return 2 * p * p * 8 <= budget_bytes  # the matrix and its factor


@register("exact")
class ExactSolver(Solver):
    """Explicit matrix ``A = H + damping I``, factored once; all right-hand sides solved together.

    The matrix comes from the cheapest exact route: the model's closed-form Hessian where it has one,
    otherwise Hessian-vector products with identity blocks (`CurvatureContext.hessian`). It is
    factored by `factor.factorize`: Cholesky (``torch.linalg.cholesky_ex``), and only when that fails
    (``A`` is indefinite or singular, or its pivots span more than ``1 / rcond``) the symmetric
    eigendecomposition, which gives the exact inverse of an indefinite ``A`` and the pseudo-inverse of a
    singular one. `path_` says which ran, and is recorded in the scores' settings.

    Parameters
    ----------
    curvature : "hessian" (default) or "ggn" (generalised Gauss-Newton, PSD for convex losses)
    rcond : eigenvalues of ``H + damping I`` with ``|lambda| <= rcond * max |lambda|`` are treated as zero
            (pseudo-inverse). Such null directions carry no gradient for models with a symmetry
            (e.g. the softmax intercept shift of unpenalised multinomial logistic regression).
            The Cholesky factor is accepted only when its smallest squared pivot exceeds
            ``rcond`` times the largest. None: `factor.default_rcond`, 1e-10 (float64 factor) / 1e-5 (float32)
    max_params : refuse larger problems (the matrix is p x p)
    float64 : factor and solve in float64 (the matrix is built in the model's dtype): "auto" (default:
              when matrix and factor take at most `float64_budget_gb`), True or False
    float64_budget_gb : memory budget for the float64 matrix and factor

    Attributes
    ----------
    path_ : "cholesky" or "eigh" (the fallback)
    factor_dtype_ : the dtype of the factorisation
    hessian_route_ : "closed form", "hvp-rev", "hvp-fwd" (reverse- or forward-over-reverse) or "ggn"
    n_null_, n_negative_ : eigenvalues treated as zero / negative ones (eigh path only; 0 otherwise)
    factor_ : the `factor.Factor`
    """

    def __init__(self, curvature: str = "hessian", rcond: float | None = None, max_params: int = 20_000,
                 float64: bool | str = "auto", float64_budget_gb: float = 8.0) -> None:
        super().__init__(curvature=curvature, rcond=rcond)
        check_choice(curvature, ("hessian", "ggn"), "exact: curvature")
        check_choice(float64, ("auto", True, False), "exact: float64")
        self.curvature = curvature
        self.rcond = check_number(rcond, "exact: rcond", low=0, none=True)
        self.max_params = check_number(max_params, "exact: max_params", kind=int, low=1)
        self.float64 = float64
        self.float64_budget_gb = check_number(float64_budget_gb, "exact: float64_budget_gb", low=0)

    def _fit(self, ctx: CurvatureContext) -> None:
        if ctx.p > self.max_params:
            raise InputError(f"exact solver: {ctx.p} parameters exceed max_params={self.max_params}; "
                             "use cg, lissa, arnoldi, ekfac or datainf, or analyse fewer parameters")
        H = ctx.explicit(self.curvature)
        self.hessian_route_ = ctx.hessian_route_
        wide = self.float64 is True or (self.float64 == "auto" and
                                        _fits_in_float64(ctx.p, self.float64_budget_gb * 2**30))
        dt = torch.float64 if wide else ctx.dtype
        self.factor_dtype_ = dt
        A = H.to(dt)
        del H
        A.diagonal().add_(ctx.damping)
        self.factor_: Factor = factorize(A, self.rcond)
        del A
        self.path_, self.n_null_, self.n_negative_ = self.factor_.path, self.factor_.n_null, self.factor_.n_negative

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        return self.factor_.solve(V)

    def quad(self, G: torch.Tensor) -> torch.Tensor:
        return self.factor_.quad(G)

    def fit_report(self) -> dict[str, Any]:
        out = {"path": getattr(self, "path_", None), "factor_dtype": str(self.factor_dtype_).replace("torch.", ""),
               "hessian_route": self.hessian_route_}
        out.update({k: v for k, v in self.factor_.report().items() if k != "path"})
        return out
