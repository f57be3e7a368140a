"""`GradientSource`: the per-sample gradients of one split at one model, served in bounded chunks.

Every method reads training gradients through this one mechanism. Gradients are computed chunk by
chunk (vmap, loop fallback), or read from a `GradientStore` when one is given (computing only the
chunks it lacks), and linear-only models use the factorised path for products so that the (n, p)
matrix is never built. When the current executor distributes the split (`data.executor`, the Ray
backend), the products (`dot`, `gram`, `sq_norms`, `map_rows`) run as shard kernels (the shard kernels at the end of this module) and
only their small results come back; `chunks` and `matrix` then bring the gradients themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..data import Split
from ..data.executor import Executor, sharding
from ..data.validate import InputError, check_choice, check_number
from ..models.base import ModelAdapter
from .linear import (analyses_whole_model, factor_block_rows, factor_dot, factor_gram, factor_grads,
                     factor_row_width, factor_sq_norms, factors, fused_dot, linear_layers)
from .per_sample import per_sample_grads
from .projection import Projection, make_projection
from .store import GradientStore, store_key

Progress = Callable[[int, int], None]
GRAD_METHODS = ("auto", "vmap", "loop", "factorised")  # the per-sample gradient paths (`method`)


class GradientSource:
    """Per-sample gradients of `split` under `adapter` (at its current parameters).

    Parameters
    ----------
    chunk_size : samples per chunk; memory is O(chunk_size * p)
    store : folder of an on-disk gradient store (reused across runs; resumable), or None
    method : "auto" | "vmap" | "loop" | "factorised" (per-sample gradient path)
    progress : optional callback progress(done, total) called per chunk
    projection : a random projection of every gradient (`grads.projection.make_projection`: a dict such as
        {"kind": "sparse", "dim": 4096, "seed": 0}); then rows, `p`, products and norms live in the projected
        space, while `dot` still takes directions in parameter space (and projects them)
    """

    def __init__(self, adapter: ModelAdapter, split: Split, chunk_size: int = 512,
                 store: str | Path | None = None, method: str = "auto", progress: Progress | None = None,
                 projection: dict | Projection | None = None) -> None:
        self.adapter = adapter
        self.split = split
        self.chunk_size = check_number(chunk_size, "chunk_size", kind=int, low=1)
        self.method = check_choice(method, GRAD_METHODS, "grad_method")
        self.progress = progress
        self._Xt: tuple[torch.Tensor, torch.Tensor] | None = None  # (X, t) as tensors, made on first use
        self.n = len(split)
        self.names = adapter.param_names()
        self.like = adapter.params()
        self.p = sum(v.numel() for v in self.like.values())
        self.p_params = self.p
        self.device = adapter.device  # every tensor this source makes lives on the model's device
        self._projection_arg = projection
        self.projection = make_projection(projection, self.p, adapter.dtype, self.device)
        if self.projection is not None:
            self.p = self.projection.k
        self.layers = linear_layers(adapter) if method in ("auto", "factorised") else None
        if self.layers is not None and split.X.ndim != 2:
            self.layers = None
        if method == "factorised" and self.layers is None:
            raise InputError("grad_method 'factorised' needs every analysed parameter in an nn.Linear on 2-D inputs")
        self.store: GradientStore | None = None
        if store is not None:
            extra = str(adapter.dtype) + ("" if self.projection is None else repr(sorted(self.projection.spec().items())))
            key = store_key(adapter.fingerprint(), split.fingerprint(), self.names, extra)
            dtype = "float64" if adapter.dtype == torch.float64 else "float32"
            self.store = GradientStore(store, key, self.n, self.p, self.chunk_size, dtype)

    @property
    def X(self) -> torch.Tensor:
        """(n, ...) features in the model's dtype on its device (made on first use: a source whose products run
        on an executor's shards never builds them here)."""
        return self._tensors()[0]

    @property
    def t(self) -> torch.Tensor:
        """(n,) encoded targets (made with `X`)."""
        return self._tensors()[1]

    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._Xt is None:
            self._Xt = self.adapter.tensors(self.split)
        return self._Xt

    def _executor(self) -> Executor | None:
        """The current executor when it distributes this split and no local store serves it."""
        return sharding(self.split) if self.store is None else None

    def _spec(self) -> SourceSpec:
        return SourceSpec(self.chunk_size, self.method, self._projection_arg)

    def _gather(self, ex: Executor, kernel: Callable[..., Any], payload: Any) -> torch.Tensor:
        """The shard results of `kernel`, concatenated in row order on this source's device."""
        return gather(ex, kernel, self.adapter, self.split, payload, self.adapter, self.progress)

    @property
    def factorised(self) -> bool:
        """True when products use the linear-layer factors instead of gradient rows."""
        return self.layers is not None and self.store is None and self.projection is None

    def project(self, V: torch.Tensor) -> torch.Tensor:
        """Directions in parameter space (p_params,) or (p_params, m) in this source's space (identity
        without a projection)."""
        V = V.to(device=self.device, dtype=self.adapter.dtype)
        return V if self.projection is None else self.projection.vectors(V)

    def _slices(self, rows: int | None = None) -> list[slice]:
        rows = self.chunk_size if rows is None else rows
        return [slice(s, min(self.n, s + rows)) for s in range(0, self.n, rows)]

    def _factor_slices(self, k: int) -> list[slice]:
        """Blocks of the factorised products with k directions (k = 0: norms): within the memory of
        `chunk_size` gradient rows (`factor_block_rows`)."""
        if self.n == 0:
            return []
        probe = factors(self.adapter, self.X[:1], self.t[:1], self.layers)  # one row: the per-sample widths
        return self._slices(factor_block_rows(self.chunk_size, self.p, factor_row_width(probe, k),
                                              analyses_whole_model(self.adapter)))

    def _tick(self, i: int, total: int) -> None:
        if self.progress is not None:
            self.progress(i + 1, total)

    def compute(self, sl: slice) -> torch.Tensor:
        """(B, p) gradients of rows `sl`, freshly computed."""
        X, t = self.X[sl], self.t[sl]
        if self.projection is not None:
            if self.layers is not None and self.projection.factorisable:
                shapes = {n: v.shape for n, v in self.like.items()}
                return self.projection.from_factors(factors(self.adapter, X, t, self.layers), shapes)
            return self.projection(self._gradients(X, t))
        return self._gradients(X, t)

    def _gradients(self, X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B, p_params) unprojected gradients of the rows (X, t)."""
        if self.layers is not None and self.method in ("auto", "factorised"):
            return factor_grads(factors(self.adapter, X, t, self.layers), self.names)
        return per_sample_grads(self.adapter, X, t, method=self.method if self.method != "factorised" else "auto")

    def fill_store(self, stop_after: int | None = None) -> None:
        """Compute and write every missing chunk of the store (`stop_after` chunks at most, for tests)."""
        assert self.store is not None
        missing = self.store.missing()
        for k, ci in enumerate(missing):
            if stop_after is not None and k >= stop_after:
                return
            self.store.write(ci, self.compute(self.store.rows(ci)).cpu().numpy())
            self._tick(k, len(missing))

    def chunks(self) -> Iterator[tuple[slice, torch.Tensor]]:
        """Yield (rows, (B, p) gradients) covering all samples in order."""
        ex = self._executor()
        if ex is not None:  # the gradients themselves: computed on the shards, brought here
            G = self._gather(ex, _k_rows, self._spec())
            for sl in self._slices():
                yield sl, G[sl]
            return
        if self.store is not None:
            self.fill_store()
            for ci in range(self.store.n_chunks):
                yield self.store.rows(ci), torch.as_tensor(self.store.read(ci), dtype=self.adapter.dtype,
                                                           device=self.device)
            return
        slices = self._slices()
        for i, sl in enumerate(slices):
            yield sl, self.compute(sl)
            self._tick(i, len(slices))

    def matrix(self) -> torch.Tensor:
        """The full (n, p) gradient matrix (only when the caller accepts that memory)."""
        return torch.cat([g for _, g in self.chunks()])

    def dot(self, V: torch.Tensor) -> torch.Tensor:
        """(n, k) products g_i . V[:, j] for V of shape (p, k) (or (n,) for V of shape (p,))."""
        vec = V.ndim == 1
        ex = self._executor()
        if ex is not None:
            V1 = V.reshape(self.p_params, -1).detach().to(dtype=self.adapter.dtype).cpu().numpy()
            out = self._gather(ex, _k_dot, (self._spec(), V1))
            return out[:, 0] if vec else out
        V2 = self.project(V.reshape(self.p_params, -1))
        out = torch.empty(self.n, V2.shape[1], dtype=self.adapter.dtype, device=self.device)
        if self.factorised:
            k, i0, stacked = V2.shape[1], 0, {}
            for name, p in self.like.items():  # (p, k) -> {name: (k, *shape)}
                stacked[name] = V2[i0:i0 + p.numel()].T.reshape(k, *p.shape)
                i0 += p.numel()
            slices, fused = self._factor_slices(k), True
            for i, sl in enumerate(slices):
                X, t = self.X[sl], self.t[sl]
                r = fused_dot(self.adapter, X, t, self.layers, stacked) if fused else None
                fused = r is not None
                out[sl] = r if fused else factor_dot(factors(self.adapter, X, t, self.layers), stacked)
                self._tick(i, len(slices))
        else:
            for sl, G in self.chunks():
                out[sl] = G @ V2
        return out[:, 0] if vec else out

    def gram(self, other: "GradientSource") -> torch.Tensor:
        """(n, m) inner products <g_i, h_j> between this split's and `other`'s gradients."""
        a, b = self.projection, other.projection
        if (a is None) != (b is None) or (a is not None and a.spec() != b.spec()):
            raise InputError("gram of two gradient sources needs the same projection on both")
        ex = self._executor()
        if ex is not None:  # the other side (a test split) is small: its gradients travel once
            return self._gather(ex, _k_gram, (self._spec(), other.matrix().cpu().numpy()))
        out = torch.empty(self.n, other.n, dtype=self.adapter.dtype, device=self.device)
        if self.factorised and other.factorised:
            fb = [factors(other.adapter, other.X[s], other.t[s], other.layers) for s in other._slices()]
            slices = self._slices()
            for i, sl in enumerate(slices):
                fa = factors(self.adapter, self.X[sl], self.t[sl], self.layers)
                out[sl] = torch.cat([factor_gram(fa, f) for f in fb], dim=1)
                self._tick(i, len(slices))
            return out
        H = other.matrix()
        for sl, G in self.chunks():
            out[sl] = G @ H.T
        return out

    def sq_norms(self) -> torch.Tensor:
        """(n,) squared gradient norms |g_i|^2."""
        ex = self._executor()
        if ex is not None:
            return self._gather(ex, _k_sq_norms, self._spec())
        out = torch.empty(self.n, dtype=self.adapter.dtype, device=self.device)
        if self.factorised:
            for sl in self._factor_slices(0):
                f = factors(self.adapter, self.X[sl], self.t[sl], self.layers)
                out[sl] = factor_sq_norms(f)
            return out
        for sl, G in self.chunks():
            out[sl] = (G**2).sum(1)
        return out

    def map_rows(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """fn applied to every chunk of (B, p) gradients, results concatenated: (n, ...). `fn` must be picklable
        (a top-level function or a bound method of a picklable object) when an executor distributes the split."""
        ex = self._executor()
        if ex is not None:
            return self._gather(ex, _k_map_rows, (self._spec(), fn))
        return torch.cat([fn(G) for _, G in self.chunks()])

    def to_numpy(self) -> np.ndarray:
        return self.matrix().cpu().numpy()


def weighted_sum(split: Split, terms: list[tuple[ModelAdapter, torch.Tensor | None, float]], chunk_size: int = 512,
                 method: str = "auto", projection: dict | Projection | None = None) -> torch.Tensor:
    """(n,) sum_k w_k g_i(adapter_k) . V_k over `terms` of (adapter_k, V_k (p,) or None, w_k); V_k None means
    |g_i(adapter_k)|^2 (TracIn's sums over checkpoints). In this process: one pass per term; when an executor
    distributes `split`, one shard kernel computes every term, so the checkpoints travel once."""
    if not terms:
        raise InputError("weighted_sum needs at least one term")
    first = terms[0][0]
    ex = sharding(split)
    if ex is not None:
        spec = SourceSpec(chunk_size, method, projection)
        payload = (spec, [(a.for_workers(), None if V is None else V.detach().to(a.dtype).cpu().numpy(), float(w))
                          for a, V, w in terms])
        return gather(ex, _k_weighted_sum, None, split, payload, first)
    total = torch.zeros(len(split), dtype=first.dtype, device=first.device)
    for a, V, w in terms:
        src = GradientSource(a, split, chunk_size, None, method, None, projection)
        total += w * (src.sq_norms() if V is None else src.dot(V))
    return total


@torch.no_grad()
def member_losses(adapter: ModelAdapter, split: Split, members: list[dict[str, torch.Tensor]],
                  chunk_size: int = 512) -> torch.Tensor:
    """(M, n) per-sample losses of `split` at each of M parameter settings `members` (dicts over the analysed
    parameters; the others as fitted): forward passes only. When an executor distributes `split`, one shard
    kernel evaluates every member on its rows, so the members travel once and only the losses come back."""
    ex = sharding(split)
    if ex is not None:
        payload = ([{k: v.detach().cpu() for k, v in m.items()} for m in members], int(chunk_size))
        return gather(ex, _k_losses, adapter, split, payload, adapter, axis=1)
    X, t = adapter.tensors(split)
    return torch.stack([torch.cat([adapter.per_sample_loss(m, X[s:s + chunk_size], t[s:s + chunk_size])
                                   for s in range(0, len(split), chunk_size)]) for m in members])


def gather(ex: Executor, kernel: Callable[..., Any], adapter: ModelAdapter | None, split: Split, payload: Any,
           like: ModelAdapter, progress: Progress | None = None, axis: int = 0) -> torch.Tensor:
    """`kernel`'s results over the shards of `split`, concatenated along `axis` (the rows' axis of the results)
    in row order, as a tensor in `like`'s dtype on its device."""
    parts = ex.map_shards(kernel, adapter, split, payload, progress)
    return torch.as_tensor(np.concatenate(parts, axis=axis)).to(device=like.device, dtype=like.dtype)


