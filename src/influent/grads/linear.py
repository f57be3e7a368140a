"""Factorised per-sample gradients of linear layers.

For ``z = W a + b`` the per-sample gradient is ``dW_i = delta_i a_i^T`` and ``db_i = delta_i``, with
``delta_i = d l_i / d z_i``. Hence ``<g_i, g_j> = sum_layers (delta_i . delta_j) * (a_i . a_j + [bias])``,
and ``g_i . v = sum_layers delta_i^T V_W a_i + delta_i . v_b``: neither needs the (B, p) gradient matrix.

A layer applied at T positions of each sample (a transformer's tokens: inputs (B, T, d_in)) has
``dW_i = sum_t delta_it a_it^T`` and ``db_i = sum_t delta_it``. Its factors keep the token axis, and each
product is formed one layer at a time from the cheaper of two exact forms: the layer's own per-sample
block ``dW_i`` (B, d_out * d_in) — small for LoRA's low-rank matrices — or, for the Gram matrix, the
token form ``sum_{t,s} (delta_it . delta_js)(a_it . a_js)``. The (B, p) matrix over all layers is never built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.validate import InputError
from ..models.base import ModelAdapter, loss_from_outputs, output_grad


@dataclass
class LayerFactors:
    """Factors of one linear layer for a batch: inputs `a` (B, d_in) and output gradients `delta` (B, d_out)."""

    name: str
    a: torch.Tensor
    delta: torch.Tensor
    has_weight: bool
    has_bias: bool

    @property
    def tokens(self) -> bool:
        """True when `a` (B, T, d_in) and `delta` (B, T, d_out) keep a token axis."""
        return self.a.ndim == 3

    def block(self) -> torch.Tensor:
        """(B, d_out * d_in [+ d_out]) this layer's per-sample gradients (weight, then bias)."""
        parts = []
        if self.has_weight:
            w = (torch.einsum("bto,bti->boi", self.delta, self.a) if self.tokens
                 else torch.einsum("bo,bi->boi", self.delta, self.a))
            parts.append(w.reshape(self.a.shape[0], -1))
        if self.has_bias:
            parts.append(self.delta.sum(1) if self.tokens else self.delta)
        return torch.cat(parts, dim=1)


def linear_layers(adapter: ModelAdapter) -> dict[str, tuple[bool, bool]] | None:
    """{module name: (weight analysed, bias analysed)} if every analysed parameter belongs to an
    `nn.Linear`; None otherwise (the factorised path does not apply)."""
    module = adapter._require_fitted()
    names = set(adapter.param_names())
    modules = dict(module.named_modules())
    layers: dict[str, tuple[bool, bool]] = {}
    for pname in names:
        owner, _, leaf = pname.rpartition(".")
        m = modules.get(owner)
        if not isinstance(m, nn.Linear) or leaf not in ("weight", "bias"):
            return None
        layers[owner] = (f"{owner}.weight" in names if owner else "weight" in names,
                         f"{owner}.bias" in names if owner else "bias" in names)
    return layers


FACTOR_ROWS_MAX = 65536  # rows per block of the factorised products, at most


def factor_block_rows(chunk_size: int, p: int, row_width: int, whole_model: bool = True) -> int:
    """Rows per block of a factorised product: as many as fit the memory of `chunk_size` gradient rows
    (chunk_size * p numbers) when each row costs `row_width` numbers (the layer factors plus the product's
    own per-row terms), between `chunk_size` and max(chunk_size, FACTOR_ROWS_MAX). Fewer, larger blocks
    cut the per-block cost of the forward and backward pass; the rows' results do not depend on it.
    Only when the analysed layers are the `whole_model`: a model with parameters outside them (a linear head
    on a network) spends memory on its forward pass that `row_width` does not count, so it keeps
    `chunk_size` rows per block."""
    chunk_size = max(1, int(chunk_size))
    if not whole_model:
        return chunk_size
    rows = chunk_size * int(p) // max(1, int(row_width))
    return int(min(max(rows, chunk_size), max(chunk_size, FACTOR_ROWS_MAX)))


def analyses_whole_model(adapter: ModelAdapter) -> bool:
    """Whether the analysed parameters are all of the module's parameters."""
    return adapter.n_params() == sum(q.numel() for q in adapter._require_fitted().parameters())


def factor_row_width(fa: list[LayerFactors], k: int = 0) -> int:
    """Numbers per sample that the factorised products hold for the factors `fa` of a batch: the layer inputs
    and output gradients (token positions included), the per-sample block of a layer at token positions
    (d_out * d_in + d_out), and for products with k directions their (k, d_out) terms."""
    width = 0
    for lf in fa:
        d_out, d_in = lf.delta.shape[-1], lf.a.shape[-1]
        width += lf.a[0].numel() + lf.delta[0].numel() + int(k) * d_out
        if lf.tokens:
            width += d_out * d_in + d_out
    return width


