"""Ensemble estimators of [IP] without retraining: IP Ensemble and GEX (geometric ensemble).

IP Ensemble sums the inner product g_z . grad f over M members built from the fitted model. Member 0
is the model itself. By default ([IP] experiments: "dropout applied on model parameters",
rate 0.01, ensemble size 5), for every model, members 1..M-1 each zero a fixed random 1% of the analysed
parameters with inverted scaling. Variants (option `mode`): a fixed dropout mask on activations (at the
model's dropout layers or given modules) and Gaussian noise on the analysed parameters.

GEX takes its members from short SGD runs started at the fitted parameters and compares losses only
(forward passes): raw(z) = mean_m (l(z, theta_m) - l(z, theta_hat)) * (f(theta_m) - f(theta_hat)).
Its self version uses the squared loss deviation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..data import Split
from ..data.validate import InputError, check_choice, check_number
from ..grads.source import GradientSource, member_losses
from ..models.base import ModelAdapter, Params
from .options import GradOptions, MethodOptions, opt
from .registry import Job, Result, register_method, register_pairwise, to_numpy

# --------------------------------------------------------------------------------------------
# IP Ensemble
# --------------------------------------------------------------------------------------------


class _MaskHook:
    """Forward hook multiplying a module's output by a fixed mask (inverted dropout scaling)."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def __call__(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output * self.mask


def dropout_points(adapter: ModelAdapter, given: Sequence[str] | None = None) -> list[str]:
    """Module names where members apply their dropout mask: `given` names, else the model's
    `nn.Dropout*` layers (possibly none)."""
    modules = dict(adapter._require_fitted().named_modules())
    if given is None and hasattr(adapter, "ensemble_dropout_points"):  # the adapter's own choice (HFAdapter)
        given = adapter.ensemble_dropout_points()
    if given is not None:
        names = [given] if isinstance(given, str) else list(given)
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise InputError(f"dropout_points {unknown} name no module; available: {list(modules)[1:9]}")
        return names
    return [n for n, m in modules.items() if isinstance(m, nn.modules.dropout._DropoutNd)]


def _activation_shapes(adapter: ModelAdapter, split: Split, points: list[str]) -> dict[str, tuple[int, ...]]:
    """Per-sample output shape of each dropout point (one forward pass on one sample)."""
    module = adapter._require_fitted()
    modules = dict(module.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [modules[n].register_forward_hook(
        lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:]))) for n in points]
    try:
        with torch.no_grad():
            module.eval()
            module(split.tensor_X(adapter.dtype)[:1].to(adapter.device))
    finally:
        for h in handles:
            h.remove()
    return shapes


def masked_member(adapter: ModelAdapter, masks: dict[str, torch.Tensor]) -> ModelAdapter:
    """A copy of `adapter` whose module multiplies the output of each named module by its mask
    (shape: the per-sample activation shape; broadcast over the batch)."""
    other = copy.copy(adapter)
    other.module = copy.deepcopy(adapter._require_fitted())
    modules = dict(other.module.named_modules())
    for name, mask in masks.items():
        modules[name].register_forward_hook(_MaskHook(mask))
    return other


MODES = ("param-dropout", "dropout", "noise", "auto")


