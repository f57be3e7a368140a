"""The final linear layer as a generalised linear model: its features, exact Hessian and leverages.

When the analysed parameters are the final nn.Linear layer of a classifier (all parameters of a logistic
regression, the head of a network), the logits are linear in them, ``z_i = theta f_i`` with ``f_i`` (q,) the
layer's input augmented by 1 for the bias and ``theta`` (K, q). The Hessian of
``(1/n) sum_i w_i l_i + reg + damping`` is then exact and small, (K q, K q):

    H = (1/n) sum_i w_i Lambda_i (x) f_i f_i^T + diag(reg + damping),   Lambda_i = d^2 l_i / dz^2  (K x K)

and the leverage blocks ``A_i = (1/n) J_i H^-1 J_i^T`` (K x K, J_i = I_K (x) f_i^T) give every sample's
leave-one-out step without a refit (`methods.mislabel`).

Both n-sized products are work over shards of the training split: a shard's partial Hessian is a sum over
its rows, its leverage blocks need only ``H^-1`` and its own rows. Locally (`LastLayer.shards` None) they run
in this process on the gathered features; on a distributed executor the same functions run as shard kernels
that recompute their shard's features (one forward pass) and return the partial sums (q, P q) or the blocks
(rows, P) (P = K (K + 1) / 2 symmetric pairs): numbers of the last layer's size, never per-sample gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data import Split
from ..data.executor import Executor, sharding
from ..data.validate import InputError
from ..grads.linear import linear_layers
from ..models.base import ModelAdapter
from .factor import Factor, factorize


def final_layer(adapter: ModelAdapter, who: str) -> tuple[str, bool, bool]:
    """(module name, has analysed weight, has analysed bias) of the one analysed nn.Linear layer."""
    layers = linear_layers(adapter)
    if layers is None or len(layers) != 1:
        raise InputError(f"{who}: the analysed parameters must be one final nn.Linear layer "
                         f"(got {adapter.param_names()[:4]}); use params='last' or 'auto'")
    name, (hw, hb) = next(iter(layers.items()))
    return name, hw, hb


def layer_features(adapter: ModelAdapter, X: torch.Tensor, name: str, chunk: int,
                   who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (n, d) of layer `name` and the model outputs (n, K); checks that the layer's output is the
    model's output (the logits are linear in the analysed parameters)."""
    module = adapter._require_fitted()
    module.eval()
    layer = dict(module.named_modules())[name]
    feats, outs = [], []
    seen: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda m, i, o: seen.update(a=i[0].detach(), z=o.detach()))
    try:
        with torch.no_grad():
            for s in range(0, X.shape[0], chunk):
                out = module(X[s:s + chunk]).reshape(min(chunk, X.shape[0] - s), -1)
                zl = seen["z"]
                if seen["a"].ndim != 2 or zl.numel() != out.numel() or not torch.equal(zl.reshape(out.shape), out):
                    raise InputError(f"{who}: layer {name!r} is not the model's output layer; the analysed "
                                     "parameters must be the final linear layer (params='last')")
                feats.append(seen["a"])
                outs.append(out)
    finally:
        handle.remove()
    return torch.cat(feats), torch.cat(outs)


def augment(a: torch.Tensor, hw: bool, hb: bool) -> torch.Tensor:
    """(n, q) float64 features of the analysed parameters: the layer input (if its weight is analysed) and a
    column of ones (if its bias is)."""
    a = a.to(torch.float64)
    ones = [torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)] if hb else []
    return torch.cat(([a] if hw else []) + ones, 1)


def output_curvature(z: torch.Tensor, loss: str) -> torch.Tensor:
    """(n, K, K) Lambda = d^2 l / dz^2 at logits z (n, K): sigma (1 - sigma) for one-logit bce, diag p - p p^T
    for softmax cross-entropy."""
    if loss == "bce":
        pr = torch.sigmoid(z[:, 0])
        return (pr * (1 - pr))[:, None, None]
    P = torch.softmax(z, 1)
    return torch.diag_embed(P) - P[:, :, None] * P[:, None, :]


SUM_CHUNK = 8_000_000  # most elements of a piece's (rows, P q) product in `pair_sums` (32-64 MB)
QUAD_CHUNK = 1_000_000  # the same for `pair_quads`