def factors(adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor,
            layers: dict[str, tuple[bool, bool]]) -> list[LayerFactors]:
    """Run forward and one backward pass; return the factors of each analysed linear layer.

    Requires 2-D inputs to each layer (one activation vector per sample) and no cross-sample coupling
    in the module (e.g. batch norm in training mode).
    """
    module = adapter._require_fitted()
    module.eval()
    modules = dict(module.named_modules())
    store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name in layers:
        def hook(mod, inp, out, name=name):
            store[name] = (inp[0].detach(), out)
        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.enable_grad():
            out = module(X.detach())
            outs = [store[n][1] for n in layers]
            if all(o is out for o in outs):  # the analysed layer gives the model's output: delta in closed form
                deltas = [output_grad(adapter.loss, out.detach(), t)] * len(outs)
            else:
                losses = loss_from_outputs(adapter.loss, out, t)
                deltas = torch.autograd.grad(losses.sum(), outs)
    finally:
        for h in handles:
            h.remove()
    result = []
    for (name, (hw, hb)), d in zip(layers.items(), deltas):
        a, d = store[name][0], d.detach()
        if a.ndim > 2:  # applied at several positions per sample (tokens): keep one token axis
            a, d = a.reshape(a.shape[0], -1, a.shape[-1]), d.reshape(d.shape[0], -1, d.shape[-1])
        elif a.ndim != 2:
            raise InputError(f"layer {name!r} sees inputs of shape {tuple(a.shape)}; factorised path needs 2-D")
        result.append(LayerFactors(name, a, d, hw, hb))
    return result


def factor_gram(fa: list[LayerFactors], fb: list[LayerFactors]) -> torch.Tensor:
    """(B_a, B_b) inner products of per-sample gradients from two factor lists."""
    total = None
    for la, lb in zip(fa, fb):
        if la.tokens or lb.tokens:
            term = _token_gram(la, lb)
            total = term if total is None else total + term
            continue
        dd = la.delta @ lb.delta.T
        term = dd * (la.a @ lb.a.T) if la.has_weight else torch.zeros_like(dd)
        if la.has_bias:
            term = term + dd
        total = term if total is None else total + term
    assert total is not None
    return total


def _token_gram(la: LayerFactors, lb: LayerFactors) -> torch.Tensor:
    """(B_a, B_b) Gram block of one layer applied at several positions: from the per-sample blocks, or
    from token products ``sum_{t,s} (delta_it . delta_js)(a_it . a_js)`` when those cost less."""
    Ta, Tb = la.delta.shape[1], lb.delta.shape[1]
    d_out, d_in = la.delta.shape[-1], la.a.shape[-1]
    if not la.has_weight or d_out * d_in <= Ta * Tb * (d_out + d_in):
        return la.block() @ lb.block().T
    dd = torch.einsum("bto,cso->btcs", la.delta, lb.delta)
    term = (dd * torch.einsum("bti,csi->btcs", la.a, lb.a)).sum((1, 3))
    if la.has_bias:
        term = term + dd.sum((1, 3))
    return term


def factor_sq_norms(fa: list[LayerFactors]) -> torch.Tensor:
    """(B,) squared norms |g_i|^2 of the per-sample gradients from factors."""
    total = None
    for lf in fa:
        if lf.tokens:
            term = (lf.block() ** 2).sum(1)
        else:
            term = (lf.delta**2).sum(1) * ((lf.a**2).sum(1) * lf.has_weight + lf.has_bias)
        total = term if total is None else total + term
    assert total is not None
    return total