def ensemble_members(adapter: ModelAdapter, split: Split, members: int = 5, mode: str = "param-dropout",
                     rate: float | Sequence[float] = 0.01, noise: float = 0.01,
                     points: Sequence[str] | None = None, seed: int = 0) -> tuple[list[ModelAdapter], str]:
    """The M members of IP Ensemble; member 0 is `adapter` itself.

    Parameters
    ----------
    members : M >= 1
    mode : "param-dropout" (default, [IP] experiments: dropout on the analysed parameters), "dropout" (fixed
        masks on activations), "noise" (Gaussian parameter noise) or "auto" (activation dropout where the
        model has dropout layers or `points` are given, noise otherwise)
    rate : dropout rate (0.01), a float, or a pair (lo, hi) to draw each member's rate from U(lo, hi)
    noise : standard deviation of the parameter noise N(0, noise^2) on the analysed parameters
    points : module names whose outputs are masked (default: the model's dropout layers)
    seed : seed of the member draws (torch.Generator)

    Returns
    -------
    (list of M adapters, the mode used). Each member first draws its rate r (``lo + (hi - lo) * U``, one
    float64 draw, also for a fixed rate). A parameter-dropout member then draws, for each analysed
    parameter in `adapter.params()` order, keep ~ Bernoulli(1 - r) of the parameter's shape
    (``rand >= r``) and carries theta * keep / (1 - r). An activation-dropout member draws one mask per
    point, of the per-sample activation shape, shared by all samples: mask = keep / (1 - r). Noise members
    draw, for each analysed parameter in order, theta + noise * N(0, 1).
    """
    if int(members) < 1:
        raise InputError(f"members must be >= 1, got {members}")
    if mode not in MODES:
        raise InputError(f"mode must be one of {list(MODES)}, got {mode!r}")
    pts = dropout_points(adapter, points) if mode in ("dropout", "auto") else []
    if mode == "dropout" and not pts:
        raise InputError("mode='dropout' but the model has no dropout layers; pass dropout_points=[module names]")
    used = mode if mode in ("param-dropout", "noise") else "dropout" if pts else "noise"
    gen = torch.Generator().manual_seed(int(seed))
    device = adapter.device
    out: list[ModelAdapter] = [adapter]
    if used in ("dropout", "param-dropout"):
        lo, hi = (float(rate), float(rate)) if np.isscalar(rate) else (float(rate[0]), float(rate[1]))
        if not (0 <= lo <= hi < 1):
            raise InputError(f"rate must lie in [0, 1), got {rate}")
        shapes = _activation_shapes(adapter, split, pts) if used == "dropout" else {}
        theta = adapter.params()
        for _ in range(1, int(members)):
            r = lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))
            # drawn on the CPU (the same draws on every device), then moved to the model's device
            keep = lambda shape: (torch.rand(shape, generator=gen, dtype=torch.float64) >= r).to(device)  # noqa: E731
            if used == "dropout":
                out.append(masked_member(adapter, {n: keep(shapes[n]).to(adapter.dtype) / (1 - r) for n in pts}))
            else:
                out.append(adapter.with_params({n: p * keep(p.shape).to(p.dtype) / (1 - r) for n, p in theta.items()}))
    else:
        if not noise >= 0:
            raise InputError(f"noise must be >= 0, got {noise}")
        theta = adapter.params()
        for _ in range(1, int(members)):
            noisy = {n: p + float(noise) * torch.randn(p.shape, generator=gen, dtype=torch.float64)
                     .to(p.device, p.dtype) for n, p in theta.items()}  # drawn on the CPU
            out.append(adapter.with_params(noisy))
    return out, used


@dataclass
class EnsembleOptions(GradOptions):
    """Options of IP Ensemble ([IP]; `ensemble_members` gives the draw order)."""

    members: int = opt(5, "ensemble size M (member 0 is the fitted model; 1 = IP)")
    mode: str = opt("param-dropout", "'param-dropout' ([IP]: a fixed random fraction `rate` of the analysed "
                                     "parameters zeroed) | 'dropout' (masks on activations) | 'noise' | 'auto'")
    rate: Any = opt(0.01, "dropout rate, or a pair (lo, hi): each member's rate drawn from U(lo, hi)")
    noise: float = opt(0.01, "standard deviation of the parameter noise of mode 'noise'")
    dropout_points: Any = opt(None, "module names whose outputs mode 'dropout' masks; None: the dropout layers")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.members = check_number(self.members, "members", kind=int, low=1)
        check_choice(self.mode, MODES, "mode")
        self.noise = check_number(self.noise, "noise", low=0)
        pair = not np.isscalar(self.rate)
        if pair and (isinstance(self.rate, str) or len(self.rate) != 2):
            raise InputError(f"rate must be a number in [0, 1) or a pair (lo, hi), got {self.rate!r}")
        ends = self.rate if pair else (self.rate, self.rate)
        lo, hi = (check_number(r, "rate", low=0, high=1, high_open=True) for r in ends)
        if lo > hi:
            raise InputError(f"rate (lo, hi) must have lo <= hi, got {self.rate!r}")
        pts = self.dropout_points
        if pts is not None and not isinstance(pts, str) and \
                not (isinstance(pts, (list, tuple)) and all(isinstance(p, str) for p in pts)):
            raise InputError(f"dropout_points must be None, a module name or a list of module names, got {pts!r}")


