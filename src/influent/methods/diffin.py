"""Diff-In [DIFF]: influence accumulated over recorded training checkpoints with second-order terms.

Tan et al., "Understanding Data Influence with Differential Approximation" (arXiv 2508.14648). With m
checkpoints t (global step t, learning rate eta_t) saved by a `TrainingRecorder`, a fresh random proxy
batch B per checkpoint and n training samples, the paper's statistic is

    raw(z) = sum_t a_t * v_t . (H_B G_z + H_z G_B),    a_t = -t * eta_t^2 / (n * m)

where v_t = grad f(theta_t) (the target's gradient, e.g. the mean validation loss), G_z, H_z the gradient
and Hessian of z's loss and G_B, H_B those of the proxy batch's training objective (mean loss plus the
model's regulariser), all at theta_t. The self-influence version replaces v_t by G_z.

Sign and first-order term (measured against leave-one-out retraining under the same SGD schedule, see
docs/diffin.md). Expanding the removal of z along the training trajectory gives, per step t,

    rise of f when z is removed ~ (eta_t / n) v_t . G_z  -  (t eta_t^2 / n) v_t . (H G_z + ...)

so the paper's a_t is the correct coefficient of the *second-order correction*, and the public
statistic omits the first-order (TracIn-like) term. Without that term, `raw` correlates *negatively*
with the actual rise on every model we tried. We therefore return

- ``first_order=False`` (default): ``values = -T * raw`` (retraining's sign),
- ``first_order=True``: ``values = T * (sum_t eta_t / (n m) v_t . G_z + raw)``, first- plus second-order
  terms of the expansion (with the paper's second-order term). It is the more accurate estimate while eta * lambda_max * T is small (short
  training) and degrades, even turning negative, for long training where the truncated expansion fails.

T is the total number of training steps (the last recorded step): the paper's 1/m averages over
checkpoints, T/m turns that average into a sum over the T steps, so that with ``first_order=True`` the
values estimate the rise of the target in its own units, up to a constant shared by all samples (the
omitted -G part of g_z - G; `actions.diffin_tasks.delete` centres it). Rankings do not depend on T.
For self-influence the same estimate with v_t = G_z is the rise of z's own loss when z is removed;
high = suspicious, so ``values = -(that estimate)``; ``raw`` keeps the paper's statistic.

Hessian-vector products: ``hvp="fd"`` uses forward finite differences of gradients,
H w ~ (grad(theta + s w) - grad(theta)) / s with s = eps / |w| (the paper's), ``hvp="exact"`` uses
forward-over-reverse / forward-over-forward derivatives from torch.func, so the approximation error can
be measured. Because H_B is symmetric, v . H_B G_z = G_z . (H_B v): the target version needs one batch
HVP per checkpoint and batch instead of one per sample (the same product, fewer evaluations).
"""

from __future__ import annotations

import hashlib
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.func import jvp, vmap

from ..data import Split
from ..data.executor import sharding
from ..data.validate import InputError
from ..grads.per_sample import flatten, per_sample_grads, per_sample_grads_vmap, unflatten
from ..models.base import ModelAdapter, Params
from ..models.training import Checkpoint
from ..targets import Target
from .options import CheckpointOptions, opt
from .registry import Job, Result, register_method

HVP_KINDS = ("fd", "exact")

# Validation gradients per (target, checkpoint): reused across proxy batches, terms, and calls (e.g. the
# same checkpoints scored with hvp="fd" and hvp="exact"). Entries die with their target.
_VGRAD_CACHE: "weakref.WeakKeyDictionary[Target, dict[tuple[str | None, str], torch.Tensor]]" = \
    weakref.WeakKeyDictionary()


# ---- Hessian-vector products ---------------------------------------------------------------------
def hvp(grad_fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, w: torch.Tensor,
        kind: str = "fd", eps: float = 1e-3, g0: torch.Tensor | None = None) -> torch.Tensor:
    """The derivative of `grad_fn` at `theta` in the direction `w`: H w when `grad_fn` (flat (p,) -> (p,)) is
    the gradient of a function with Hessian H; any output shape works (e.g. per-sample gradients).

    kind="fd": (grad_fn(theta + s w) - grad_fn(theta)) / s with s = eps / |w| (`g0` = grad_fn(theta) if
    already known); kind="exact": the Jacobian-vector product of `grad_fn` (torch.func.jvp).
    Returns zeros for w = 0.
    """
    if kind == "exact":
        return jvp(grad_fn, (theta,), (w,))[1]
    g0 = grad_fn(theta) if g0 is None else g0
    norm = float(w.norm())
    if norm == 0.0:
        return torch.zeros_like(g0)
    s = eps / norm
    return (grad_fn(theta + s * w) - g0) / s