# ---- shard kernels ------------------------------------------------------------------------------------------
# What a `GradientSource` runs on each shard of the split when an executor distributes it (`data.executor`):
# each takes (adapter, shard, payload) and returns a small numpy array -- per-sample products or norms, never
# the shard's gradients, except `_k_rows`, which serves `chunks`/`matrix` for the methods that read the
# gradients themselves (docs/scale.md lists them). Top-level functions, so that a worker imports them by name.

@dataclass(frozen=True)
class SourceSpec:
    """How a shard's `GradientSource` is built: the same chunking, gradient path and projection as the driver's."""

    chunk_size: int
    method: str
    projection: Any

    def source(self, adapter: ModelAdapter, shard: Split) -> "GradientSource":
        return GradientSource(adapter, shard, self.chunk_size, None, self.method, None, self.projection)


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _k_dot(adapter: ModelAdapter, shard: Split, payload: tuple[SourceSpec, np.ndarray]) -> np.ndarray:
    """(B, k) products g_i . V of the shard's rows, V (p_params, k) in parameter space."""
    spec, V = payload
    src = spec.source(adapter, shard)
    return _np(src.dot(torch.as_tensor(V)))


def _k_sq_norms(adapter: ModelAdapter, shard: Split, spec: SourceSpec) -> np.ndarray:
    """(B,) squared gradient norms of the shard's rows."""
    return _np(spec.source(adapter, shard).sq_norms())


