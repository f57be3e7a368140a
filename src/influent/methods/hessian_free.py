"""Hessian-free estimators of [IP]: inner product (IP), TracIn and Self-TracIn."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import Split
from ..data.validate import InputError
from .options import CheckpointOptions, ProjectionOptions, opt
from .registry import Job, Result, register_method, register_pairwise, to_numpy


@dataclass
class TracInOptions(ProjectionOptions, CheckpointOptions):
    """Options of TracIn ([IP]): the recorded checkpoints and the gradient path."""


@dataclass
class SelfTracInOptions(TracInOptions):
    """Options of Self-TracIn: the final model ([IP]) or the sum over recorded checkpoints."""

    over: str = opt("final", "'final': |g_z|^2 at the fitted model ([IP]: only the converged parameters); "
                             "'checkpoints': sum_c eta_c |g_z(theta_c)|^2 over the recorded checkpoints")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.over not in ("final", "checkpoints"):
            raise InputError(f"self-tracin: over must be 'final' or 'checkpoints', got {self.over!r}")
        if self.over == "final" and self.checkpoints is not None:
            raise InputError("self-tracin: checkpoints= is used only with over='checkpoints'")


@register_method("ip", title="gradient inner product", options=ProjectionOptions)
def inner_product(job: Job) -> Result:
    """IP: raw = g_z . grad f at the final model (for utility, the mean validation-loss gradient); values = raw."""
    target = job.need_target("ip")
    v = to_numpy(job.source().dot(target.grad(job.adapter)))
    return Result(v, v)


@register_pairwise("ip")
def inner_product_pairwise(job: Job, test: Split) -> np.ndarray:
    """(n_train, n_test) gradient inner products g_i . g_test_j (factorised for linear layers)."""
    return to_numpy(job.source().gram(job.source(split=test)))


@register_method("tracin", title="TracIn", options=TracInOptions, checkpoints="always")
def tracin(job: Job) -> Result:
    """TracIn: raw = sum_c eta_c g_z(theta_c) . grad f(theta_c) over recorded checkpoints; values = raw."""
    target = job.need_target("tracin")
    terms = []
    for ck in job.checkpoints("tracin"):
        at = job.adapter.with_params(ck.params)
        terms.append((at, target.grad(at), ck.lr))
    v = to_numpy(job.weighted_sum(terms))
    return Result(v, v)


@register_pairwise("tracin")
def tracin_pairwise(job: Job, test: Split) -> np.ndarray:
    """(n_train, n_test) sum_c eta_c g_i(theta_c) . g_test_j(theta_c)."""
    total = None
    for ck in job.checkpoints("tracin"):
        at = job.adapter.with_params(ck.params)
        G = ck.lr * job.source(at, job.train).gram(job.source(at, test))
        total = G if total is None else total + G
    return to_numpy(total)


@register_method("self-tracin", needs_target=False, title="self-TracIn", options=SelfTracInOptions,
                 checkpoints="option")
def self_tracin(job: Job) -> Result:
    """Self-TracIn: raw = |g_z(theta_hat)|^2 at the final model by default ([IP]: only the last
    checkpoint, the converged parameters, is used; no recorder needed); values = -raw (high
    self-influence = suspicious).

    With ``over="checkpoints"``: raw = sum_c eta_c |g_z(theta_c)|^2 over the recorded checkpoints, the sum of
    the original TracIn. Options: `SelfTracInOptions` (``influent methods self-tracin``).
    """
    if job.options.over == "final":
        r = to_numpy(job.source().sq_norms())
        return Result(-r, r)
    terms = [(job.adapter.with_params(ck.params), None, ck.lr) for ck in job.checkpoints("self-tracin")]
    r = to_numpy(job.weighted_sum(terms))
    return Result(-r, r)
