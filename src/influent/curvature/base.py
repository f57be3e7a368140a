"""One interface for inverse-Hessian-vector products, with one damping meaning.

Every solver approximates ``(H + damping * I)^-1 V`` where

    H = (1/n) sum_i hess_theta l(z_i) + hess(regulariser)

over the analysed parameters at the fitted model (design promise 2). `damping` is absolute: it means
the same for every solver and does not scale with n or with how the user's loss is reduced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.func import grad, jvp, vmap

from ..data import Split
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
    """

    adapter: ModelAdapter
    train: Split
    damping: float = 0.0
    chunk_size: int = 512
    seed: int = 0
    store: str | Path | None = None
    _source: GradientSource | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.X, self.t = self.adapter.tensors(self.train)
        self.n = len(self.train)
        self.params = self.adapter.params()
        self.theta = flatten(self.params)
        self.p = self.theta.numel()
        self.dtype = self.adapter.dtype

    def grad_source(self) -> GradientSource:
        """Per-sample training gradients (shared, so a store is filled once)."""
        if self._source is None:
            self._source = GradientSource(self.adapter, self.train, self.chunk_size, self.store)
        return self._source

    def objective(self, theta: torch.Tensor, X: torch.Tensor, t: torch.Tensor, weight: float) -> torch.Tensor:
        """weight * sum of losses on (X, t) at flat parameters `theta` (no regulariser)."""
        return weight * self.adapter.per_sample_loss(unflatten(theta, self.params), X, t).sum()

    def hvp(self, V: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """H @ V for V (p,) or (p, k), without damping; over the rows `index` (a minibatch) or all data."""
        vec = V.ndim == 1
        V2 = V.reshape(self.p, -1).to(self.dtype)
        X, t = (self.X, self.t) if index is None else (self.X[index], self.t[index])
        m = X.shape[0]
        out = torch.zeros_like(V2)
        for s in range(0, m, self.chunk_size):
            Xc, tc = X[s:s + self.chunk_size], t[s:s + self.chunk_size]
            g = grad(lambda th: self.objective(th, Xc, tc, 1.0 / m))

            def hv(v: torch.Tensor) -> torch.Tensor:
                return jvp(g, (self.theta,), (v,))[1]

            out += vmap(hv, in_dims=1, out_dims=1)(V2)
        out += self.adapter.reg_hessian_diag()[:, None] * V2
        return out[:, 0] if vec else out

    def hessian(self, block: int = 256) -> torch.Tensor:
        """The explicit (p, p) Hessian H (no damping): the adapter's closed form where it has one,
        otherwise built from HVPs with identity blocks."""
        closed = self.adapter.closed_form_hessian(self.X, self.t)
        if closed is not None:
            return 0.5 * (closed + closed.T)
        H = torch.empty(self.p, self.p, dtype=self.dtype)
        eye = torch.eye(self.p, dtype=self.dtype)
        for s in range(0, self.p, block):
            H[:, s:s + block] = self.hvp(eye[:, s:s + block])
        return 0.5 * (H + H.T)

    def gauss_newton(self) -> torch.Tensor:
        """The explicit (p, p) generalised Gauss-Newton matrix (1/n) sum J_i^T Lambda_i J_i + reg."""
        from torch.func import jacrev

        from ..models.base import loss_from_outputs

        G = torch.zeros(self.p, self.p, dtype=self.dtype)
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
        G += torch.diag(self.adapter.reg_hessian_diag())
        return 0.5 * (G + G.T)


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
            raise RuntimeError(f"solver {self.name!r} is not fitted; call .fit(ctx) first")
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


SOLVERS: dict[str, Callable[..., Solver]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a solver to the registry under `name`."""

    def deco(cls: type) -> type:
        cls.name = name
        SOLVERS[name] = cls
        return cls

    return deco


def make_solver(name: str, **options: Any) -> Solver:
    """A solver by registry name ("identity", "exact", "cg", "lissa", "arnoldi", "kfac", "ekfac", "datainf")."""
    from ..data.validate import InputError

    if name not in SOLVERS:
        raise InputError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name](**options)
