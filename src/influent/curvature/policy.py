"""The curvature policy: which curvature a run inverts by default, and every damping default, in one place.

Methods call these functions with the values they hold (the fitted adapter, the training split, the
options' `solver`, `damping`, `solver_options`); nothing here reads a method's options or names a method.

- `default_solver`: the influence-function family (`Job.solver`): the exact Hessian on a convex model, the
  Gauss-Newton curvature (EK-FAC, or exact up to `EXACT_GGN_MAX_PARAMS` parameters) with
  `mean_eigenvalue_damping` on a non-convex one.
- `projected_damping`: influence in a randomly projected parameter space (the exact projected Hessian).
- `last_layer_damping`: the leave-one-out Newton step of the wrong-label detector on a final linear layer.
- `local_influence_solver` / `local_influence_damping`: FI local influence (the paper's exact Hessian, no
  damping).
- `given_damping`: the damping that needs no rule (the user's, or 0 on a convex model), shared by the first two.

`fit_solver_in` is the one way a named solver is built and fitted; `fit_solver` is it without the
model-dependent defaults. The factorisation itself (Cholesky, gauge lift, eigh) is `curvature.factor`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from ..data import Split
from ..data.validate import InputError, check_damping
from ..models.base import ModelAdapter
from .base import CurvatureContext, Solver, make_solver

EXACT_GGN_MAX_PARAMS = 4000  # the exact Gauss-Newton fallback of a non-convex model's default curvature
DAMPING_FACTOR = 1.0  # the damping rule's multiple of the curvature's mean eigenvalue (kronfluence: 0.1)
PROJECTED_DAMPING_FACTOR = 0.1  # `projected_damping`'s multiple of the projected Hessian's mean eigenvalue
LAST_LAYER_DAMPING = 1e-3  # `last_layer_damping` of an unregularised final layer

DAMPING_RULE = f"{DAMPING_FACTOR:g} * mean eigenvalue (trace of the empirical Fisher + regulariser) / p"
PROJECTED_DAMPING_RULE = (f"{PROJECTED_DAMPING_FACTOR:g} * mean eigenvalue of the projected Hessian, "
                          "trace(P H P^T) / k")


# ---- damping rules ------------------------------------------------------------------------------------
def given_damping(damping: float | None, convex: bool) -> float | None:
    """The damping that needs no rule: the user's (checked), or 0 on a convex model, whose Hessian is the
    influence function's of Koh & Liang (2017), Sec. 2; None when the model's rule applies."""
    if damping is not None or convex:
        return check_damping(0.0 if damping is None else damping)
    return None


def mean_eigenvalue_damping(sq_norms: torch.Tensor, reg_diag: torch.Tensor) -> float:
    """The damping rule of a non-convex model's default curvature: `DAMPING_FACTOR` times the mean eigenvalue
    of the Gauss-Newton curvature, estimated as the trace of the empirical Fisher plus the regulariser over p,
    ``DAMPING_FACTOR * (mean_i |g_i|^2 + sum(reg diag)) / p``.

    sq_norms : (n,) per-sample squared gradient norms |g_i|^2; reg_diag : (p,) the regulariser's Hessian diagonal.

    kronfluence (Grosse et al., 2023) uses 0.1 times the mean eigenvalue; the factor 1.0 was chosen by the linear
    datamodeling score against retrained models on held-back problems (MLPs on scikit-learn's digits and breast
    cancer, `benchmarks/lds_networks.py --select-if`, docs/evaluation.md), where it beats 0.1 with one model and
    with five.
    """
    mean_eig = (float(sq_norms.mean()) + float(reg_diag.sum())) / max(1, reg_diag.numel())
    return DAMPING_FACTOR * mean_eig


def projected_damping(Hk: torch.Tensor) -> float:
    """The damping of influence in a projected space on a non-convex model: `PROJECTED_DAMPING_FACTOR` (0.1)
    times the mean eigenvalue of the projected Hessian, ``0.1 * trace(P H P^T) / k``, for Hk (k, k).

    Why it differs from `mean_eigenvalue_damping`: the projected method inverts the exact (indefinite)
    projected Hessian, whose trace it has at no cost, not the Gauss-Newton curvature, and it keeps
    kronfluence's factor 0.1 (Grosse et al., 2023); the LDS selection of `DAMPING_FACTOR` = 1.0 was made on
    the default Gauss-Newton curvature and has not been repeated for the projected Hessian.
    """
    return PROJECTED_DAMPING_FACTOR * float(torch.diagonal(Hk).sum()) / Hk.shape[0]


def last_layer_damping(regularised: bool) -> float:
    """The damping of the leave-one-out Newton step on a final linear layer (the wrong-label detector):
    0 when the analysed weights carry an L2 regulariser, else `LAST_LAYER_DAMPING` (1e-3).

    Why: with a penalty the detector's Hessian (the layer's Gauss-Newton matrix plus the regulariser) is
    positive definite apart from the softmax's common intercept shift, which `factor.factorize` lifts exactly,
    so no damping is needed and the Newton step is the one of design promise 2 (leave-one-out logits tested
    against refits). Without a penalty nothing bounds that Hessian away from singular (unpenalised weights on
    separable features drive its curvature towards 0); 1e-3 enters as the proximal term
    ``damping / 2 |theta - theta_fitted|^2`` and keeps the step finite (docs/noisy-labels.md).
    """
    return 0.0 if regularised else LAST_LAYER_DAMPING


def local_influence_solver(kfsvd: bool) -> str:
    """The default solver of FI local influence: the exact Hessian of the fitted model ([FI] Sec. 3, Yu et
    al.), or K-FAC for the truncated-SVD approximation (``approx="kfsvd"``, which pairs a K-FAC inverse with
    a low-rank cross Jacobian to bound memory)."""
    return "kfac" if kfsvd else "exact"


def local_influence_damping(damping: float | None) -> float:
    """The damping of FI local influence: the user's, else 0 on every model ([FI] Sec. 3 inverts the
    Hessian of the fitted model as it is; the non-convex rules above are not applied)."""
    return check_damping(0.0 if damping is None else damping)


# ---- solvers --------------------------------------------------------------------------------------------
def fit_solver_in(ctx: CurvatureContext, name: str, options: dict[str, Any] | None = None) -> Solver:
    """The solver `name` with `options`, fitted in `ctx`; a bad name, option or fit is a one-line `InputError`.
    The one way a solver is built: `default_solver` and `fit_solver` call it."""
    try:
        solver = make_solver(name, **(options or {}))
    except TypeError as exc:
        raise InputError(f"solver {name!r}: {exc}".replace("__init__() ", "")) from None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    try:
        solver.fit(ctx)
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return solver


def fit_solver(adapter: ModelAdapter, train: Split, name: str = "exact", damping: float = 0.0,
               chunk_size: int = 512, seed: int = 0, store: str | Path | None = None, **options: Any) -> Solver:
    """A curvature solver (``(H + damping I)^-1``) named `name`, fitted on the training split, without the
    model-dependent defaults of `default_solver` (for FI and the active-learning strategies)."""
    ctx = CurvatureContext(adapter, train, check_damping(damping), chunk_size, seed, store)
    return fit_solver_in(ctx, name, options)


def solver_name(adapter: ModelAdapter, solver: str | None) -> str:
    """The solver `default_solver` uses: the one named, else the exact Hessian on a convex model, EK-FAC otherwise."""
    return solver if solver is not None else "exact" if adapter.is_convex() else "ekfac"


def default_solver(adapter: ModelAdapter, train: Split, solver: str | None, damping: float | None,
                   solver_options: dict | None, *, chunk_size: int, seed: int, store: str | Path | None,
                   sq_norms: Callable[[], torch.Tensor], used: dict[str, Any]) -> Solver:
    """The fitted curvature solver of the influence-function family: `solver`, `damping` and `solver_options`
    as the user gave them (None: the defaults below); every choice is written to `used`, in this order,
    for the settings saved with the scores (solver, damping, damping_rule, curvature_rule, solver_options,
    solver_fit).

    Defaults per model kind:

    - convex models (`ModelAdapter.is_convex`: a linear model, or only the last linear layer analysed): the
      exact Hessian, damping 0 -- the influence function of Koh & Liang (2017), Sec. 2;
    - non-convex models: a positive semi-definite curvature, the generalised Gauss-Newton matrix approximated
      by EK-FAC (George et al., 2018), or exactly when EK-FAC does not cover the analysed layers (at most
      `EXACT_GGN_MAX_PARAMS` parameters), and the damping rule `mean_eigenvalue_damping`. The Hessian of a
      non-convex network is indefinite at a trained model, and its influence values are dominated by the
      negative directions (Basu, Pope & Feizi, 2021).

    A solver the user names is used as named; a warning says when the curvature it inverts is indefinite on
    a non-convex model (`warn_if_indefinite`).

    sq_norms : () -> (n,) the per-sample squared gradient norms of the training split (called only when the
        damping rule applies)
    """
    convex = adapter.is_convex()
    named = solver is not None
    name = solver_name(adapter, solver)
    used["solver"] = name
    options = dict(solver_options or {})
    value = given_damping(damping, convex)
    if value is not None:
        used["damping"] = value
    else:
        value = mean_eigenvalue_damping(sq_norms(), adapter.reg_hessian_diag())
        used["damping"] = value
        used["damping_rule"] = DAMPING_RULE
    used["curvature_rule"] = ("convex model: exact Hessian" if convex else
                              "non-convex model: Gauss-Newton curvature (PSD) + damping rule"
                              if not named else "non-convex model: solver as named")
    ctx = CurvatureContext(adapter, train, value, chunk_size, seed, store)
    if not convex and not named:
        try:
            return make_solver("ekfac", **options).fit(ctx)  # no fit report: nothing to say
        except (ValueError, TypeError) as exc:  # layers EK-FAC does not cover: the exact Gauss-Newton
            if adapter.n_params() > EXACT_GGN_MAX_PARAMS:
                raise InputError(f"no default curvature for this model: EK-FAC does not cover it ({exc}) and "
                                 f"it has more than {EXACT_GGN_MAX_PARAMS} parameters for the exact Gauss-Newton",
                                 hint="fewer-params",
                                 fix="analyse fewer parameters (params='last') or name a solver") from None
            name = "exact"
            used["solver"] = name
            options = {**options, "curvature": "ggn"}
            used["solver_options"] = options
    fitted = fit_solver_in(ctx, name, options)
    if not convex:
        warn_if_indefinite(fitted, ctx, name)
    return _report(fitted, used)


def _report(solver: Solver, used: dict[str, Any]) -> Solver:
    report = solver.fit_report()
    if report:  # what the fit decided (e.g. the exact solver's factorisation), saved with the scores
        used["solver_fit"] = report
    return solver


def warn_if_indefinite(solver: Solver, ctx: CurvatureContext, name: str) -> None:
    """Warn when the matrix the solver inverts has negative eigenvalues (a non-convex model)."""
    n_neg = getattr(solver, "n_negative_", None)
    if n_neg:
        warnings.warn(f"solver {name!r}: H + damping*I has {n_neg} negative eigenvalue(s) on this non-convex model; "
                      "influence through an indefinite Hessian is dominated by those directions. Use the default "
                      "(solver_options={'curvature': 'ggn'} with the damping rule), ekfac, or a larger damping",
                      RuntimeWarning, stacklevel=5)
        return
    if name not in ("cg", "lissa"):
        return
    lam = min_rayleigh(ctx)
    if lam < 0:
        warnings.warn(f"solver {name!r} assumes H + damping*I is positive definite, but it has a direction of "
                      f"negative curvature (Rayleigh quotient {lam:.3g}, damping={ctx.damping:g}) on this non-convex "
                      f"model: {name} does not compute the influence there. Raise damping above {-lam:.3g}, or use "
                      "solver='exact' with solver_options={'curvature': 'ggn'}, or 'ekfac'", RuntimeWarning, stacklevel=5)


def min_rayleigh(ctx: CurvatureContext, steps: int = 30, max_rows: int = 2048) -> float:
    """The smallest Ritz value of H + damping*I after `steps` Lanczos steps (full reorthogonalisation) over
    a seeded subsample of at most `max_rows` rows. Ritz values lie inside the spectrum, so a negative value
    means the matrix (on that subsample) is surely indefinite."""
    gen = torch.Generator().manual_seed(ctx.seed)
    index = torch.randperm(ctx.n, generator=gen)[:max_rows].to(ctx.device) if ctx.n > max_rows else None
    q = torch.randn(ctx.p, generator=gen, dtype=ctx.dtype).to(ctx.device)  # drawn on the CPU: the same on every device
    Q = [q / q.norm()]
    alphas, betas = [], []
    for j in range(min(steps, ctx.p)):
        w = ctx.hvp(Q[j], index) + ctx.damping * Q[j]
        alphas.append(float(Q[j] @ w))
        B = torch.stack(Q, 1)
        w = w - B @ (B.T @ w)
        w = w - B @ (B.T @ w)
        b = float(w.norm())
        if b < 1e-12 * max(1.0, abs(alphas[-1])):
            break
        betas.append(b)
        Q.append(w / b)
    k = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(betas[:k - 1], dtype=torch.float64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    return float(torch.linalg.eigvalsh(T).min())
