"""The method registry and the `Job` every estimator receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..curvature import CurvatureContext, Solver, make_solver
from ..data import Split
from ..data.registry import Registry, first_sentence
from ..data.validate import InputError, check_damping
from ..grads.source import GradientSource, Progress
from ..models.base import ModelAdapter
from ..models.training import Checkpoint
from ..targets import Target
from .options import MethodOptions


@dataclass
class Job:
    """One scoring run: the fitted adapter, the training split, the target and the method's options.

    `options` is the method's options dataclass (`methods.options`), built by `influent.score`; methods read
    `job.options.<field>`. `used` holds the facts the run decided (the solver and damping a default chose,
    the solver's fit report, n_checkpoints, ...); the saved settings are the options updated with them.
    """

    adapter: ModelAdapter
    train: Split
    target: Target | None
    options: MethodOptions
    chunk_size: int = 512
    store: str | Path | None = None
    seed: int = 0
    progress: Progress | None = None
    used: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """The settings saved with the scores: every option (`MethodOptions.settings`) and the run's facts."""
        return {**self.options.settings(), **{k: v for k, v in self.used.items() if k != "checkpoints"}}

    def need_target(self, method: str) -> Target:
        if self.target is None:
            raise InputError(f"method {method!r} needs a target, e.g. target=influent.targets.Utility(valid)")
        return self.target

    def source(self, adapter: ModelAdapter | None = None, split: Split | None = None) -> GradientSource:
        """Per-sample gradients of `split` (default: train) under `adapter` (default: the fitted one).
        Only the fitted model's training gradients go to the on-disk store."""
        fitted = adapter is None and split is None
        return GradientSource(adapter or self.adapter, split or self.train, self.chunk_size,
                              self.store if fitted else None, getattr(self.options, "grad_method", "auto"),
                              self.progress if fitted else None, getattr(self.options, "projection", None))

    def solver(self) -> Solver:
        """The curvature solver named by the options `solver`, `damping`, `solver_options` (`SolverOptions`).

        Defaults per model kind (each choice is recorded in the settings saved with the scores):

        - convex models (`ModelAdapter.is_convex`: a linear model, or only the last linear layer
          analysed): the exact Hessian, damping 0 -- the influence function of Koh & Liang (2017), Sec. 2;
        - non-convex models: a positive semi-definite curvature, the generalised Gauss-Newton matrix
          approximated by EK-FAC (George et al., 2018), or exactly when EK-FAC does not cover the analysed
          layers (at most `EXACT_GGN_MAX_PARAMS` parameters), and a damping rule: `DAMPING_FACTOR` (1.0) times
          the mean eigenvalue of the curvature, estimated as the trace of the empirical Fisher plus the
          regulariser divided by p. kronfluence (Grosse et al., 2023) uses 0.1 times it; the factor 1.0 was
          chosen by the linear datamodeling score against retrained models on held-back problems (MLPs on
          scikit-learn's digits and breast cancer, `benchmarks/lds_networks.py --select-if`,
          docs/evaluation.md), where it beats 0.1 with one model and with five. The Hessian of a
          non-convex network is indefinite at a trained model, and its influence values are dominated by
          the negative directions (Basu, Pope & Feizi, 2021).

        A solver the user names is used as named; a warning says when the curvature it inverts is
        indefinite on a non-convex model.
        """
        o = self.options
        convex = self.adapter.is_convex()
        named = o.solver is not None
        name = o.solver if named else "exact" if convex else "ekfac"
        self.used["solver"] = name
        options = dict(o.solver_options or {})
        if o.damping is not None or convex:
            damping = check_damping(0.0 if o.damping is None else o.damping)
            self.used["damping"] = damping
        else:
            damping = self._damping_rule()
        self.used["curvature_rule"] = ("convex model: exact Hessian" if convex else
                                       "non-convex model: Gauss-Newton curvature (PSD) + damping rule"
                                       if not named else "non-convex model: solver as named")
        ctx = CurvatureContext(self.adapter, self.train, damping, self.chunk_size, self.seed, self.store)
        if not convex and not named:
            try:
                return make_solver("ekfac", **options).fit(ctx)
            except (ValueError, TypeError) as exc:  # layers EK-FAC does not cover: the exact Gauss-Newton
                if self.adapter.n_params() > EXACT_GGN_MAX_PARAMS:
                    raise InputError(f"no default curvature for this model: EK-FAC does not cover it ({exc}) and "
                                     f"it has more than {EXACT_GGN_MAX_PARAMS} parameters for the exact Gauss-Newton",
                                     hint="fewer-params",
                                     fix="analyse fewer parameters (params='last') or name a solver") from None
                name = "exact"
                self.used["solver"] = name
                options = {**options, "curvature": "ggn"}
                self.used["solver_options"] = options
        solver = fit_solver_in(ctx, name, options)
        if not convex:
            _warn_if_indefinite(solver, ctx, name)
        report = solver.fit_report()
        if report:  # what the fit decided (e.g. the exact solver's factorisation), saved with the scores
            self.used["solver_fit"] = report
        return solver

    def _damping_rule(self) -> float:
        """DAMPING_FACTOR * mean eigenvalue of the curvature ~ DAMPING_FACTOR * (mean_i |g_i|^2 + sum(reg diag)) / p."""
        sq = self.source().sq_norms()
        reg = self.adapter.reg_hessian_diag()
        mean_eig = (float(sq.mean()) + float(reg.sum())) / max(1, reg.numel())
        damping = DAMPING_FACTOR * mean_eig
        self.used["damping"] = damping
        self.used["damping_rule"] = (f"{DAMPING_FACTOR:g} * mean eigenvalue (trace of the empirical Fisher + "
                                     "regulariser) / p")
        return damping

    def checkpoints(self, method: str) -> list[Checkpoint]:
        ckpts = getattr(self.options, "checkpoints", None)
        if ckpts is None:
            ckpts = getattr(self.adapter, "recorder_", None)
        if ckpts is None:
            raise InputError(f"method {method!r} needs training checkpoints", hint="checkpoints",
                             fix="fit with recorder=influent.models.TrainingRecorder() or pass checkpoints=...")
        ckpts = list(getattr(ckpts, "checkpoints", ckpts))
        if not ckpts:
            raise InputError(f"method {method!r}: the recorder holds no checkpoints")
        names = self.adapter.param_names()
        if list(ckpts[0].params) != names:
            raise InputError(f"method {method!r}: checkpoints hold parameters {list(ckpts[0].params)[:4]}, "
                             f"the model analyses {names[:4]}")
        self.used["n_checkpoints"] = len(ckpts)
        return ckpts


EXACT_GGN_MAX_PARAMS = 4000  # the exact Gauss-Newton fallback of a non-convex model's default curvature
DAMPING_FACTOR = 1.0  # the damping rule's multiple of the curvature's mean eigenvalue (kronfluence: 0.1); see Job.solver


def fit_solver_in(ctx: CurvatureContext, name: str, options: dict[str, Any] | None = None) -> Solver:
    """The solver `name` with `options`, fitted in `ctx`; a bad name, option or fit is a one-line `InputError`.
    The one way a solver is built: `Job.solver` and `fit_solver` (FI, the active-learning strategies) call it."""
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
    model-dependent defaults of `Job.solver` (for FI and the active-learning strategies)."""
    ctx = CurvatureContext(adapter, train, check_damping(damping), chunk_size, seed, store)
    return fit_solver_in(ctx, name, options)


def _warn_if_indefinite(solver: Solver, ctx: CurvatureContext, name: str) -> None:
    """Warn when the matrix the solver inverts has negative eigenvalues (a non-convex model)."""
    import warnings

    n_neg = getattr(solver, "n_negative_", None)
    if n_neg:
        warnings.warn(f"solver {name!r}: H + damping*I has {n_neg} negative eigenvalue(s) on this non-convex model; "
                      "influence through an indefinite Hessian is dominated by those directions. Use the default "
                      "(solver_options={'curvature': 'ggn'} with the damping rule), ekfac, or a larger damping",
                      RuntimeWarning, stacklevel=4)
        return
    if name not in ("cg", "lissa"):
        return
    lam = _min_rayleigh(ctx)
    if lam < 0:
        warnings.warn(f"solver {name!r} assumes H + damping*I is positive definite, but it has a direction of "
                      f"negative curvature (Rayleigh quotient {lam:.3g}, damping={ctx.damping:g}) on this non-convex "
                      f"model: {name} does not compute the influence there. Raise damping above {-lam:.3g}, or use "
                      "solver='exact' with solver_options={'curvature': 'ggn'}, or 'ekfac'", RuntimeWarning, stacklevel=4)


def _min_rayleigh(ctx: CurvatureContext, steps: int = 30, max_rows: int = 2048) -> float:
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


def reads_checkpoints(method: str, options: dict[str, Any]) -> bool:
    """Whether `method` with `options` reads recorded training checkpoints, as its registry entry says:
    ``checkpoints="always"`` (TracIn, Diff-In), ``"option"`` (Self-TracIn with ``over="checkpoints"``: by
    default it reads the final model, as [IP] does) or ``"never"`` (also for a name not registered)."""
    spec = METHODS.get(method)
    how = spec.checkpoints if spec is not None else "never"
    return how == "always" or (how == "option" and options.get("over") == "checkpoints")


@dataclass
class Result:
    """What a method returns: values (higher = more valuable) and its raw statistic."""

    values: np.ndarray
    raw: np.ndarray | None = None


ScoreFn = Callable[[Job], Result]
PairFn = Callable[[Job, Split], np.ndarray]


@dataclass
class MethodSpec:
    """A registered method: its name, score function, optional pairwise form and what it needs."""

    name: str
    score: ScoreFn
    pairwise: PairFn | None = None
    needs_target: bool = True
    summary: str = ""
    title: str = ""  # the name a person reads (report, CLI), e.g. "influence function"
    options: type = MethodOptions  # the dataclass of the method's options (`methods.options`)
    checkpoints: str = "never"  # reads recorded checkpoints: "never" | "always" | "option" (an option says)
    verdict: str = ""  # what a low value means, in the report's words: see `says`
    local_only: str = ""  # why the method cannot run on a distributed backend ("" = it distributes)
    on_driver: str = ""  # the part of a distributed run that stays on the driver (said in the run's settings)

    def check_backend(self, backend: str) -> None:
        """A one-line `InputError` when the method cannot run on `backend` (its `local_only` reason)."""
        if backend != "local" and self.local_only:
            raise InputError(f"method {self.name!r} cannot run on backend {backend!r}: {self.local_only}; "
                             "use backend='local'")

    @property
    def says(self) -> str:
        """What the report may call a low-valued sample: "harmful" only for a method whose value is a signed
        effect on a target (`needs_target`); "mislabelled" for a method declared a wrong-label detector
        (``verdict="mislabelled"``); "unusual" otherwise."""
        return self.verdict or ("harmful" if self.needs_target else "unusual")


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(name: str, needs_target: bool = True, summary: str = "", *, title: str = "",
                    options: type = MethodOptions, checkpoints: str = "never",
                    verdict: str = "", local_only: str = "", on_driver: str = "") -> Callable[[ScoreFn], ScoreFn]:
    """Register a score function. verdict : "" (the default reading, `MethodSpec.says`) or "mislabelled" for a
    wrong-label detector (the report then gives the estimated number of wrong labels). local_only : why the
    method's per-sample work cannot run as shard kernels or refit tasks on a distributed backend (it then
    refuses one); on_driver : what a distributed run of it still computes on the driver."""
    if verdict not in ("", "mislabelled", "unusual"):
        raise ValueError(f"register_method({name!r}): verdict must be '', 'mislabelled' or 'unusual'")

    def deco(fn: ScoreFn) -> ScoreFn:
        METHODS.add(MethodSpec(name, fn, None, needs_target, summary or first_sentence(fn.__doc__),
                               title or name, options, checkpoints, verdict, local_only, on_driver))
        return fn

    return deco


def register_pairwise(name: str) -> Callable[[PairFn], PairFn]:
    def deco(fn: PairFn) -> PairFn:
        METHODS[name].pairwise = fn
        return fn

    return deco


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64)
