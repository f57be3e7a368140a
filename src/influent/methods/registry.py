"""The method registry and the `Job` every estimator receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..curvature import CurvatureContext, Solver, make_solver
from ..data import Split
from ..data.validate import InputError
from ..grads.source import GradientSource, Progress
from ..models.base import ModelAdapter
from ..models.training import Checkpoint
from ..targets import Target


@dataclass
class Job:
    """One scoring run: the fitted adapter, the training split, the target and every option.

    Methods read their options from `options` with `job.opt(name, default)`, so that every option a
    method used is recorded in `used` and saved with the scores.
    """

    adapter: ModelAdapter
    train: Split
    target: Target | None
    options: dict[str, Any]
    chunk_size: int = 512
    store: str | Path | None = None
    seed: int = 0
    progress: Progress | None = None
    used: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    def opt(self, name: str, default: Any = None) -> Any:
        value = self.options.get(name, default)
        self.used[name] = value
        return value

    def need_target(self, method: str) -> Target:
        if self.target is None:
            raise InputError(f"method {method!r} needs a target, e.g. target=influent.targets.Utility(valid)")
        return self.target

    def source(self, adapter: ModelAdapter | None = None, split: Split | None = None) -> GradientSource:
        """Per-sample gradients of `split` (default: train) under `adapter` (default: the fitted one).
        Only the fitted model's training gradients go to the on-disk store."""
        fitted = adapter is None and split is None
        return GradientSource(adapter or self.adapter, split or self.train, self.chunk_size,
                              self.store if fitted else None, self.opt("grad_method", "auto"),
                              self.progress if fitted else None)

    def solver(self) -> Solver:
        """The curvature solver named by the options `solver`, `damping`, `solver_options`."""
        name = self.opt("solver", "exact")
        damping = check_damping(self.opt("damping", 0.0))
        options = self.opt("solver_options", None) or {}
        if not isinstance(options, dict):
            raise InputError(f"solver_options must be a JSON object such as {{\"tol\": 1e-6}}, got {options!r}")
        ctx = CurvatureContext(self.adapter, self.train, damping, self.chunk_size, self.seed, self.store)
        try:
            solver = make_solver(name, **options)
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
        report = solver.fit_report()
        if report:  # what the fit decided (e.g. the exact solver's factorisation), saved with the scores
            self.used["solver_fit"] = report
        return solver

    def checkpoints(self, method: str) -> list[Checkpoint]:
        ckpts = self.options.get("checkpoints")
        if ckpts is None:
            ckpts = getattr(self.adapter, "recorder_", None)
        if ckpts is None:
            raise InputError(f"method {method!r} needs training checkpoints: fit with "
                             "recorder=influent.models.TrainingRecorder() or pass checkpoints=...")
        ckpts = list(getattr(ckpts, "checkpoints", ckpts))
        if not ckpts:
            raise InputError(f"method {method!r}: the recorder holds no checkpoints")
        names = self.adapter.param_names()
        if list(ckpts[0].params) != names:
            raise InputError(f"method {method!r}: checkpoints hold parameters {list(ckpts[0].params)[:4]}, "
                             f"the model analyses {names[:4]}")
        self.used["n_checkpoints"] = len(ckpts)
        return ckpts


def check_damping(value: Any) -> float:
    """`damping` as a finite float >= 0, or a one-line `InputError`."""
    try:
        damping = float(value)
    except (TypeError, ValueError):
        raise InputError(f"damping must be a number >= 0, got {value!r}") from None
    if not np.isfinite(damping) or damping < 0:
        raise InputError(f"damping must be >= 0 and finite, got {value!r}")
    return damping


@dataclass
class Result:
    """What a method returns: values (higher = more valuable) and its raw statistic."""

    values: np.ndarray
    raw: np.ndarray | None = None


ScoreFn = Callable[[Job], Result]
PairFn = Callable[[Job, Split], np.ndarray]


@dataclass
class MethodSpec:
    name: str
    score: ScoreFn
    pairwise: PairFn | None = None
    needs_target: bool = True
    summary: str = ""


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, needs_target: bool = True, summary: str = "") -> Callable[[ScoreFn], ScoreFn]:
    def deco(fn: ScoreFn) -> ScoreFn:
        METHODS[name] = MethodSpec(name, fn, None, needs_target, summary or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


def register_pairwise(name: str) -> Callable[[PairFn], PairFn]:
    def deco(fn: PairFn) -> PairFn:
        METHODS[name].pairwise = fn
        return fn

    return deco


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64)