def row_pieces(m: int, block: int, per_row: int, cap: int) -> list[tuple[int, int]]:
    """(start, stop) row ranges covering m rows: blocks of `block` rows by position, each cut into equal pieces
    of at most `cap` / `per_row` rows. A shard that starts at a multiple of `block` (the Ray backend's cut)
    gets the pieces the whole split gets there, so each piece's float32 product has the same bits."""
    parts = max(1, -(-block * per_row // cap))
    step = max(1, -(-block // parts))
    return [(s, min(s + step, b + block, m)) for b in range(0, m, block) for s in range(b, min(b + block, m), step)]


def pair_sums(F: torch.Tensor, L: torch.Tensor, dtype: torch.dtype, block: int, keep: torch.Tensor | None = None,
              cap: int = SUM_CHUNK) -> torch.Tensor:
    """(q, P q) float64 sums F^T [F * L[:, k, m]] over the rows kept, for the P = K (K + 1) / 2 pairs k <= m: the
    symmetric blocks of sum_i L_i (x) f_i f_i^T, one matmul in `dtype` per piece of rows (`row_pieces`: blocks
    of `block` rows by position, cut to at most `cap` elements), added to a float64 sum.

    F : (m, q) features; L : (m, K, K) weighted output curvatures; keep : (m,) bool, the rows summed (None:
    all). Each piece's product is added to the float64 sum, so small pieces pay that addition many times
    (20,000 x 257, K = 10, float32: 3.9 s at 70 rows a piece, 1.6 s at 512)."""
    m, q = F.shape
    K = L.shape[1]
    ks, ms = torch.triu_indices(K, K, device=F.device)
    P = len(ks)
    acc = torch.zeros(q, P * q, dtype=torch.float64, device=F.device)
    for s, e in row_pieces(m, block, P * q, cap):
        rows = _kept(s, e, keep)
        if rows is None:
            continue
        Fc, Lc = F[rows].to(dtype), L[rows][:, ks, ms].to(dtype)  # only the piece's kept rows are converted
        acc += (Fc.T @ (Lc[:, :, None] * Fc[:, None, :]).reshape(len(Fc), P * q)).to(torch.float64)
    return acc


def _kept(s: int, e: int, keep: torch.Tensor | None) -> slice | torch.Tensor | None:
    """The rows s:e that `keep` keeps (a slice when all are), None when it keeps none."""
    if keep is None:
        return slice(s, e)
    idx = s + torch.nonzero(keep[s:e])[:, 0]
    return idx if len(idx) else None


def pair_blocks(Hinv: torch.Tensor, K: int, dtype: torch.dtype) -> torch.Tensor:
    """(q, P q) the blocks Hinv[k, m] (k <= m) of a (K q, K q) matrix side by side, in `dtype`."""
    q = Hinv.shape[0] // K
    ks, ms = torch.triu_indices(K, K, device=Hinv.device)
    return Hinv.reshape(K, q, K, q)[ks, :, ms, :].permute(1, 0, 2).reshape(q, -1).to(dtype)


def pair_quads(F: torch.Tensor, Hp: torch.Tensor, block: int, keep: torch.Tensor | None = None,
               cap: int = QUAD_CHUNK) -> torch.Tensor:
    """(m, P) float64 quadratic forms f_i^T Hinv[k, m] f_i for the P pairs k <= m, from `pair_blocks` Hp
    (q, P q) in its dtype, per piece of rows as in `pair_sums`; 0 at rows not kept (keep: (m,) bool)."""
    m, q = F.shape
    P = Hp.shape[1] // q
    out = torch.zeros(m, P, dtype=torch.float64, device=F.device)
    for s, e in row_pieces(m, block, P * q, cap):
        rows = _kept(s, e, keep)
        if rows is None:
            continue
        Fc = F[rows].to(Hp.dtype)
        out[rows] = ((Fc @ Hp).reshape(len(Fc), P, q) * Fc[:, None, :]).sum(-1).to(torch.float64)
    return out


def _row_weights(ids: np.ndarray, spec: tuple[float, np.ndarray, np.ndarray]) -> np.ndarray:
    """(m,) weights of the rows with these ids from a sparse spec (default, ids, values)."""
    default, sid, vals = spec
    w = np.full(len(ids), default, dtype=np.float64)
    if len(sid):
        order = np.argsort(sid, kind="stable")
        ss = sid[order]
        pos = np.minimum(np.searchsorted(ss, ids), len(ss) - 1)
        hit = ss[pos] == ids
        w[hit] = vals[order][pos[hit]]
    return w


def _shard_kernel(adapter: ModelAdapter, shard: Split, payload: tuple) -> Any:
    """Shard kernel: the features (mode "features"), the partial Hessian sums (mode "hessian": `pair_sums`
    of the rows of non-zero weight at theta) or the leverage quadratic forms (mode "leverage": `pair_quads`,
    zeros at rows of weight 0) of one shard, recomputing its features with one forward pass."""
    mode, name, chunk, hw, hb, who, rest = payload
    X, _ = adapter.tensors(shard)
    a, z = layer_features(adapter, X, name, chunk, who)
    if mode == "features":
        return a.cpu().numpy(), z.cpu().numpy()
    F = augment(a, hw, hb)
    w = torch.as_tensor(_row_weights(np.asarray(shard.ids), rest[0]), device=F.device)
    keep = w != 0
    if mode == "hessian":
        theta, loss, dtype = rest[1:]
        Lam = output_curvature(F @ torch.as_tensor(theta, device=F.device).T, loss) * w[:, None, None]
        return pair_sums(F, Lam, getattr(torch, dtype), chunk, keep).cpu().numpy()
    return pair_quads(F, torch.as_tensor(rest[1], device=F.device), chunk, keep).cpu().numpy()


@dataclass
class Shards:
    """Where a `LastLayer`'s n-sized products run: the executor distributing `train`, and what its kernels
    need to recompute a shard's features."""

    executor: Executor
    adapter: ModelAdapter
    train: Split
    name: str
    chunk: int
    hw: bool
    hb: bool
    who: str

    def map(self, mode: str, rest: tuple = ()) -> list[Any]:
        payload = (mode, self.name, self.chunk, self.hw, self.hb, self.who, rest)
        return self.executor.map_shards(_shard_kernel, self.adapter, self.train, payload)

    def weights(self, w: torch.Tensor | None, rows: torch.Tensor | None) -> tuple[float, np.ndarray, np.ndarray]:
        """The sparse spec (default, ids, values) of the row weights: w (n,) or 1 everywhere, restricted to
        `rows` (0 elsewhere) when given."""
        ids = np.asarray(self.train.ids)
        if rows is not None:
            r = rows.cpu().numpy()
            vals = np.ones(len(r)) if w is None else w[rows].cpu().numpy().astype(np.float64)
            return 0.0, ids[r], vals
        if w is None:
            return 1.0, ids[:0], np.zeros(0)
        wn = w.cpu().numpy().astype(np.float64)
        off = np.nonzero(wn != 1.0)[0]
        return 1.0, ids[off], wn[off]


@dataclass
class LastLayer:
    """The final-layer problem: logits z = F theta^T with F (n, q) augmented features, theta (K, q).

    `shards`: set when a distributed executor holds the training split; the Hessian sums and the leverage
    blocks then run as its shard kernels (the rest, O(n K q), stays here on the gathered features)."""

    F: torch.Tensor
    t: torch.Tensor
    reg: torch.Tensor  # (K q,) L2 coefficients of the regulariser, in the (class, feature) layout
    damping: float
    theta: torch.Tensor  # (K, q) fitted parameters
    loss: str
    chunk: int = 512  # rows per block of the n-sized products (`row_pieces`; the shards start at its multiples)
    shards: Shards | None = None

    def derivatives(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (n, K), residuals r = dl/dz (n, K) and output curvature Lambda = d2l/dz2 (n, K, K)."""
        z = self.F @ theta.T
        n = z.shape[0]
        if self.loss == "bce":
            pr = torch.sigmoid(z[:, 0])
            return z, (pr - self.t.to(z.dtype))[:, None], output_curvature(z, "bce")
        P = torch.softmax(z, 1)
        r = P.clone()
        r[torch.arange(n, device=z.device), self.t] -= 1
        return z, r, output_curvature(z, self.loss)

    def hessian(self, theta: torch.Tensor, w: torch.Tensor | None, rows: torch.Tensor | None = None,
                add_reg: bool = True, dtype: torch.dtype = torch.float64, Lam: torch.Tensor | None = None) -> torch.Tensor:
        """(K q, K q) Hessian (1/n) sum_i w_i Lambda_i (x) f_i f_i^T + reg + damping at `theta` (over `rows`
        only, without reg and damping, when `add_reg` is False: an update for changed weights).

        The K (K + 1) / 2 symmetric blocks come from `pair_sums` in `dtype` (accumulated in float64): here on
        the gathered features (`Lam`: the curvatures at theta, if known), or summed over the shards' kernels
        (a full build, or an update on more than an eighth of the rows).

        A small update (at most an eighth of the rows) stays in this process on every backend and sums its rows
        gathered, in pieces of `chunk` of them; anything larger sums the rows of non-zero weight in the pieces
        the shards make (by position), here or on the shards, so both backends give the same bits."""
        n, q = self.F.shape
        K = self.theta.shape[0]
        small = rows is not None and 8 * len(rows) <= n
        if self.shards is not None and not small:
            spec = self.shards.weights(w, rows)
            parts = self.shards.map("hessian", (spec, theta.cpu().numpy(), self.loss, str(dtype).split(".")[-1]))
            acc = torch.as_tensor(np.sum(parts, 0), device=self.F.device)
        else:
            L = self.derivatives(theta)[2] if Lam is None else Lam
            L = L if w is None else L * w[:, None, None]
            if small:  # a few rows scattered over many pieces would each add a (q, P q) product
                acc = pair_sums(self.F[rows], L[rows], dtype, self.chunk)
            else:
                keep = torch.ones(n, dtype=torch.bool, device=self.F.device) if w is None else w != 0
                if rows is not None:
                    only = torch.zeros(n, dtype=torch.bool, device=self.F.device)
                    only[rows] = True
                    keep = keep & only
                acc = pair_sums(self.F, L, dtype, self.chunk, keep)
        ks, ms = torch.triu_indices(K, K, device=self.F.device)
        blocks = acc.reshape(q, len(ks), q).permute(1, 0, 2)  # (P, q, q), each symmetric
        H = torch.empty(K, K, q, q, dtype=torch.float64, device=self.F.device)
        H[ks, ms] = blocks
        H[ms, ks] = blocks
        H = H.permute(0, 2, 1, 3).reshape(K * q, K * q) / n
        return H + torch.diag(self.reg + self.damping) if add_reg else H

    def leverage_blocks(self, Hinv: torch.Tensor, w: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """(n, K, K) leverage blocks A_i = (1/n) J_i Hinv J_i^T; zero at rows of weight 0 when `w` is given
        (out of sample: their shift is 0 whatever A_i)."""
        n, q = self.F.shape
        K = self.theta.shape[0]
        Hp = pair_blocks(Hinv, K, dtype)
        if self.shards is not None:
            spec = self.shards.weights(w, None)
            pairs = torch.as_tensor(np.concatenate(self.shards.map("leverage", (spec, Hp.cpu().numpy()))),
                                    device=self.F.device)
        else:
            pairs = pair_quads(self.F, Hp, self.chunk, None if w is None else w != 0)
        ks, ms = torch.triu_indices(K, K, device=self.F.device)
        A = torch.zeros(n, K, K, dtype=torch.float64, device=self.F.device)
        A[:, ks, ms] = pairs / n
        A[:, ms, ks] = pairs / n
        return A

    def gauge(self) -> torch.Tensor | None:
        """(K q,) unit vector of the uniform intercept shift when it is a null direction of H (softmax,
        unpenalised analysed intercept, no damping): it changes no probability and carries no gradient."""
        n, q = self.F.shape
        K = self.theta.shape[0]
        if self.loss == "bce" or K < 2 or self.damping > 0 or self.reg[q - 1] > 0 \
                or not torch.all(self.F[:, -1] == 1):
            return None
        u = torch.zeros(K, q, dtype=self.F.dtype, device=self.F.device)
        u[:, -1] = 1 / K**0.5
        return u.reshape(-1)

    def factor(self, H: torch.Tensor) -> Factor:
        """`factorize(H)` with the gauge direction, if any, lifted (Cholesky succeeds; the results are
        projected back, which moves logits only by a common shift); H is PSD by construction, so on the eigh
        fallback (H singular otherwise) negative eigenvalues count as round-off."""
        return factorize(H, gauge=self.gauge(), psd=True)

    def inverse(self, H: torch.Tensor) -> torch.Tensor:
        """(K q, K q) H^-1 (the pseudo-inverse H^+ where H is singular: the gauge, or the eigh fallback)."""
        return self.factor(H).inverse()

    def solve(self, H: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(K q,) H^-1 g as `inverse(H) @ g`, from the factor (no explicit inverse)."""
        return self.factor(H).solve(g)

    def gradient(self, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(K q,) gradient of (1/n) sum w_i l_i + reg + damping/2 |theta - theta_fitted|^2."""
        _, r, _ = self.derivatives(theta)
        g = (r * w[:, None]).T @ self.F / self.F.shape[0]
        return (g + self.reg.reshape(theta.shape) * theta + self.damping * (theta - self.theta)).reshape(-1)

    def newton(self, w: torch.Tensor, steps: int, start: torch.Tensor | None = None,
               H: torch.Tensor | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Parameters (K, q) after `steps` Newton steps on (1/n) sum w_i l_i + reg from `start` (default
        the fitted ones); damping enters as the proximal term damping/2 |theta - theta_fitted|^2, so H
        keeps its meaning. `H`: the Hessian at `start` and `w`, if known."""
        theta = (self.theta if start is None else start).clone()
        for k in range(steps):
            if H is None or k > 0:
                H = self.hessian(theta, w, dtype=dtype)
            theta = theta - self.solve(H, self.gradient(theta, w)).reshape(theta.shape)
        return theta


def last_layer(adapter: ModelAdapter, train: Split, damping: float, chunk_size: int, who: str) -> LastLayer:
    """The final-layer problem of a fitted classifier on `train` (features gathered from the shards when a
    distributed executor holds `train`: (n, d) and (n, K) numbers, not gradients)."""
    if adapter.classes_ is None:
        raise InputError(f"{who} needs a classifier (loss 'cross_entropy' or 'bce')")
    name, hw, hb = final_layer(adapter, who)
    ex = sharding(train)
    shards = None
    if ex is not None:
        t = adapter.encode(train.y)  # the driver needs only the labels
        shards = Shards(ex, adapter, train, name, chunk_size, hw, hb, who)
        parts = shards.map("features")
        a, z = (torch.as_tensor(np.concatenate([p[i] for p in parts])).to(adapter.device) for i in (0, 1))
    else:
        X, t = adapter.tensors(train)
        a, z = layer_features(adapter, X, name, chunk_size, who)
    z = z.to(torch.float64)
    n, K = z.shape
    F = augment(a, hw, hb)  # (n, q)
    layer = dict(adapter._require_fitted().named_modules())[name]
    theta = torch.cat(([layer.weight.detach().to(torch.float64).reshape(K, -1)] if hw else [])
                      + ([layer.bias.detach().to(torch.float64).reshape(K, 1)] if hb else []), 1)
    names = adapter.param_names()
    wname = next((nm for nm in names if nm.endswith("weight")), None)
    bname = next((nm for nm in names if nm.endswith("bias")), None)
    reg = torch.zeros(F.shape[1], dtype=torch.float64, device=F.device)
    if hw:
        reg[: a.shape[1]] = float(adapter.reg_coef.get(wname, 0.0))
    if hb:
        reg[-1] = float(adapter.reg_coef.get(bname, 0.0))
    prob = LastLayer(F, t, reg.repeat(K), float(damping), theta, adapter.loss, int(chunk_size), shards)
    if not torch.allclose(prob.F @ theta.T, z, rtol=1e-4, atol=1e-5 * (1 + z.abs().max().item())):
        raise InputError(f"{who}: layer {name!r} output is not the model's output")
    return prob