def factor_dot(fa: list[LayerFactors], v: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, k) products g_i . v_j for k stacked directions: `v` maps ``<layer>.weight`` to (k, d_out, d_in)
    and ``<layer>.bias`` to (k, d_out).

    A layer on 2-D inputs uses ``g_i . v_j = delta_i . (V_j a_i + b_j)``: one (B, d_in) x (d_in, k d_out)
    product, never the (B, d_out d_in) weight gradients, unless k > d_in (then those gradients, B d_out d_in,
    take less memory than the (B, k, d_out) products).
    """
    total = None
    k = next(iter(v.values())).shape[0]
    for lf in fa:
        prefix = f"{lf.name}." if lf.name else ""
        if lf.tokens:  # the layer's per-sample block (d_out * d_in per sample) times the directions
            parts = ([v[prefix + "weight"].reshape(k, -1)] if lf.has_weight else []) + (
                [v[prefix + "bias"]] if lf.has_bias else [])
            term = lf.block() @ torch.cat(parts, dim=1).T
        elif lf.has_weight and k <= lf.a.shape[1]:  # (B, k, d_out) = V_j a_i [+ b_j], then . delta_i
            B, d_out = lf.delta.shape
            U = (lf.a @ v[prefix + "weight"].reshape(k * d_out, -1).T).reshape(B, k, d_out)
            if lf.has_bias:
                U += v[prefix + "bias"]
            term = (U * lf.delta[:, None, :]).sum(2)
        else:
            term = torch.zeros(lf.a.shape[0], k, dtype=lf.a.dtype, device=lf.a.device)
            if lf.has_weight:  # the chunk's (B, d_out * d_in) weight gradients, then one matrix product
                G = (lf.delta[:, :, None] * lf.a[:, None, :]).reshape(lf.a.shape[0], -1)
                term = term + G @ v[prefix + "weight"].reshape(k, -1).T
            if lf.has_bias:
                term = term + lf.delta @ v[prefix + "bias"].T
        total = term if total is None else total + term
    assert total is not None
    return total


def module_chain(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]] | None:
    """The module as the chain of (name, submodule) its forward runs one after another: an `nn.Linear`
    itself, or an `nn.Sequential` (nested ones unrolled) whose forward is Sequential's own; None for any other
    module, or when a module in the chain carries forward hooks (which the fused pass would skip)."""
    if module._forward_hooks or module._forward_pre_hooks:
        return None
    if type(module).forward is nn.Linear.forward:
        return [(prefix, module)]
    if type(module).forward is not nn.Sequential.forward:
        return None
    chain: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        sub = module_chain(child, full) if isinstance(child, (nn.Linear, nn.Sequential)) else [(full, child)]
        if sub is None:
            return None
        chain += sub
    return chain


def fused_dot(adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor, layers: dict[str, tuple[bool, bool]],
              v: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """(B, k) products g_i . v_j as `factor_dot(factors(...), v)` gives them, with each analysed layer's
    forward product and its directions' product ``V_j a_i`` fused into one (B, d_in) x (d_in, (1 + k) d_out)
    product: the layer inputs are read once. Applies when the module is a chain (`module_chain`) whose
    analysed layers see 2-D inputs; None otherwise (the caller takes the hooked path). The output layer's
    delta is closed-form when it is the only analysed layer; otherwise one backward pass to the layer outputs."""
    module = adapter._require_fitted()
    chain = module_chain(module)
    k = next(iter(v.values())).shape[0]
    mods = dict(chain or [])
    if chain is None or not all(name in mods for name in layers):
        return None
    if any(hw and k > mods[name].weight.shape[1] for name, (hw, _) in layers.items()):
        return None  # more directions than inputs: factor_dot's weight-gradient form takes less memory
    module.eval()
    closed = len(layers) == 1 and chain[-1][0] in layers
    x, zs, us = X.detach(), [], []
    with torch.enable_grad() if not closed else torch.no_grad():
        for name, m in chain:
            if name not in layers:
                x = m(x)
                continue
            if x.ndim != 2:
                return None
            hw, hb = layers[name]
            prefix = f"{name}." if name else ""
            W = m.weight.detach()
            d_out = W.shape[0]
            M = torch.cat([W, v[prefix + "weight"].reshape(k * d_out, -1)]) if hw else W
            Z = x @ M.T
            z = Z[:, :d_out] + m.bias.detach() if m.bias is not None else Z[:, :d_out]
            if not closed and not z.requires_grad:
                z = z.detach().requires_grad_()
            u = Z[:, d_out:].detach().reshape(-1, k, d_out) if hw else None
            if hb:
                vb = v[prefix + "bias"]
                u = vb.expand(x.shape[0], k, d_out) if u is None else u + vb
            zs.append(z)
            us.append(u)
            x = z
        if closed:
            deltas = [output_grad(adapter.loss, x, t)]
        else:
            deltas = torch.autograd.grad(loss_from_outputs(adapter.loss, x, t).sum(), zs)
    total = None
    for u, d in zip(us, deltas):
        term = (u * d.detach()[:, None, :]).sum(2)
        total = term if total is None else total + term
    return total


def factor_grads(fa: list[LayerFactors], order: list[str]) -> torch.Tensor:
    """(B, p) per-sample gradients rebuilt from factors, in the adapter's parameter order."""
    parts: dict[str, torch.Tensor] = {}
    for lf in fa:
        prefix = f"{lf.name}." if lf.name else ""
        if lf.tokens:
            blk, w = lf.block(), lf.delta.shape[-1] * lf.a.shape[-1] * lf.has_weight
            if lf.has_weight:
                parts[prefix + "weight"] = blk[:, :w]
            if lf.has_bias:
                parts[prefix + "bias"] = blk[:, w:]
            continue
        if lf.has_weight:
            parts[prefix + "weight"] = torch.einsum("bo,bi->boi", lf.delta, lf.a).reshape(lf.a.shape[0], -1)
        if lf.has_bias:
            parts[prefix + "bias"] = lf.delta
    return torch.cat([parts[n] for n in order], dim=1)
