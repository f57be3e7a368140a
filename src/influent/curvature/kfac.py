"""K-FAC and EK-FAC for `nn.Linear` and `nn.Conv2d` layers (our own implementation, cross-checked
against curvlinops).

For a linear layer ``z = W a + b`` write ``a~ = [a; 1]`` (the 1 only when the bias is analysed) and
``Theta = [W, b]`` of shape (d_out, d_in + 1). The generalised Gauss-Newton ("type-2" Fisher) of
the layer is ``(1/n) sum_i sum_c vec(s_ic a~_i^T) vec(s_ic a~_i^T)^T`` where ``s_ic = J_i^T L_ic``
is the backpropagated ``c``-th column of a square root ``L_i`` of the loss's output Hessian
(``L L^T = Lambda``):

- cross entropy: ``Lambda = diag(p) - p p^T``, columns ``sqrt(p_c) (e_c - p)``;
- bce: ``sqrt(sigma (1 - sigma))``;
- mse (``0.5 |out - y|^2``): the identity.

K-FAC (Martens & Grosse 2015) replaces it by ``S (x) A`` (acting as ``Theta -> S Theta A``) with
``A = (1/n) sum_i a~_i a~_i^T`` and ``S = (1/n) sum_i sum_c s_ic s_ic^T``. With ``A = Q_A diag(a) Q_A^T``
and ``S = Q_S diag(s) Q_S^T`` the damped inverse is diagonal in the Kronecker eigenbasis, with
eigenvalues ``s_i a_j + reg + damping``. EK-FAC (George et al. 2018) keeps the basis and replaces
``s_i a_j`` by ``(1/n) sum_i sum_c [(Q_S^T G_ic Q_A)^2]`` with ``G_ic = s_ic a~_i^T`` — the exact GGN's
diagonal in that basis. Both are block-diagonal across layers (no cross-layer terms).

An ``nn.Linear`` applied at several positions of each sample (a transformer's tokens, inputs
(B, T, d_in); LoRA's low-rank matrices) is treated exactly like a convolution's T output positions
(all T positions, padding included, count in ``A``; padded tokens have zero pseudo-gradients).

Convolutions (KFC, Grosse & Martens 2016, §3; the "expand" form of Eschenhagen et al. 2023): a
``Conv2d`` is a linear layer applied at T output positions to the unfolded input patches ``a_it``
(``C_in * k_h * k_w`` values, the weight's row-major order, then the 1 of the bias); its gradient is
``G_ic = sum_t s_ict a~_it^T``. K-FAC uses ``A = (1/(n T)) sum_i sum_t a~_it a~_it^T`` and
``S = (1/n) sum_i sum_t sum_c s_ict s_ict^T`` (positions treated as independent samples, as in the
paper and in curvlinops' default); EK-FAC's eigenvalues are ``(1/n) sum_i sum_c (Q_S^T G_ic Q_A)^2``
with the full per-sample gradient. With a single output position (T = 1) a convolution is a linear
layer on its one patch, and both are exact where the linear case is.

The regulariser is approximated as isotropic per layer: ``reg`` is the L2 coefficient of the layer's
weight (``adapter.reg_coef``). That is exact when weight and bias share one coefficient (TorchAdapter
weight decay) and approximate when the bias is unpenalised (SklearnLogistic's intercept): the bias
then receives the weight's coefficient too.

All factors come from one batched pass: one forward pass per chunk and one batched backward pass for
all C columns of ``L`` (``is_grads_batched``); EK-FAC reuses that pass's inputs and pseudo-gradients
when they fit in `cache_mb`, and recomputes them otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Split
from ..data.validate import InputError, check_number
from ..models.base import ModelAdapter
from .base import CurvatureContext, Solver, register

SUPPORTED = (nn.Linear, nn.Conv2d)


@dataclass
class _Layer:
    """Where one nn.Linear's or nn.Conv2d's analysed parameters sit in the flat parameter vector."""

    name: str
    module: nn.Module
    w: slice | None  # flat slice of the weight (d_out * d_in, row-major) or None
    b: slice | None  # flat slice of the bias (d_out,) or None
    d_out: int
    d_in: int  # in_features, or in_channels * k_h * k_w for a convolution
    reg: float

    @property
    def cols(self) -> int:
        return (self.d_in if self.w is not None else 0) + (1 if self.b is not None else 0)

    def to_mats(self, Vt: torch.Tensor) -> torch.Tensor:
        """(k, p) flat vectors -> (k, d_out, cols) layer matrices [W | b]."""
        k = Vt.shape[0]
        parts = []
        if self.w is not None:
            parts.append(Vt[:, self.w].reshape(k, self.d_out, self.d_in))
        if self.b is not None:
            parts.append(Vt[:, self.b].reshape(k, self.d_out, 1))
        return torch.cat(parts, dim=2)

    def put_mats(self, M: torch.Tensor, out: torch.Tensor) -> None:
        """Write (k, d_out, cols) layer matrices back into the flat (k, p) `out`."""
        k = M.shape[0]
        if self.w is not None:
            out[:, self.w] = M[:, :, :self.d_in].reshape(k, -1)
        if self.b is not None:
            out[:, self.b] = M[:, :, -1]

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """Layer input -> (B, T, cols) augmented inputs a~ (T = 1 for a linear layer)."""
        m = self.module
        if isinstance(m, nn.Conv2d):
            a = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride).transpose(1, 2)
        elif x.ndim > 2:  # a linear layer at several positions per sample (tokens): T = all positions
            a = x.reshape(x.shape[0], -1, x.shape[-1])
        else:
            a = x[:, None, :]
        parts = [a] if self.w is not None else []
        if self.b is not None:
            parts.append(torch.ones(*a.shape[:2], 1, dtype=a.dtype, device=a.device))
        return torch.cat(parts, dim=2)

    def output_grads(self, g: torch.Tensor) -> torch.Tensor:
        """Gradients w.r.t. the layer output (C, B, d_out[, H, W]) -> (C, B, T, d_out)."""
        if isinstance(self.module, nn.Conv2d):
            return g.flatten(3).transpose(2, 3)
        if g.ndim > 3:  # nn.Linear on (B, ..., d_in) inputs: its positions as in `patches`
            return g.reshape(g.shape[0], g.shape[1], -1, g.shape[-1])
        return g[:, :, None, :]


def _check_conv(name: str, m: nn.Conv2d) -> None:
    if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
        raise InputError(f"kfac/ekfac: convolution {name!r} uses groups={m.groups}, padding={m.padding!r}, "
                         f"padding_mode={m.padding_mode!r}; supported: groups=1, zero padding given as numbers")


def kfac_layers(adapter: ModelAdapter) -> list[_Layer]:
    """The analysed nn.Linear / nn.Conv2d layers, in parameter order, with their flat slices.

    Raises InputError naming the first analysed parameter that is not such a layer's weight/bias.
    """
    module = adapter._require_fitted()
    modules = dict(module.named_modules())
    for pname in adapter.param_names():
        owner, _, leaf = pname.rpartition(".")
        if not isinstance(modules.get(owner), SUPPORTED) or leaf not in ("weight", "bias"):
            raise InputError(f"kfac/ekfac: analysed parameter {pname!r} is not the weight or bias of an "
                             "nn.Linear or nn.Conv2d; K-FAC here supports those layers only (analyse fewer "
                             "parameters with params=[...], or use the cg, arnoldi or datainf solver)")
    slices: dict[str, dict[str, slice]] = {}
    off = 0
    for pname, t in adapter.params().items():
        owner, _, leaf = pname.rpartition(".")
        slices.setdefault(owner, {})[leaf] = slice(off, off + t.numel())
        off += t.numel()
    layers = []
    for owner, sl in slices.items():
        mod = modules[owner]
        wname = f"{owner}.weight" if owner else "weight"
        bname = f"{owner}.bias" if owner else "bias"
        # isotropic per layer: the weight's coefficient (the bias's when only the bias is analysed)
        reg = float(adapter.reg_coef.get(wname if "weight" in sl else bname, 0.0))
        if isinstance(mod, nn.Conv2d):
            _check_conv(owner, mod)
            d_out, d_in = mod.out_channels, mod.weight[0].numel()
        else:
            d_out, d_in = mod.out_features, mod.in_features
        layers.append(_Layer(owner, mod, sl.get("weight"), sl.get("bias"), d_out, d_in, reg))
    return layers


def loss_hessian_sqrt(kind: str, out: torch.Tensor) -> torch.Tensor:
    """(B, K, C) square roots L of the per-sample output Hessians (L L^T = Lambda), from outputs (B, K)."""
    B, K = out.shape
    if kind == "cross_entropy":
        p = torch.softmax(out, dim=1)
        eye = torch.eye(K, dtype=out.dtype, device=out.device)
        return (eye[None] - p[:, :, None]) * p.sqrt()[:, None, :]
    if kind == "bce":
        if K != 1:
            raise InputError(f"kfac/ekfac: loss 'bce' expects one output per sample, got {K}")
        s = torch.sigmoid(out)
        return (s * (1 - s)).sqrt()[:, :, None]
    if kind == "mse":
        return torch.eye(K, dtype=out.dtype, device=out.device).expand(B, K, K)
    raise InputError(f"kfac/ekfac: unsupported loss {kind!r}")


def pseudo_gradients(adapter: ModelAdapter, layers: list[_Layer], X: torch.Tensor):
    """Layer inputs and backpropagated output-Hessian square-root columns for one batch: one forward
    pass and one batched backward pass over the C columns.

    Returns
    -------
    acts : list over layers of (B, T, cols) augmented inputs a~ (a, then 1 if the bias is analysed);
           T = 1 for a linear layer, the number of output positions for a convolution
    grads : list over layers of (C, B, T, d_out) pseudo-gradients s_ict w.r.t. the layer outputs
    """
    module = adapter._require_fitted()
    module.eval()
    store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for L in layers:
        def hook(mod, inp, out, name=L.name):
            if name in store:
                raise InputError(f"kfac/ekfac: layer {name!r} is called more than once per forward pass")
            store[name] = (inp[0].detach(), out)
        handles.append(L.module.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            out = module(X.detach())
            out2 = out.reshape(out.shape[0], -1)
            root = loss_hessian_sqrt(adapter.loss, out2.detach())  # (B, K, C)
            zs = [store[L.name][1] for L in layers]
            cols = root.permute(2, 0, 1).contiguous()  # (C, B, K)
            try:
                g = torch.autograd.grad(out2, zs, cols, is_grads_batched=True, allow_unused=True)
            except (RuntimeError, NotImplementedError):  # modules vmap cannot take: one pass per column
                per = [torch.autograd.grad(out2, zs, cols[c], retain_graph=c < cols.shape[0] - 1, allow_unused=True)
                       for c in range(cols.shape[0])]
                g = [None if per[0][i] is None else torch.stack([q[i] for q in per]) for i in range(len(zs))]
    finally:
        for h in handles:
            h.remove()
    acts, grads = [], []
    for L, gi, z in zip(layers, g, zs):
        gi = torch.zeros(cols.shape[0], *z.shape, dtype=z.dtype, device=z.device) if gi is None else gi.detach()
        acts.append(L.patches(store[L.name][0]))
        grads.append(L.output_grads(gi))
    return acts, grads


def _pinv_values(d: torch.Tensor, rcond: float) -> torch.Tensor:
    keep = d.abs() > rcond * d.abs().max()
    return torch.where(keep, 1.0 / torch.where(keep, d, torch.ones_like(d)), torch.zeros_like(d))


def factor_pass(adapter: ModelAdapter, layers: list[_Layer], X: torch.Tensor, chunk_size: int,
                cache_mb: float | None = None) -> tuple[dict[str, Any], list | None]:
    """K-FAC's first pass over the rows X: the unnormalised Kronecker factors {"A": sum a~ a~^T, "S": sum s s^T,
    "T": positions} per layer, and (``cache_mb`` given) the layer inputs and pseudo-gradients while they fit in
    that many MiB (EK-FAC's correction then needs no second pass), else None."""
    dev, dt = X.device, torch.float64  # sums in float64: the same factors whatever the chunks or shards
    A = {L.name: torch.zeros(L.cols, L.cols, dtype=dt, device=dev) for L in layers}
    S = {L.name: torch.zeros(L.d_out, L.d_out, dtype=dt, device=dev) for L in layers}
    T: dict[str, int] = {}
    cache: list | None = [] if cache_mb is not None else None
    cached = 0
    for s in range(0, X.shape[0], chunk_size):
        acts, grads = pseudo_gradients(adapter, layers, X[s:s + chunk_size])
        for L, a, g in zip(layers, acts, grads):
            T[L.name] = a.shape[1]
            a2, g2 = a.reshape(-1, a.shape[2]), g.reshape(-1, g.shape[3])
            A[L.name] += (a2.T @ a2).to(dt)
            S[L.name] += (g2.T @ g2).to(dt)
        if cache is not None:
            cached += sum(a.numel() + g.numel() for a, g in zip(acts, grads)) * acts[0].element_size()
            if cached <= cache_mb * 2**20:
                cache.append((acts, grads))
            else:
                cache = None  # too big: EK-FAC recomputes them in its pass
    return {"A": A, "S": S, "T": T}, cache


def eigen_pass(adapter: ModelAdapter, layers: list[_Layer], X: torch.Tensor, chunk_size: int,
               QA: dict[str, torch.Tensor], QS: dict[str, torch.Tensor], cache: list | None = None
               ) -> dict[str, torch.Tensor]:
    """EK-FAC's pass over the rows X: per layer the unnormalised (d_out, cols) sums of squared per-sample
    gradients rotated into the Kronecker eigenbasis, sum_i sum_c (Q_S^T s_ic a~_i^T Q_A)^2."""
    E = {L.name: torch.zeros(L.d_out, L.cols, dtype=torch.float64, device=X.device) for L in layers}  # float64 sums
    batches = cache if cache is not None else (
        pseudo_gradients(adapter, layers, X[s:s + chunk_size]) for s in range(0, X.shape[0], chunk_size))
    for acts, grads in batches:
        for L, a, g in zip(layers, acts, grads):
            u = g @ QS[L.name]  # (C, B, T, d_out): Q_S^T s_ict
            v = a @ QA[L.name]  # (B, T, cols): Q_A^T a~_it
            if a.shape[1] == 1:
                # rank one per (i, c): the square factorises, sum_c (Q_S^T s_ic)^2 outer (Q_A^T a_i)^2
                E[L.name] += ((u[:, :, 0] ** 2).sum(0).T @ (v[:, 0] ** 2)).to(torch.float64)
            else:  # per-sample gradients summed over positions, rotated, squared; chunked over samples
                step = max(1, int(2**22 // max(1, u.shape[0] * L.d_out * L.cols)))
                for b in range(0, a.shape[0], step):
                    Gr = torch.einsum("cbto,btk->cbok", u[:, b:b + step], v[b:b + step])
                    E[L.name] += (Gr**2).sum((0, 1)).to(torch.float64)
    return E


def _factor_sums(adapter: ModelAdapter, shard: Split, payload: tuple[int, None]) -> dict[str, Any]:
    """Shard kernel: `factor_pass` over one shard, as numpy partial sums."""
    X, _ = adapter.tensors(shard)
    sums, _ = factor_pass(adapter, kfac_layers(adapter), X, payload[0])
    return {"A": _np(sums["A"]), "S": _np(sums["S"]), "T": sums["T"]}


def _eigen_sums(adapter: ModelAdapter, shard: Split, payload: tuple[int, tuple[dict, dict]]) -> dict[str, Any]:
    """Shard kernel: `eigen_pass` over one shard with the driver's eigenbases, as numpy partial sums."""
    chunk_size, (QA, QS) = payload
    X, _ = adapter.tensors(shard)
    t = lambda d: {k: torch.as_tensor(v, device=X.device) for k, v in d.items()}  # noqa: E731
    return _np(eigen_pass(adapter, kfac_layers(adapter), X, chunk_size, t(QA), t(QS)))


def _np(d: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {k: v.detach().cpu().numpy() for k, v in d.items()}


def _as(x: Any, ctx: CurvatureContext, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.as_tensor(x).to(dtype=dtype or ctx.dtype, device=ctx.device)


@register("kfac")
class KFACSolver(Solver):
    """K-FAC inverse for nn.Linear and nn.Conv2d layers (see the module docstring for the exact definition).

    Parameters
    ----------
    rcond : eigenvalues (of the damped layer approximation) with ``|d| <= rcond * max|d|`` are
            treated as zero (pseudo-inverse, as in the exact solver); None: 1e-10 (float64) / 1e-5
    cache_mb : EK-FAC keeps the first pass's layer inputs and pseudo-gradients up to this size for its
               eigenvalue correction (one data pass); beyond it, it makes a second pass

    Attributes
    ----------
    layers_ : per layer the flat slices; A_, S_ : the Kronecker factors (dict by layer name);
    evals_ : dict layer name -> (d_out, cols) eigenvalues of the approximate curvature (no reg, no damping)
    """

    corrected = False

    def __init__(self, rcond: float | None = None, cache_mb: float = 512.0) -> None:
        super().__init__(rcond=rcond)
        self.rcond = check_number(rcond, f"{self.name}: rcond", low=0, none=True)
        self.cache_mb = check_number(cache_mb, f"{self.name}: cache_mb", low=0)

    def _fit(self, ctx: CurvatureContext) -> None:
        self.layers_ = kfac_layers(ctx.adapter)
        cache_mb = self.cache_mb if self.corrected else None
        sums = ctx.shard_sums(_factor_sums, (ctx.chunk_size, None))  # distributed: partial sums per shard
        cache = None
        if sums is None:
            sums, cache = factor_pass(ctx.adapter, self.layers_, ctx.X, ctx.chunk_size, cache_mb)
        A, S, T = sums["A"], sums["S"], sums["T"]
        self.A_, self.S_ = {}, {}
        self.QA_, self.QS_, self.evals_ = {}, {}, {}
        for L in self.layers_:
            A64 = _as(A[L.name], ctx, torch.float64) / (ctx.n * int(T[L.name]))  # eigenbases from the float64 sums
            S64 = _as(S[L.name], ctx, torch.float64) / ctx.n
            self.A_[L.name], self.S_[L.name] = A64.to(ctx.dtype), S64.to(ctx.dtype)
            a, QA = torch.linalg.eigh(A64)
            s, QS = torch.linalg.eigh(S64)
            self.QA_[L.name], self.QS_[L.name] = QA.to(ctx.dtype), QS.to(ctx.dtype)
            # PSD factors: clip round-off negatives
            self.evals_[L.name] = torch.outer(s.clamp_min(0), a.clamp_min(0)).to(ctx.dtype)
        if self.corrected:
            self._correct(ctx, cache)
        rcond = self.rcond if self.rcond is not None else (1e-10 if ctx.dtype == torch.float64 else 1e-5)
        self.inv_ = {L.name: _pinv_values(self.evals_[L.name] + L.reg + ctx.damping, rcond) for L in self.layers_}

    def _correct(self, ctx: CurvatureContext, cache: list | None) -> None:
        """EK-FAC: the exact GGN's diagonal in the Kronecker eigenbasis (from the cached first pass,
        or a second data pass; distributed: partial sums per shard)."""
        E = None
        if ctx.distributed:
            bases = ({k: v.cpu().numpy() for k, v in self.QA_.items()}, {k: v.cpu().numpy() for k, v in self.QS_.items()})
            E = ctx.shard_sums(_eigen_sums, (ctx.chunk_size, bases))
        if E is None:
            E = eigen_pass(ctx.adapter, self.layers_, ctx.X, ctx.chunk_size, self.QA_, self.QS_, cache)
        for L in self.layers_:
            self.evals_[L.name] = _as(E[L.name], ctx) / ctx.n

    def _apply(self, V: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        Vt = V.T.contiguous()  # (k, p): each layer's k matrices [W | b] are then contiguous
        out = torch.zeros_like(Vt)
        for L in self.layers_:
            QA, QS = self.QA_[L.name], self.QS_[L.name]
            M = L.to_mats(Vt)  # (k, d_out, cols)
            Mt = (QS.T @ M @ QA) * values[L.name]  # Q_S^T M Q_A, scaled in the Kronecker eigenbasis
            L.put_mats(QS @ Mt @ QA.T, out)
        return out.T.contiguous()

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        return self._apply(V, self.inv_)

    def pairwise(self, train, test) -> torch.Tensor | None:
        """(n, m) products ``g_i^T (K + reg + damping)^-1 h_j`` between two `GradientSource`s, or None.

        Where every layer is linear on 2-D inputs, a per-sample gradient is rank one per layer,
        ``delta a~^T``, and so is its rotation into the Kronecker eigenbasis, ``(Q_S^T delta)(Q_A^T a~)^T``
        (``d_out^2 + cols^2`` per sample instead of the ``d_out cols (d_out + cols)`` of a dense rotation).
        The inverse is diagonal there, so no (p, m) solve is needed: one matrix product per chunk of
        rotated training gradients against the rotated, scaled test gradients (m, p)."""
        from ..grads.linear import factors

        if not (train.factorised and test.factorised) or any(not isinstance(L.module, nn.Linear)
                                                              for L in self.layers_):
            return None

        width = sum(L.d_out * L.cols for L in self.layers_)

        def rotated(src, sl) -> torch.Tensor:  # (B, p') rotated gradients, layer by layer
            fs = {f.name: f for f in factors(src.adapter, src.X[sl], src.t[sl], src.layers)}
            buf = None
            off = 0
            for L in self.layers_:
                f = fs[L.name]
                cols = [f.a] if L.w is not None else []
                if L.b is not None:
                    cols.append(torch.ones(f.a.shape[0], 1, dtype=f.a.dtype, device=f.a.device))
                u = f.delta @ self.QS_[L.name]
                v = torch.cat(cols, dim=1) @ self.QA_[L.name]
                if buf is None:
                    buf = torch.empty(u.shape[0], width, dtype=u.dtype, device=u.device)
                d = L.d_out * L.cols
                # the outer products written in place: no per-layer temporaries, no concatenation copy
                torch.mul(u[:, :, None], v[:, None, :], out=buf[:, off:off + d].view(u.shape[0], L.d_out, L.cols))
                off += d
            return buf

        scale = torch.cat([self.inv_[L.name].reshape(-1) for L in self.layers_])
        R = torch.cat([rotated(test, sl) for sl in test._slices()]) * scale  # (m, p')
        out = torch.empty(train.n, test.n, dtype=R.dtype, device=R.device)
        for sl in train._slices():
            out[sl] = rotated(train, sl) @ R.T
        return out

    def matvec(self, V: torch.Tensor) -> torch.Tensor:
        """The approximate curvature times V: ``(K-FAC + reg I) V``, without damping (like ``ctx.hvp``)."""
        if self.ctx is None:
            raise InputError(f"solver {self.name!r} is not fitted; call .fit(ctx) first")
        vec = V.ndim == 1
        V2 = V.reshape(self.ctx.p, -1).to(self.ctx.dtype)
        out = self._apply(V2, {L.name: self.evals_[L.name] + L.reg for L in self.layers_})
        return out[:, 0] if vec else out


@register("ekfac")
class EKFACSolver(KFACSolver):
    """EK-FAC inverse for nn.Linear and nn.Conv2d layers: K-FAC's eigenbasis with corrected eigenvalues
    ``(1/n) sum_i sum_c (Q_S^T s_ic a~_i^T Q_A)^2`` (George et al. 2018). Equals the exact
    Gauss-Newton matrix wherever that is diagonal in the Kronecker eigenbasis (e.g. one linear layer
    with mse loss, or a single sample). Parameters as `KFACSolver`; costs one more data pass."""

    corrected = True