def _check_options(batch_size: Any, n_batches: Any, eps: Any, kind: Any) -> tuple[int, int, float, str]:
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(n_batches, (int, np.integer)) or isinstance(n_batches, bool) or n_batches < 1:
        raise InputError(f"n_batches must be a positive integer, got {n_batches!r}")
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise InputError(f"eps must be a positive number, got {eps!r}") from None
    if not np.isfinite(eps) or eps <= 0:
        raise InputError(f"eps must be a positive number, got {eps!r}")
    if kind not in HVP_KINDS:
        raise InputError(f"hvp must be one of {list(HVP_KINDS)}, got {kind!r}")
    return int(batch_size), int(n_batches), eps, kind


@dataclass
class DiffInOptions(CheckpointOptions):
    """Options of Diff-In and Self-Diff-In (see the module docstring for the estimator)."""

    batch_size: int = opt(128, "proxy-batch size B of the Hessian-vector products")
    n_batches: int = opt(1, "proxy batches per checkpoint (their terms are averaged)")
    eps: float = opt(1e-3, "finite-difference step of hvp='fd', relative to |theta| / |w|")
    hvp: str = opt("fd", "Hessian-vector products: 'fd' (finite differences of gradients) or 'exact' (autodiff)")
    checkpoint_subset: Any = opt(None, "None: every recorded checkpoint; a count k: k evenly spaced ones ending "
                                       "with the last; a list of global steps")
    first_order: bool = opt(False, "keep only the first-order term sum_t a_t grad f(theta_t) . G_z")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_options(self.batch_size, self.n_batches, self.eps, self.hvp)
        if not isinstance(self.first_order, (bool, np.bool_)):
            raise InputError(f"first_order must be True or False, got {self.first_order!r}")


