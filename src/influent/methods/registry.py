"""The method registry and the `Job` every estimator receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..curvature import Solver
from ..curvature.policy import default_solver, fit_solver, fit_solver_in  # noqa: F401 (fit_solver*: re-exported)
from ..data import Split
from ..data.registry import Registry, first_sentence
from ..data.validate import InputError
from ..grads.source import GradientSource, Progress, weighted_sum
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

    def weighted_sum(self, terms: list[tuple[ModelAdapter, torch.Tensor | None, float]]) -> torch.Tensor:
        """(n,) sum_k w_k g_i(adapter_k) . V_k over the training split (V_k None: |g_i(adapter_k)|^2), with this
        job's gradient path and projection (`grads.source.weighted_sum`: one shard kernel when distributed)."""
        return weighted_sum(self.train, terms, self.chunk_size, getattr(self.options, "grad_method", "auto"),
                            getattr(self.options, "projection", None))

    def solver(self) -> Solver:
        """The curvature solver named by the options `solver`, `damping`, `solver_options` (`SolverOptions`),
        with the model-dependent defaults of `curvature.policy.default_solver` (exact Hessian on a convex
        model, Gauss-Newton curvature with the damping rule on a non-convex one); each choice is recorded
        in `used` and saved with the scores."""
        o = self.options
        return default_solver(self.adapter, self.train, o.solver, o.damping, o.solver_options,
                              chunk_size=self.chunk_size, seed=self.seed, store=self.store,
                              sq_norms=lambda: self.source().sq_norms(), used=self.used)

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
    view: Callable[[ModelAdapter, dict], ModelAdapter] | None = None  # the analysed view of the model (planner)
    memory: Callable[[ModelAdapter, dict, int, int, int], dict[str, int]] | None = None  # planner terms
    probabilities: Callable[[Any, Split, Any], np.ndarray | None] | None = None  # (n, K) for relabel (`actions`)
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


class M:
    """The name of every registered method, one constant each. Code outside a method's own module and this
    registry names a method as ``M.IF``, never as a string (`tests/test_imports.py` checks it, and that these
    constants are exactly `METHODS`'s names); users still pass the strings (``method="if"``)."""

    DIFFIN = "diffin"
    FI = "fi"
    FI_PAIRED = "fi-paired"
    GEX = "gex"
    IF = "if"
    IP = "ip"
    IP_ENSEMBLE = "ip-ensemble"
    IV = "iv"
    LABEL_QUALITY = "label-quality"
    LOO = "loo"
    MISLABEL = "mislabel"
    OUTLIER = "outlier"
    RANDOM = "random"
    SELF_DIFFIN = "self-diffin"
    SELF_GEX = "self-gex"
    SELF_IF = "self-if"
    SELF_TRACIN = "self-tracin"
    TMC_SHAPLEY = "tmc-shapley"
    TRACIN = "tracin"
    UNROLLED = "unrolled"


# The methods that play a role by default, declared once: `influent.score`, `influent.plan`, ``influent score
# --method`` and a run's config score with DEFAULT_METHOD (the influence function of [IF]); `attribute`,
# `attribute_stream`, `topk_rows` and a run's ``--topk`` (when its method has no pairwise form) attribute with
# DEFAULT_ATTRIBUTION (the gradient inner product); ``influent demo`` shows DEFAULT_DETECTOR (the wrong-label
# detector).
DEFAULT_METHOD = M.IF
DEFAULT_ATTRIBUTION = M.IP
DEFAULT_DETECTOR = M.MISLABEL


def register_method(name: str, needs_target: bool = True, summary: str = "", *, title: str = "",
                    options: type = MethodOptions, checkpoints: str = "never",
                    verdict: str = "", local_only: str = "", on_driver: str = "",
                    view: Callable[[ModelAdapter, dict], ModelAdapter] | None = None,
                    memory: Callable[[ModelAdapter, dict, int, int, int], dict[str, int]] | None = None,
                    probabilities: Callable[[Any, Split, Any], np.ndarray | None] | None = None
                    ) -> Callable[[ScoreFn], ScoreFn]:
    """Register a score function. verdict : "" (the default reading, `MethodSpec.says`) or "mislabelled" for a
    wrong-label detector (the report then gives the estimated number of wrong labels). local_only : why the
    method's per-sample work cannot run as shard kernels or refit tasks on a distributed backend (it then
    refuses one); on_driver : what a distributed run of it still computes on the driver. view(model, options) :
    the view of the model the method analyses, memory(view, options, n, dim, item) : the method's own memory
    terms in bytes beyond one gradient chunk (`api.plan`, `backends.planner.estimate`). probabilities(model,
    train, scores) : the (n, K) class probabilities a relabelling of its scores should choose new labels from
    (`actions.edit.relabel`), or None for the model's own."""
    if verdict not in ("", "mislabelled", "unusual"):
        raise ValueError(f"register_method({name!r}): verdict must be '', 'mislabelled' or 'unusual'")

    def deco(fn: ScoreFn) -> ScoreFn:
        METHODS.add(MethodSpec(name, fn, None, needs_target, summary or first_sentence(fn.__doc__),
                               title or name, options, checkpoints, verdict, local_only, view, memory,
                               probabilities, on_driver))
        return fn

    return deco


def register_pairwise(name: str) -> Callable[[PairFn], PairFn]:
    def deco(fn: PairFn) -> PairFn:
        METHODS[name].pairwise = fn
        return fn

    return deco


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64)