def _members(job: Job, split: Split) -> list[ModelAdapter]:
    members, used = ensemble_members(
        job.adapter, split, int(job.options.members), job.options.mode,
        job.options.rate, float(job.options.noise), job.options.dropout_points, job.seed)
    job.used["member_mode"] = used
    return members


def _source(job: Job, member: ModelAdapter, split: Split) -> GradientSource:
    # factorised products read a linear layer's output before any mask hook on that same layer would
    # apply, so a member masking a parameterised module takes the vmap path
    method = job.options.grad_method
    masked_owner = any(isinstance(h, _MaskHook) and any(True for _ in m.parameters(recurse=False))
                       for m in member.module.modules() for h in m._forward_hooks.values())
    if masked_owner and method in ("auto", "factorised"):
        method = "vmap"
    return GradientSource(member, split, job.chunk_size, None, method)


@register_method("ip-ensemble", title="inner product ensemble", options=EnsembleOptions)
def ip_ensemble(job: Job) -> Result:
    """IP Ensemble ([IP]): raw = sum over M members of g_z(member) . grad f(member); values = raw.

    By default each member zeroes a fixed random 1% of the analysed parameters with inverted scaling, as in
    [IP]'s experiments. Member 0 is the fitted model, so members=1 is IP. See `ensemble_members` for the
    draw order. Options: `EnsembleOptions` (``influent methods ip-ensemble``).
    """
    target = job.need_target("ip-ensemble")
    total = torch.zeros(len(job.train), dtype=job.adapter.dtype, device=job.adapter.device)
    for k, member in enumerate(_members(job, job.train)):
        src = job.source() if k == 0 else _source(job, member, job.train)
        total += src.dot(target.grad(member))
    v = to_numpy(total)
    return Result(v, v)


@register_pairwise("ip-ensemble")
def ip_ensemble_pairwise(job: Job, test: Split) -> np.ndarray:
    """(n_train, n_test) sum over members of g_i(member) . g_test_j(member)."""
    total = None
    for k, member in enumerate(_members(job, job.train)):
        a = job.source() if k == 0 else _source(job, member, job.train)
        b = job.source(split=test) if k == 0 else _source(job, member, test)
        G = a.gram(b)
        total = G if total is None else total + G
    return to_numpy(total)


# --------------------------------------------------------------------------------------------
# GEX
# --------------------------------------------------------------------------------------------


def gex_members(adapter: ModelAdapter, train: Split, members: int = 8, steps: int = 10, lr: float = 0.01,
                batch_size: int = 32, sampling: str = "independent", seed: int = 0) -> list[Params]:
    """Member parameters for GEX from minibatch SGD started at the fitted parameters.

    The objective is the training objective, mean minibatch loss + regulariser, over the analysed
    parameters (the others stay fixed).

    Parameters
    ----------
    members : M >= 1
    steps : SGD steps per member
    lr : SGD learning rate (no momentum)
    batch_size : minibatch size (capped at n)
    sampling : "independent" — member m is the end of its own run of `steps` steps from theta_hat;
        "trajectory" — member m is the state after (m + 1) * `steps` steps of one run
    seed : seed of the minibatch draws; batch b of a run is `randperm(n)[:batch_size]` from one
        torch.Generator seeded with `seed`, drawn in order of the runs and steps

    Returns
    -------
    list of M parameter dicts (detached)
    """
    if int(members) < 1 or int(steps) < 1:
        raise InputError(f"members and steps must be >= 1, got {members} and {steps}")
    if sampling not in ("independent", "trajectory"):
        raise InputError(f"sampling must be 'independent' or 'trajectory', got {sampling!r}")
    if not lr > 0:
        raise InputError(f"lr must be positive, got {lr}")
    n = len(train)
    bs = min(int(batch_size), n)
    gen = torch.Generator().manual_seed(int(seed))
    theta_hat = adapter.params()
    adapter._require_fitted().eval()

    def step(theta: Params) -> Params:
        idx = torch.randperm(n, generator=gen)[:bs]  # drawn on the CPU: the same on every device
        X, t = adapter.tensors(train.subset(idx.numpy()))  # the batch's rows only: the split stays as it is
        leaves = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
        with torch.enable_grad():
            obj = adapter.per_sample_loss(leaves, X, t).mean() + adapter.regularizer(leaves)
            grads = torch.autograd.grad(obj, list(leaves.values()), allow_unused=True)
        return {k: (v - lr * g).detach() if g is not None else v.detach()
                for (k, v), g in zip(leaves.items(), grads)}

    out: list[Params] = []
    theta = theta_hat
    for _ in range(int(members)):
        if sampling == "independent":
            theta = theta_hat
        for _ in range(int(steps)):
            theta = step(theta)
        out.append(theta)
    return out