def _k_gram(adapter: ModelAdapter, shard: Split, payload: tuple[SourceSpec, np.ndarray]) -> np.ndarray:
    """(B, m) products of the shard's gradients with m other gradients H (m, p) in the source's space."""
    spec, H = payload
    src = spec.source(adapter, shard)
    Ht = torch.as_tensor(H).to(dtype=adapter.dtype, device=adapter.device).T
    if src.projection is None:  # unprojected: parameter space, so the factorised product applies
        return _np(src.dot(Ht))
    return _np(torch.cat([G @ Ht for _, G in src.chunks()]))


def _k_map_rows(adapter: ModelAdapter, shard: Split, payload: tuple[SourceSpec, Callable[[torch.Tensor], torch.Tensor]]
             ) -> np.ndarray:
    """fn(G) of every chunk of the shard's (B, p) gradients, concatenated along the first axis."""
    spec, fn = payload
    return _np(torch.cat([fn(G) for _, G in spec.source(adapter, shard).chunks()]))


def _k_rows(adapter: ModelAdapter, shard: Split, spec: SourceSpec) -> np.ndarray:
    """(B, p) gradients of the shard: the one kernel whose result is per-sample gradients."""
    return _np(spec.source(adapter, shard).matrix())


def _k_losses(adapter: ModelAdapter, shard: Split, payload: tuple[list[dict[str, torch.Tensor]], int]) -> np.ndarray:
    """(M, B) per-sample losses of the shard's rows at each member's parameters (`member_losses`)."""
    members, chunk_size = payload
    moved = [{k: v.to(dtype=adapter.dtype, device=adapter.device) for k, v in m.items()} for m in members]
    return _np(member_losses(adapter, shard, moved, chunk_size))


def _k_weighted_sum(_: Any, shard: Split, payload: tuple[SourceSpec, list]) -> np.ndarray:
    """(B,) `weighted_sum` of the shard's rows over every (adapter, V or None, weight) term."""
    spec, terms = payload
    total = None
    for a, V, w in terms:
        src = spec.source(a, shard)
        part = w * (src.sq_norms() if V is None else src.dot(torch.as_tensor(V)))
        total = part if total is None else total + part
    return _np(total)