def select_checkpoints(ckpts: Sequence[Checkpoint], subset: Any) -> list[Checkpoint]:
    """The checkpoints to use: all (None), `k` evenly spaced ones ending with the last (an int: every
    (M/k)-th of the M recorded, counted back from the last), or those whose global steps are listed."""
    ckpts = sorted(ckpts, key=lambda c: c.step)
    if subset is None:
        return list(ckpts)
    if isinstance(subset, (int, np.integer)) and not isinstance(subset, bool):
        if not 1 <= subset <= len(ckpts):
            raise InputError(f"checkpoint_subset={subset} must be between 1 and the {len(ckpts)} recorded checkpoints")
        M, k = len(ckpts), int(subset)
        pos = np.unique(M - 1 - (np.arange(k) * M) // k)  # every M/k-th, counted back from the last
        return [ckpts[i] for i in pos]
    try:
        steps = [int(s) for s in subset]
    except (TypeError, ValueError):
        raise InputError(f"checkpoint_subset must be None, a count or a list of steps, got {subset!r}") from None
    by_step = {c.step: c for c in ckpts}
    missing = [s for s in steps if s not in by_step]
    if missing or not steps:
        have = sorted(by_step)
        raise InputError(f"checkpoint_subset: no checkpoint at step(s) {missing or steps}; recorded steps are "
                         f"{have[:6]}{' ...' if len(have) > 6 else ''}")
    return [by_step[s] for s in sorted(set(steps))]


def proxy_batches(n: int, n_checkpoints: int, batch_size: int = 128, n_batches: int = 1,
                  seed: int = 0) -> list[list[np.ndarray]]:
    """The proxy batches Diff-In draws: for each checkpoint, `n_batches` index arrays of
    min(batch_size, n) distinct training positions (fresh per checkpoint, seeded)."""
    rng = np.random.default_rng(seed)
    b = min(batch_size, n)
    return [[np.sort(rng.choice(n, size=b, replace=False)) for _ in range(n_batches)] for _ in range(n_checkpoints)]


# ---- per-checkpoint terms ------------------------------------------------------------------------
def _params_key(params: Params) -> str:
    h = hashlib.sha256()
    for k, v in params.items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def target_grad(target: Target, adapter: ModelAdapter, ck: Checkpoint) -> torch.Tensor:
    """(p,) gradient of `target` at checkpoint `ck`, cached per (target, checkpoint parameters)."""
    cache = _VGRAD_CACHE.setdefault(target, {})
    key = (target.prepared_for_, _params_key(ck.params))
    if key not in cache:
        cache[key] = target.grad(adapter.with_params(ck.params)).detach()
    return cache[key]


class _Objective:
    """The adapter's loss as functions of the flat analysed parameters."""

    def __init__(self, adapter: ModelAdapter, like: Params) -> None:
        self.adapter, self.like = adapter, like

    def losses(self, theta: torch.Tensor, X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B,) per-sample losses."""
        return self.adapter.per_sample_loss(unflatten(theta, self.like), X, t)

    def batch(self, X: torch.Tensor, t: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The proxy batch's training objective theta -> mean loss + regulariser."""

        def f(theta: torch.Tensor) -> torch.Tensor:
            p = unflatten(theta, self.like)
            return self.adapter.per_sample_loss(p, X, t).mean() + self.adapter.regularizer(p)

        return f

    def grads(self, theta: torch.Tensor, X: torch.Tensor, t: torch.Tensor, exact_path: bool = False) -> torch.Tensor:
        """(B, p) per-sample gradients (vmap, with the loop fallback unless a torch.func path is required)."""
        if exact_path:
            return per_sample_grads_vmap(self.adapter, unflatten(theta, self.like), X, t)
        return per_sample_grads(self.adapter, X, t, params=unflatten(theta, self.like))


def _dirderiv(obj: _Objective, theta: torch.Tensor, X: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(B,) directional derivatives g_z . w of the per-sample losses (one forward-mode pass)."""
    return jvp(lambda th: obj.losses(th, X, t), (theta,), (w,))[1]


def _target_terms(obj: _Objective, theta: torch.Tensor, X: torch.Tensor, t: torch.Tensor, v: torch.Tensor,
                  u: torch.Tensor, GB: torch.Tensor, kind: str, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the rows (X, t): v . G_z, v . H_B G_z (= G_z . u with u = H_B v) and v . H_z G_B."""
    first = _dirderiv(obj, theta, X, t, v)
    batch = _dirderiv(obj, theta, X, t, u)
    sample = hvp(lambda th: _dirderiv(obj, th, X, t, v), theta, GB, kind, eps, first)
    return first, batch, sample


def _self_terms(obj: _Objective, theta: torch.Tensor, X: torch.Tensor, t: torch.Tensor, batch_fn: Callable,
                GB: torch.Tensor, kind: str, eps: float, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the rows (X, t): |G_z|^2, G_z . H_B G_z and G_z . H_z G_B."""
    grads = lambda th: obj.grads(th, X, t, exact_path=kind == "exact")  # noqa: E731
    G = grads(theta)  # (B, p)
    first = (G * G).sum(1)
    # G_z . H_z G_B: per-sample Hessians applied to the shared direction G_B
    sample = (hvp(grads, theta, GB, kind, eps, G) * G).sum(1)
    # G_z . H_B G_z: the proxy batch's Hessian applied to each sample's own gradient (vmap over samples)
    batch = torch.empty_like(first)
    if kind == "exact":
        quad = vmap(lambda g: jvp(lambda th: jvp(batch_fn, (th,), (g,))[1], (theta,), (g,))[1])
        for a in range(0, G.shape[0], rows):
            batch[a:a + rows] = quad(G[a:a + rows])
    else:
        norms = G.norm(dim=1)
        steps = torch.where(norms > 0, eps / norms.clamp_min(torch.finfo(G.dtype).tiny), torch.zeros_like(norms))
        shifted = vmap(lambda g, s: jvp(batch_fn, (theta + s * g,), (g,))[1])
        base = G @ GB
        for a in range(0, G.shape[0], rows):
            sl = slice(a, a + rows)
            d = shifted(G[sl], steps[sl]) - base[sl]
            batch[sl] = torch.where(norms[sl] > 0, d / steps[sl].clamp_min(torch.finfo(G.dtype).tiny),
                                    torch.zeros_like(d))
    return first, batch, sample


@dataclass
class DiffInParts:
    """Per-checkpoint Diff-In terms, from which every variant of the estimator is a weighted sum.

    Attributes
    ----------
    steps, lrs : (m,) global step t and learning rate eta_t of each checkpoint used
    n : number of training samples
    total_steps : T, the last recorded training step
    first : (m, n) v_t . G_z (v_t = G_z for self-influence: |G_z|^2)
    second : (m, n) v_t . (H_B G_z + H_z G_B), averaged over the proxy batches
    batch_term, sample_term : (m, n) the two parts of `second`
    """

    steps: np.ndarray
    lrs: np.ndarray
    n: int
    total_steps: int
    first: np.ndarray
    batch_term: np.ndarray
    sample_term: np.ndarray

    @property
    def second(self) -> np.ndarray:
        return self.batch_term + self.sample_term

    @property
    def m(self) -> int:
        return len(self.steps)

    def a(self) -> np.ndarray:
        """(m,) the paper's coefficients a_t = -t eta_t^2 / (n m)."""
        return -self.steps * self.lrs**2 / (self.n * self.m)

    def raw(self) -> np.ndarray:
        """(n,) the paper's statistic sum_t a_t v_t . (H_B G_z + H_z G_B)."""
        return self.a() @ self.second

    def first_order(self) -> np.ndarray:
        """(n,) the omitted first-order term sum_t eta_t / (n m) v_t . G_z (TracIn-like)."""
        return (self.lrs / (self.n * self.m)) @ self.first

    def rise(self, first_order: bool = False) -> np.ndarray:
        """(n,) the estimated rise of the target when each sample is removed (retraining's sign):
        T * (first-order term + raw) with `first_order`, else -T * raw."""
        if first_order:
            return self.total_steps * (self.first_order() + self.raw())
        return -self.total_steps * self.raw()


def diffin_parts(adapter: ModelAdapter, train: Split, checkpoints: Sequence[Checkpoint], target: Target | None = None,
                 *, batch_size: int = 128, n_batches: int = 1, eps: float = 1e-3, hvp_kind: str = "fd",
                 seed: int = 0, chunk_size: int = 512, total_steps: int | None = None,
                 progress: Callable[[int, int], None] | None = None, timing: dict[str, float] | None = None) -> DiffInParts:
    """Compute the Diff-In terms at each checkpoint (target version, or self-influence when `target` is None).

    Parameters
    ----------
    adapter : the fitted adapter (its non-analysed parameters are used as they are)
    train : the training split (n samples); proxy batches are drawn from it, see `proxy_batches`
    checkpoints : the checkpoints to use (their analysed parameters, step and learning rate)
    target : the target f (its gradient v_t at each checkpoint is cached); None = self-influence
    batch_size, n_batches : proxy batch size and number of proxy batches per checkpoint (terms averaged)
    eps, hvp_kind : finite-difference size and "fd" | "exact"
    total_steps : T (default: the largest step among `checkpoints`)
    """
    batch_size, n_batches, eps, hvp_kind = _check_options(batch_size, n_batches, eps, hvp_kind)
    ckpts = sorted(checkpoints, key=lambda c: c.step)
    n = len(train)
    like = adapter.params()
    obj = _Objective(adapter, like)
    batches = proxy_batches(n, len(ckpts), batch_size, n_batches, seed)
    m = len(ckpts)
    items: list[_Item] = []
    t_v = 0.0
    for c, ck in enumerate(ckpts):  # on this process: per checkpoint and proxy batch, the shared directions
        theta = flatten({k: ck.params[k].to(adapter.dtype) for k in like}).detach()
        t0 = time.perf_counter()
        v = None if target is None else target_grad(target, adapter, ck).to(adapter.dtype)
        t_v += time.perf_counter() - t0
        for B in batches[c]:
            Xb, tb = adapter.tensors(train.subset(np.asarray(B)))  # the batch's rows only
            batch_fn = obj.batch(Xb, tb)
            GB = torch.func.grad(batch_fn)(theta).detach()
            u = None if v is None else hvp(torch.func.grad(batch_fn), theta, v, hvp_kind, eps, GB)
            items.append(_Item(c, theta, v, u, GB, Xb, tb))
    t1 = time.perf_counter()
    payload = (items, m, n_batches, hvp_kind, eps, max(1, int(chunk_size)))
    ex = sharding(train)
    if ex is not None:  # the per-sample terms on the shards: the directions travel once, (3, m, n) numbers back
        parts = ex.map_shards(_terms_kernel, adapter, train, payload, progress)
        first, bterm, sterm = (np.concatenate([q[i] for q in parts], axis=1) for i in range(3))
    else:
        first, bterm, sterm = _terms(adapter, *adapter.tensors(train), *payload, progress=progress)
    if timing is not None:
        timing.update(target_grads=t_v, scoring=time.perf_counter() - t1)
    T = int(max(c.step for c in ckpts)) if total_steps is None else int(total_steps)
    return DiffInParts(np.array([c.step for c in ckpts], dtype=np.float64),
                       np.array([c.lr for c in ckpts], dtype=np.float64), n, T, first, bterm, sterm)


@dataclass
class _Item:
    """One checkpoint's proxy batch: the checkpoint index c, its flat parameters theta (p,), the target's
    gradient v (p,) and u = H_B v (None for self-influence), the batch gradient G_B (p,) and its rows."""

    c: int
    theta: torch.Tensor
    v: torch.Tensor | None
    u: torch.Tensor | None
    GB: torch.Tensor
    Xb: torch.Tensor
    tb: torch.Tensor


def _terms(adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor, items: list[_Item], m: int, n_batches: int,
           hvp_kind: str, eps: float, chunk: int,
           progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(m, B) first, batch and sample terms of the rows (X, t) over every item (batch terms averaged over a
    checkpoint's proxy batches)."""
    obj = _Objective(adapter, adapter.params())
    B = X.shape[0]
    first, bterm, sterm = np.zeros((m, B)), np.zeros((m, B)), np.zeros((m, B))
    for k, it in enumerate(items):
        batch_fn = obj.batch(it.Xb, it.tb)
        rows = max(1, min(chunk, 16384 // len(it.Xb)))
        for a in range(0, B, chunk):
            sl = slice(a, min(B, a + chunk))
            if it.v is not None:
                f, b, s = _target_terms(obj, it.theta, X[sl], t[sl], it.v, it.u, it.GB, hvp_kind, eps)
            else:
                f, b, s = _self_terms(obj, it.theta, X[sl], t[sl], batch_fn, it.GB, hvp_kind, eps, rows)
            first[it.c, sl] = f.detach().double().cpu().numpy()  # the same for every batch
            bterm[it.c, sl] += b.detach().double().cpu().numpy() / n_batches
            sterm[it.c, sl] += s.detach().double().cpu().numpy() / n_batches
        if progress is not None and (k + 1 == len(items) or items[k + 1].c != it.c):
            progress(it.c + 1, m)
    return first, bterm, sterm


def _terms_kernel(adapter: ModelAdapter, shard: Split, payload: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shard kernel: `_terms` of the shard's rows."""
    return _terms(adapter, *adapter.tensors(shard), *payload)


def _run(job: Job, method: str, target: Target | None) -> Result:
    all_ckpts = job.checkpoints(method)
    o = job.options
    ckpts = select_checkpoints(all_ckpts, o.checkpoint_subset)
    first_order = o.first_order
    parts = diffin_parts(job.adapter, job.train, ckpts, target,
                         batch_size=o.batch_size, n_batches=o.n_batches,
                         eps=o.eps, hvp_kind=o.hvp, seed=job.seed,
                         chunk_size=job.chunk_size, total_steps=max(c.step for c in all_ckpts),
                         progress=job.progress, timing=job.timing)
    job.used["checkpoint_steps"] = [int(s) for s in parts.steps]
    rise = parts.rise(bool(first_order))
    values = rise if target is not None else -rise
    return Result(values, parts.raw())


@register_method("diffin", title="Diff-In", options=DiffInOptions, checkpoints="always")
def diffin(job: Job) -> Result:
    """Diff-In over recorded checkpoints; values = estimated rise of the target when z is removed
    (retraining's sign), raw = the paper's sum_t a_t grad f(theta_t) . (H_B G_z + H_z G_B).

    Options: `DiffInOptions` (``influent methods diffin``); the checkpoints default to the adapter's recorder.
    """
    return _run(job, "diffin", job.need_target("diffin"))


@register_method("self-diffin", needs_target=False, title="self-Diff-In", options=DiffInOptions,
                 checkpoints="always")
def self_diffin(job: Job) -> Result:
    """Self-Diff-In: the target gradient replaced by G_z; values = -(estimated rise of z's own loss when
    z is removed) (high self-influence = suspicious), raw = the paper's statistic. Options: `DiffInOptions`,
    as "diffin"."""
    return _run(job, "self-diffin", None)