def _gex_deviations(job: Job, split: Split, members: list[Params]) -> torch.Tensor:
    """(M, n) loss deviations l(z, theta_m) - l(z, theta_hat): forward passes only (`member_losses`: shard
    kernels when the backend distributes `split`)."""
    L = member_losses(job.adapter, split, [job.adapter.params(), *members], job.chunk_size)
    return L[1:] - L[0]


@dataclass
class GEXOptions(MethodOptions):
    """Options of GEX and Self-GEX: the SGD runs of `gex_members`."""

    members: int = opt(8, "ensemble size M")
    steps: int = opt(10, "SGD steps per member")
    lr: float = opt(0.01, "SGD learning rate (no momentum)")
    batch_size: int = opt(32, "minibatch size (capped at n)")
    sampling: str = opt("independent", "'independent': each member ends its own run from theta_hat; "
                                       "'trajectory': member m is the state after (m + 1) * steps steps of one run")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.members = check_number(self.members, "members", kind=int, low=1)
        self.steps = check_number(self.steps, "steps", kind=int, low=1)
        self.lr = check_number(self.lr, "lr", low=0, low_open=True)
        self.batch_size = check_number(self.batch_size, "batch_size", kind=int, low=1)
        check_choice(self.sampling, ("independent", "trajectory"), "sampling")


def _gex_members(job: Job) -> list[Params]:
    o = job.options
    return gex_members(job.adapter, job.train, int(o.members), int(o.steps), float(o.lr), int(o.batch_size),
                       o.sampling, job.seed)


@register_method("gex", title="GEX", options=GEXOptions)
def gex(job: Job) -> Result:
    """GEX: raw = mean_m (l(z, theta_m) - l(z, theta_hat)) * (f(theta_m) - f(theta_hat)); values = raw.

    Members come from SGD started at the fitted model (`gex_members`; options: `GEXOptions`, ``influent
    methods gex``). Like IP, a positive raw means the
    sample's loss and the target cost move together, i.e. the sample helps the target.
    """
    target = job.need_target("gex")
    members = _gex_members(job)
    D = _gex_deviations(job, job.train, members)
    with torch.no_grad():
        f0 = target.value(job.adapter, job.adapter.params())
        df = torch.stack([target.value(job.adapter, p) - f0 for p in members])
    v = to_numpy((D * df[:, None]).mean(0))
    return Result(v, v)


@register_pairwise("gex")
def gex_pairwise(job: Job, test: Split) -> np.ndarray:
    """(n_train, n_test) mean_m (l(z_i, theta_m) - l(z_i, theta_hat)) * (l(x_j, theta_m) - l(x_j, theta_hat))."""
    members = _gex_members(job)
    D = _gex_deviations(job, job.train, members)
    T = _gex_deviations(job, test, members)
    return to_numpy(D.T @ T / len(members))


@register_method("self-gex", needs_target=False, title="self-GEX", options=GEXOptions)
def self_gex(job: Job) -> Result:
    """Self-GEX: raw = mean_m (l(z, theta_m) - l(z, theta_hat))^2; values = -raw (high = suspicious).
    Options: `GEXOptions`, as "gex"."""
    D = _gex_deviations(job, job.train, _gex_members(job))
    r = to_numpy((D**2).mean(0))
    return Result(-r, r)
