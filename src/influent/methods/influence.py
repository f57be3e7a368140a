"""Classical influence functions with any curvature solver, and self-influence."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..backends.planner import HESSIAN_COPIES
from ..curvature.policy import solver_name
from ..data import Split
from ..models.base import ModelAdapter
from .options import GradOptions, ProjectionOptions, SolverOptions
from .registry import Job, Result, register_method, register_pairwise, to_numpy


@dataclass
class InfluenceOptions(GradOptions, SolverOptions):
    """Options of self-influence and the influence value ("self-if", "iv"): the curvature solver (Koh &
    Liang, 2017, Sec. 2: the exact Hessian of a convex model) and the gradient path."""


@dataclass
class IFOptions(ProjectionOptions, SolverOptions):
    """Options of the influence function "if": those of `InfluenceOptions` and a random projection (then
    the projected Hessian P H P^T + damping I is inverted exactly and `solver` is not used)."""


CURVATURE_ON_DRIVER = "LiSSA's minibatch Hessian-vector products (other solvers sum over the shards)"


def curvature_memory(view: ModelAdapter, options: dict, n: int, dim: int, item: int) -> dict[str, int]:
    """Planner terms of the influence-function family: the exact solver's (dim, dim) matrix and its copies."""
    if options.get("projection") is None and solver_name(view, options.get("solver")) != "exact":
        return {}
    return {"exact solver (p x p)": HESSIAN_COPIES * dim**2 * item}


@register_method("if", title="influence function", options=IFOptions, on_driver=CURVATURE_ON_DRIVER,
                 memory=curvature_memory)
def influence(job: Job) -> Result:
    """Influence function: effect_i = (1/n) grad f^T (H + damping I)^-1 g_i; values = effect."""
    target = job.need_target("if")
    if getattr(job.options, "projection", None) is not None:  # "iv" takes none
        from .projected import projected_influence
        return projected_influence(job, target)
    t0 = time.perf_counter()
    solver = job.solver()
    t1 = time.perf_counter()
    u = solver.solve(target.grad(job.adapter))
    effect = job.source().dot(u) / len(job.train)
    job.timing.update(curvature=t1 - t0, scoring=time.perf_counter() - t1)
    v = to_numpy(effect)
    return Result(v, v)


@register_pairwise("if")
def influence_pairwise(job: Job, test: Split) -> np.ndarray:
    """(n_train, n_test): (1/n) g_test_j^T (H + damping I)^-1 g_i, the rise of test loss j if i is removed."""
    if getattr(job.options, "projection", None) is not None:
        from .projected import projected_influence_pairwise
        return projected_influence_pairwise(job, test)
    solver = job.solver()
    fast = getattr(solver, "pairwise", None)  # a solver may form the products without the (p, m) solve
    out = fast(job.source(), job.source(split=test)) if fast is not None else None
    if out is not None:
        return to_numpy(out / len(job.train))
    U = solver.solve(job.source(split=test).matrix().T)  # (p, m)
    return to_numpy(job.source().dot(U) / len(job.train))


@register_method("self-if", needs_target=False, title="self-influence", options=InfluenceOptions,
                 on_driver=CURVATURE_ON_DRIVER, memory=curvature_memory)
def self_influence(job: Job) -> Result:
    """Self-influence g_i^T (H + damping I)^-1 g_i with any solver; values = -raw (high = suspicious)."""
    t0 = time.perf_counter()
    solver = job.solver()
    t1 = time.perf_counter()
    raw = job.source().map_rows(solver.quad)
    job.timing.update(curvature=t1 - t0, scoring=time.perf_counter() - t1)
    r = to_numpy(raw)
    return Result(-r, r)
