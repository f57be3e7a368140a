"""Per-sample gradients of the loss w.r.t. the analysed parameters: torch.func vmap, with a loop fallback."""

from __future__ import annotations

import torch
from torch.func import grad, jvp, vmap

from ..data.validate import check_choice
from ..models.base import ModelAdapter, Params


def flatten(params: Params) -> torch.Tensor:
    """Concatenate a parameter dict into one vector (p,)."""
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten(vec: torch.Tensor, like: Params) -> Params:
    """Split a vector (p,) back into a dict shaped like `like`."""
    out, i = {}, 0
    for n, p in like.items():
        out[n] = vec[i:i + p.numel()].reshape(p.shape)
        i += p.numel()
    return out


def flat_per_sample(grads: Params) -> torch.Tensor:
    """Dict of per-sample gradients (B, *shape) -> matrix (B, p)."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)


def per_sample_grads_vmap(adapter: ModelAdapter, params: Params, X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, p) per-sample gradients with torch.func.vmap over single-sample losses."""

    def one(p: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return adapter.per_sample_loss(p, x.unsqueeze(0), y.unsqueeze(0))[0]

    return flat_per_sample(vmap(grad(one), in_dims=(None, 0, 0))(params, X, t))


def per_sample_grads_loop(adapter: ModelAdapter, params: Params, X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, p) per-sample gradients, one backward pass per sample (for modules vmap cannot take)."""
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    rows = []
    for i in range(X.shape[0]):
        loss = adapter.per_sample_loss(leaves, X[i:i + 1], t[i:i + 1])[0]
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(leaves.values()))]))
    return torch.stack(rows)


def per_sample_grads(adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor, params: Params | None = None,
                     method: str = "auto") -> torch.Tensor:
    """(B, p) per-sample gradients at `params` (default: the adapter's fitted parameters).

    method: "vmap", "loop", or "auto" (vmap, falling back to the loop when vmap cannot run the module).
    """
    check_choice(method, ("auto", "vmap", "loop"), "grad_method")
    params = adapter.params() if params is None else params
    if method == "loop":
        return per_sample_grads_loop(adapter, params, X, t)
    try:
        return per_sample_grads_vmap(adapter, params, X, t)
    except (RuntimeError, NotImplementedError):
        if method == "vmap":
            raise
        return per_sample_grads_loop(adapter, params, X, t)


def directional_losses(adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor, v: Params,
                       params: Params | None = None) -> torch.Tensor:
    """(B,) the products g_i . v for every sample in one forward-mode pass (jvp)."""
    params = adapter.params() if params is None else params
    _, tangent = jvp(lambda p: adapter.per_sample_loss(p, X, t), (params,), (v,))
    return tangent


def mean_grad(adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor, params: Params | None = None,
              chunk_size: int = 4096) -> torch.Tensor:
    """(p,) gradient of the mean loss over (X, t), chunked."""
    params = adapter.params() if params is None else params
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    total = torch.zeros(sum(p.numel() for p in params.values()), dtype=adapter.dtype, device=adapter.device)
    n = X.shape[0]
    for s in range(0, n, chunk_size):
        loss = adapter.per_sample_loss(leaves, X[s:s + chunk_size], t[s:s + chunk_size]).sum() / n
        total += torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(leaves.values()))])
    return total
