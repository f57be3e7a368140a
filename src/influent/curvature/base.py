"""One interface for inverse-Hessian-vector products, with one damping meaning.

Every solver approximates ``(H + damping * I)^-1 V`` where

    H = (1/n) sum_i hess_theta l(z_i) + hess(regulariser)

over the analysed parameters at the fitted model (design promise 2). `damping` is absolute: it means
the same for every solver and does not scale with n or with how the user's loss is reduced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.func import grad, jvp, vmap

from ..data import Split
from ..data.executor import sharding
from ..data.registry import Entry, Registry
from ..data.validate import InputError, check_choice, check_number
from ..grads.per_sample import flatten, unflatten
from ..grads.source import GradientSource
from ..models.base import ModelAdapter


@dataclass
class CurvatureContext:
    """What a solver may use: the adapter at its fitted parameters and the training split.

    Parameters
    ----------
    adapter, train : the fitted model and the data it was fitted on
    damping : absolute damping added to H (see module docstring)
    chunk_size : samples per chunk in every data pass (bounds memory)
    seed : seed of any randomness (LiSSA batches, Arnoldi start vector)
    store : optional gradient-store folder for the training gradients
    hvp_kind : how Hessian-vector products are taken: "rev" (reverse-over-reverse), "fwd"
          (forward-over-reverse) or "auto" (the faster of the two, timed once per context)
    hvp_block : columns per batched Hessian-vector product (bounds memory)
    graph_cache_chunks : full-data reverse-mode products keep the gradient graphs of the data chunks
          between calls when the data has at most this many chunks (memory: that many chunks' graphs)
    """

    adapter: ModelAdapter
    train: Split
    damping: float = 0.0
    chunk_size: int = 512
    seed: int = 0
    store: str | Path | None = None
    hvp_kind: str = "auto"
    hvp_block: int = 128
    _source: GradientSource | None = field(default=None, init=False, repr=False)
    _reg_diag: torch.Tensor | None = field(default=None, init=False, repr=False)
    _leaf_list: list | None = field(default=None, init=False, repr=False)
    graph_cache_chunks: int = 4
    hvp_modes_: dict = field(default_factory=dict, init=False, repr=False)
    _graphs: list | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.X, self.t = self.adapter.tensors(self.train)
        self.n = len(self.train)
        self.params = self.adapter.params()
        self.theta = flatten(self.params)
        self.p = self.theta.numel()
        self.dtype = self.adapter.dtype
        self.device = self.adapter.device  # tensors made here live on the model's device
        check_choice(self.hvp_kind, ("auto", "rev", "fwd"), "hvp_kind")
        self.damping = check_number(self.damping, "damping")  # finite (negative too: H - d I is allowed here)
        check_number(self.chunk_size, "chunk_size", kind=int, low=1)
        check_number(self.hvp_block, "hvp_block", kind=int, low=1)
        check_number(self.graph_cache_chunks, "graph_cache_chunks", kind=int, low=0)

    def grad_source(self) -> GradientSource:
        """Per-sample training gradients (shared, so a store is filled once)."""
        if self._source is None:
            self._source = GradientSource(self.adapter, self.train, self.chunk_size, self.store)
        return self._source

    @property
    def distributed(self) -> bool:
        """Whether the current executor distributes the training split (then `shard_sums` sums over shards)."""
        return sharding(self.train) is not None

    def shard_sums(self, kernel: Callable[..., Any], payload: Any) -> Any:
        """The sum over the training split's shards of ``kernel(adapter, shard, payload)`` (nested dicts of
        arrays: partial sums of curvature statistics) when the current executor distributes the split;
        None otherwise (the solver then makes its own pass in this process)."""
        ex = sharding(self.train)
        if ex is None:
            return None
        parts = ex.map_shards(kernel, self.adapter, self.train, payload)
        return _tree_sum(parts)

    def objective(self, theta: torch.Tensor, X: torch.Tensor, t: torch.Tensor, weight: float) -> torch.Tensor:
        """weight * sum of losses on (X, t) at flat parameters `theta` (no regulariser)."""
        return weight * self.adapter.per_sample_loss(unflatten(theta, self.params), X, t).sum()

    # ---- Hessian-vector products -------------------------------------------------------------
    def reg_diag(self) -> torch.Tensor:
        """(p,) diagonal of the regulariser's Hessian, computed once per context."""
        if self._reg_diag is None:
            self._reg_diag = self.adapter.reg_hessian_diag().to(device=self.device, dtype=self.dtype)
        return self._reg_diag

    def _leaves(self) -> list[torch.Tensor]:
        if self._leaf_list is None:  # views of the context's one parameter snapshot: no copies per call
            self._leaf_list = [t.detach().requires_grad_(True) for t in self.params.values()]
        return self._leaf_list

    def _chunk_products(self, Xc: torch.Tensor, tc: torch.Tensor, weight: float, mode: str):
        """A function ``W (p, b) -> (weight * Hessian of sum_i l_i over (Xc, tc)) @ W`` (no regulariser).

        "rev": reverse-over-reverse (the gradient's graph is built once per chunk and reused for every
        column block); "fwd": forward-over-reverse (``jvp`` of ``grad``, vmapped over columns).
        """
        if mode == "fwd":
            g = grad(lambda th: self.objective(th, Xc, tc, weight))

            def fwd(W: torch.Tensor) -> torch.Tensor:
                if W.shape[1] == 1:
                    return jvp(g, (self.theta,), (W[:, 0],))[1][:, None]
                return vmap(lambda v: jvp(g, (self.theta,), (v,))[1], in_dims=1, out_dims=1)(W)
            return fwd
        leaves = self._leaves()
        with torch.enable_grad():
            loss = weight * self.adapter.per_sample_loss(dict(zip(self.params, leaves)), Xc, tc).sum()
            gs = torch.autograd.grad(loss, leaves, create_graph=True)
            gflat = torch.cat([q.reshape(-1) for q in gs])
        if not gflat.requires_grad:  # the loss is linear in the parameters: zero Hessian
            return lambda W: torch.zeros_like(W)

        def rev(W: torch.Tensor) -> torch.Tensor:
            if W.shape[1] == 1:
                out = torch.autograd.grad(gflat, leaves, W[:, 0], retain_graph=True, materialize_grads=True)
                return torch.cat([q.reshape(-1) for q in out])[:, None]
            out = torch.autograd.grad(gflat, leaves, W.T.contiguous(), retain_graph=True, is_grads_batched=True,
                                      materialize_grads=True)
            return torch.cat([q.reshape(q.shape[0], -1) for q in out], dim=1).T
        return rev

    def hvp_mode(self, k: int = 1) -> str:
        """"rev" or "fwd": the faster Hessian-vector product for this model, for one column (k = 1) or
        for blocks of columns (k > 1), each measured once per context on a slice of the real shape
        (unless fixed by `hvp_kind`); a mode that cannot run the model is skipped."""
        key = "vector" if k == 1 else "block"
        if key not in self.hvp_modes_:
            self.hvp_modes_[key] = self.hvp_kind if self.hvp_kind != "auto" else self._probe_hvp_mode(k)
        return self.hvp_modes_[key]

    def _probe_hvp_mode(self, k: int) -> str:
        m = min(self.n, 64 if k == 1 else self.chunk_size)
        cols = 1 if k == 1 else min(k, self.hvp_block)
        Xc, tc = self.X[:m], self.t[:m]
        W = torch.randn(self.p, cols, generator=torch.Generator().manual_seed(0), dtype=self.dtype).to(self.device)
        best: dict[str, float] = {}
        for mode in ("rev", "fwd") * (3 if k == 1 else 2):
            if best.get(mode) == float("inf"):
                continue
            try:
                t0 = time.perf_counter()
                self._chunk_products(Xc, tc, 1.0 / m, mode)(W)
                best[mode] = min(best.get(mode, float("inf")), time.perf_counter() - t0)
            except (RuntimeError, NotImplementedError):
                best[mode] = float("inf")
        if min(best.values()) == float("inf"):
            raise InputError("Hessian-vector products fail for this model in both reverse and forward mode")
        return min(best, key=best.get)

    def _chunks(self, index: torch.Tensor | None):
        """(X, t, weight) per data chunk of the rows `index` (or all data), weight = 1 / rows."""
        X, t = (self.X, self.t) if index is None else (self.X[index], self.t[index])
        m = X.shape[0]
        for s in range(0, m, self.chunk_size):
            yield X[s:s + self.chunk_size], t[s:s + self.chunk_size], 1.0 / m

    def hvp(self, V: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """H @ V for V (p,) or (p, k), without damping; over the rows `index` (a minibatch) or all data.

        One forward and backward pass per data chunk builds the gradient's graph (reverse mode);
        every block of `hvp_block` columns then costs one batched product (see `hvp_mode`)."""
        vec = V.ndim == 1
        V2 = V.reshape(self.p, -1).to(self.dtype)
        if index is None and self.distributed:  # full-data products: summed over the shards
            S = self.shard_sums(_hvp_sum, V2.detach().cpu().numpy())
            if S is not None:
                out = torch.as_tensor(S).to(dtype=self.dtype, device=self.device) / self.n + self.reg_diag()[:, None] * V2
                return out[:, 0] if vec else out
        mode = self.hvp_mode(V2.shape[1])
        out = self.reg_diag()[:, None] * V2
        if index is None and mode == "rev" and self.n <= self.graph_cache_chunks * self.chunk_size:
            # full-data products, repeated by CG, Arnoldi and power iteration: keep the few chunks'
            # gradient graphs, so that every later product is one batched second backward pass
            if self._graphs is None:
                self._graphs = [self._chunk_products(Xc, tc, w, "rev") for Xc, tc, w in self._chunks(None)]
            parts = iter(self._graphs)
        else:
            parts = (self._chunk_products(Xc, tc, w, mode) for Xc, tc, w in self._chunks(index))
        for part in parts:
            for c in range(0, V2.shape[1], self.hvp_block):
                out[:, c:c + self.hvp_block] += part(V2[:, c:c + self.hvp_block])
        return out[:, 0] if vec else out

    def hessian(self) -> torch.Tensor:
        """The explicit (p, p) Hessian H (no damping): the adapter's closed form where it has one,
        otherwise built from Hessian-vector products with identity blocks of `hvp_block` columns
        (each chunk's gradient graph built once). `hessian_route_` says which ran.

        With ``hvp_kind="auto"`` the product mode is chosen on the build's own first blocks: the first
        data chunk's first four column blocks alternate reverse and forward mode, each timed (reverse
        mode's graph, built once per chunk, outside the timing), and the faster mode builds the rest.
        No block is computed twice, and the choice is measured on the real shape, twice per mode (a
        separate probe on a loaded machine picked the mode twice as slow for this build about half
        the time)."""
        closed = self.adapter.closed_form_hessian(self.X, self.t)
        if closed is not None:
            self.hessian_route_ = "closed form"
            return 0.5 * (closed + closed.T)
        b = self.hvp_block
        starts = list(range(0, self.p, b))
        n_full = sum(1 for s in starts if s + b <= self.p)
        mode = self.hvp_kind if self.hvp_kind != "auto" else self.hvp_modes_.get("block")
        if mode is None and n_full < 4:
            mode = self.hvp_mode(min(self.p, b))  # too few blocks to time inside the build
        timings: dict[str, list[float]] = {"rev": [], "fwd": []}
        H = torch.diag(self.reg_diag())
        for Xc, tc, w in self._chunks(None):
            parts: dict[str, Any] = {}
            for bi, s in enumerate(starts):
                k = min(b, self.p - s)
                E = torch.zeros(self.p, k, dtype=self.dtype, device=self.device)
                E[torch.arange(s, s + k, device=self.device), torch.arange(k, device=self.device)] = 1
                md = mode if mode is not None else ("rev", "fwd")[bi % 2]
                try:
                    if md not in parts:
                        parts[md] = self._chunk_products(Xc, tc, w, md)
                    t0 = time.perf_counter()
                    Hb = parts[md](E)
                    dt = time.perf_counter() - t0
                except (RuntimeError, NotImplementedError):
                    if mode is not None:
                        raise
                    mode = "fwd" if md == "rev" else "rev"  # this mode cannot run the model: the other one
                    parts.pop(md, None)
                    parts[mode] = self._chunk_products(Xc, tc, w, mode)
                    Hb = parts[mode](E)
                    dt = None
                H[:, s:s + k] += Hb
                if mode is None and dt is not None:
                    timings[md].append(dt)
                    if min(len(timings["rev"]), len(timings["fwd"])) >= 2:
                        mode = min(timings, key=lambda m_: min(timings[m_]))
                        parts = {mode: parts[mode]}  # frees the other mode's graph
            if mode is None:  # cannot happen with >= 4 full blocks; kept for safety
                mode = min(timings, key=lambda m_: min(timings[m_]) if timings[m_] else float("inf"))
        if self.hvp_kind == "auto":
            self.hvp_modes_.setdefault("block", mode)
        self.hessian_route_ = f"hvp-{mode}"
        return 0.5 * (H + H.T)

    def explicit(self, kind: str = "hessian") -> torch.Tensor:
        """The explicit (p, p) Hessian (``kind="hessian"``, `hessian`) or Gauss-Newton matrix ("ggn",
        `gauss_newton`), regulariser included, no damping; when the current executor distributes the training
        split, the sum over its shards of each shard's unnormalised matrix (``hessian_route_ = "shards"``)."""
        S = self.shard_sums(_explicit_sum, kind)
        if S is None:
            if kind == "hessian":
                return self.hessian()
            self.hessian_route_ = "ggn"
            return self.gauss_newton()
        self.hessian_route_ = "shards" if kind == "hessian" else "ggn (shards)"
        H = torch.as_tensor(S).to(dtype=self.dtype, device=self.device) / self.n + torch.diag(self.reg_diag())
        return 0.5 * (H + H.T)

    def gauss_newton(self) -> torch.Tensor:
        """The explicit (p, p) generalised Gauss-Newton matrix (1/n) sum J_i^T Lambda_i J_i + reg."""
        from torch.func import jacrev

        from ..models.base import loss_from_outputs

        G = torch.zeros(self.p, self.p, dtype=self.dtype, device=self.device)
        out_fn = lambda th, x: self.adapter.outputs(unflatten(th, self.params), x.unsqueeze(0))[0].reshape(-1)
        for s in range(0, self.n, self.chunk_size):
            Xc, tc = self.X[s:s + self.chunk_size], self.t[s:s + self.chunk_size]
            J = vmap(jacrev(out_fn), in_dims=(None, 0))(self.theta, Xc)  # (B, K, p)
            with torch.no_grad():
                out = self.adapter.outputs(self.params, Xc).reshape(Xc.shape[0], -1)
            # output-space Hessian of the loss, per sample: (B, K, K)
            Lam = vmap(torch.func.hessian(lambda o, y: loss_from_outputs(self.adapter.loss, o[None], y[None])[0]))(out, tc)
            G += torch.einsum("bkp,bkl,blq->pq", J, Lam, J)
        G /= self.n
        G += torch.diag(self.reg_diag())
        return 0.5 * (G + G.T)


def _explicit_sum(adapter: ModelAdapter, shard: Split, kind: str) -> Any:
    """Shard kernel: the shard's unnormalised curvature, sum over its rows of the per-sample Hessians (or
    Gauss-Newton blocks), without the regulariser: (p, p) numpy."""
    ctx = CurvatureContext(adapter, shard)
    H = ctx.hessian() if kind == "hessian" else ctx.gauss_newton()
    return ((H - torch.diag(ctx.reg_diag())) * len(shard)).cpu().numpy()


def _hvp_sum(adapter: ModelAdapter, shard: Split, V: Any) -> Any:
    """Shard kernel: the shard's unnormalised Hessian-vector products sum_i hess l_i @ V (no regulariser)."""
    ctx = CurvatureContext(adapter, shard)
    Vt = torch.as_tensor(V).to(dtype=ctx.dtype, device=ctx.device)
    return ((ctx.hvp(Vt) - ctx.reg_diag()[:, None] * Vt) * len(shard)).cpu().numpy()


def _tree_sum(parts: list[Any]) -> Any:
    """Elementwise sum of equally nested dicts of arrays (ints of a key such as a layer's positions are equal
    across shards and kept)."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: _tree_sum([p[k] for p in parts]) for k in first}
    if isinstance(first, int):
        return first
    total = first.copy()
    for p in parts[1:]:
        total += p
    return total


class Solver:
    """Base class. Subclasses set `name`, implement `_fit(ctx)` and `_solve(V)`.

    `solve(V)` returns ``(H + damping I)^-1 V`` for V of shape (p,) or (p, k).
    """

    name = "solver"

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.ctx: CurvatureContext | None = None

    def fit(self, ctx: CurvatureContext) -> "Solver":
        self.ctx = ctx
        self._fit(ctx)
        return self

    def _fit(self, ctx: CurvatureContext) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def solve(self, V: torch.Tensor) -> torch.Tensor:
        if self.ctx is None:
            raise InputError(f"solver {self.name!r} is not fitted; call .fit(ctx) first")
        vec = V.ndim == 1
        out = self._solve(V.reshape(self.ctx.p, -1).to(self.ctx.dtype))
        return out[:, 0] if vec else out

    def _solve(self, V: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def quad(self, G: torch.Tensor) -> torch.Tensor:
        """(B,) quadratic forms g_i^T (H + damping I)^-1 g_i for rows of G (B, p)."""
        return (G * self.solve(G.T).T).sum(1)

    def describe(self) -> dict[str, Any]:
        return {"solver": self.name, "damping": self.ctx.damping if self.ctx else None, **self.options}

    def fit_report(self) -> dict[str, Any]:
        """What the fit decided (e.g. which factorisation ran), JSON-serialisable; saved in the scores'
        settings as ``solver_fit``. Empty when there is nothing to say."""
        return {}


SOLVERS: Registry[Entry] = Registry("solver")  # name -> Entry(name, Solver subclass); calling it builds the solver


def register(name: str, title: str = "", summary: str = "") -> Callable[[type], type]:
    """Class decorator adding a solver to `SOLVERS` under `name` (summary: the class docstring's first line)."""

    def deco(cls: type) -> type:
        cls.name = name
        return SOLVERS.register(name, title=title, summary=summary)(cls)

    return deco


def make_solver(name: str, **options: Any) -> Solver:
    """A solver by its name in `SOLVERS` (e.g. "exact", "cg", "ekfac"), built with `options`; an unknown
    name is the registry's one-line `InputError` with the choices."""
    return SOLVERS[name](**options)
