"""K-FAC and EK-FAC for `nn.Linear` layers (our own implementation, cross-checked against curvlinops).

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
``s_i a_j`` by ``(1/n) sum_i sum_c [(Q_S^T s_ic a~_i^T Q_A)^2]`` — the exact GGN's diagonal in that
basis. Both are block-diagonal across layers (no cross-layer terms).

The regulariser is approximated as isotropic per layer: ``reg`` is the L2 coefficient of the layer's
weight (``adapter.reg_coef``). That is exact when weight and bias share one coefficient (TorchAdapter
weight decay) and approximate when the bias is unpenalised (SklearnLogistic's intercept): the bias
then receives the weight's coefficient too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..grads.linear import linear_layers
from ..models.base import ModelAdapter
from .base import CurvatureContext, Solver, register


@dataclass
class _Layer:
    """Where one nn.Linear's analysed parameters sit in the flat parameter vector."""

    name: str
    module: nn.Linear
    w: slice | None  # flat slice of the weight (d_out * d_in, row-major) or None
    b: slice | None  # flat slice of the bias (d_out,) or None
    d_out: int
    d_in: int
    reg: float

    @property
    def cols(self) -> int:
        return (self.d_in if self.w is not None else 0) + (1 if self.b is not None else 0)

    def to_mat(self, V: torch.Tensor) -> torch.Tensor:
        """(p, k) flat vectors -> (d_out, cols, k) layer matrices [W | b]."""
        k = V.shape[1]
        parts = []
        if self.w is not None:
            parts.append(V[self.w].reshape(self.d_out, self.d_in, k))
        if self.b is not None:
            parts.append(V[self.b].reshape(self.d_out, 1, k))
        return torch.cat(parts, dim=1)

    def put(self, M: torch.Tensor, out: torch.Tensor) -> None:
        """Write (d_out, cols, k) layer matrices back into the flat (p, k) `out`."""
        k = M.shape[2]
        if self.w is not None:
            out[self.w] = M[:, :self.d_in].reshape(-1, k)
        if self.b is not None:
            out[self.b] = M[:, -1].reshape(-1, k)


def kfac_layers(adapter: ModelAdapter) -> list[_Layer]:
    """The analysed nn.Linear layers, in parameter order, with their flat slices.

    Raises ValueError naming the first analysed parameter that is not an nn.Linear weight/bias.
    """
    module = adapter._require_fitted()
    modules = dict(module.named_modules())
    if linear_layers(adapter) is None:
        for pname in adapter.param_names():
            owner, _, leaf = pname.rpartition(".")
            if not isinstance(modules.get(owner), nn.Linear) or leaf not in ("weight", "bias"):
                raise ValueError(f"kfac/ekfac: analysed parameter {pname!r} is not the weight or bias of an "
                                 "nn.Linear; K-FAC here supports nn.Linear layers only (analyse fewer parameters "
                                 "with params=[...], or use the cg, arnoldi or datainf solver)")
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
        layers.append(_Layer(owner, mod, sl.get("weight"), sl.get("bias"), mod.out_features, mod.in_features, reg))
    return layers


def loss_hessian_sqrt(kind: str, out: torch.Tensor) -> torch.Tensor:
    """(B, K, C) square roots L of the per-sample output Hessians (L L^T = Lambda), from outputs (B, K)."""
    B, K = out.shape
    if kind == "cross_entropy":
        p = torch.softmax(out, dim=1)
        eye = torch.eye(K, dtype=out.dtype)
        return (eye[None] - p[:, :, None]) * p.sqrt()[:, None, :]
    if kind == "bce":
        if K != 1:
            raise ValueError(f"bce expects one output per sample, got {K}")
        s = torch.sigmoid(out)
        return (s * (1 - s)).sqrt()[:, :, None]
    if kind == "mse":
        return torch.eye(K, dtype=out.dtype).expand(B, K, K)
    raise ValueError(f"kfac/ekfac: unsupported loss {kind!r}")


def pseudo_gradients(adapter: ModelAdapter, layers: list[_Layer], X: torch.Tensor):
    """Layer inputs and backpropagated output-Hessian square-root columns for one batch.

    Returns
    -------
    acts : list over layers of (B, cols) augmented inputs a~ (a, then 1 if the bias is analysed)
    grads : list over layers of (C, B, d_out) pseudo-gradients s_ic w.r.t. the layer outputs
    """
    module = adapter._require_fitted()
    module.eval()
    store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for L in layers:
        def hook(mod, inp, out, name=L.name):
            if name in store:
                raise ValueError(f"kfac/ekfac: layer {name!r} is called more than once per forward pass")
            store[name] = (inp[0].detach(), out)
        handles.append(L.module.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            out = module(X.detach())
            out2 = out.reshape(out.shape[0], -1)
            root = loss_hessian_sqrt(adapter.loss, out2.detach())
            zs = [store[L.name][1] for L in layers]
            C = root.shape[2]
            cols = []
            for c in range(C):
                g = torch.autograd.grad((out2 * root[:, :, c]).sum(), zs, retain_graph=c < C - 1, allow_unused=True)
                cols.append([torch.zeros_like(z) if gi is None else gi.detach() for gi, z in zip(g, zs)])
    finally:
        for h in handles:
            h.remove()
    acts, grads = [], []
    for li, L in enumerate(layers):
        a = store[L.name][0]
        if a.ndim != 2 or zs[li].ndim != 2:
            raise ValueError(f"kfac/ekfac: layer {L.name!r} sees inputs of shape {tuple(a.shape)}; only 2-D "
                             "(one vector per sample) inputs are supported")
        parts = [a] if L.w is not None else []
        if L.b is not None:
            parts.append(torch.ones(a.shape[0], 1, dtype=a.dtype))
        acts.append(torch.cat(parts, dim=1))
        grads.append(torch.stack([cols[c][li] for c in range(len(cols))]))
    return acts, grads


def _pinv_values(d: torch.Tensor, rcond: float) -> torch.Tensor:
    keep = d.abs() > rcond * d.abs().max()
    return torch.where(keep, 1.0 / torch.where(keep, d, torch.ones_like(d)), torch.zeros_like(d))


@register("kfac")
class KFACSolver(Solver):
    """K-FAC inverse for nn.Linear layers (see the module docstring for the exact definition).

    Parameters
    ----------
    rcond : eigenvalues (of the damped layer approximation) with ``|d| <= rcond * max|d|`` are
            treated as zero (pseudo-inverse, as in the exact solver); None: 1e-10 (float64) / 1e-5

    Attributes
    ----------
    layers_ : per layer the flat slices; A_, S_ : the Kronecker factors (dict by layer name);
    evals_ : dict layer name -> (d_out, cols) eigenvalues of the approximate curvature (no reg, no damping)
    """

    corrected = False

    def __init__(self, rcond: float | None = None) -> None:
        super().__init__(rcond=rcond)
        self.rcond = rcond

    def _fit(self, ctx: CurvatureContext) -> None:
        self.layers_ = kfac_layers(ctx.adapter)
        A = {L.name: torch.zeros(L.cols, L.cols, dtype=ctx.dtype) for L in self.layers_}
        S = {L.name: torch.zeros(L.d_out, L.d_out, dtype=ctx.dtype) for L in self.layers_}
        for s in range(0, ctx.n, ctx.chunk_size):
            acts, grads = pseudo_gradients(ctx.adapter, self.layers_, ctx.X[s:s + ctx.chunk_size])
            for L, a, g in zip(self.layers_, acts, grads):
                A[L.name] += a.T @ a
                S[L.name] += torch.einsum("cbi,cbj->ij", g, g)
        self.A_, self.S_ = {}, {}
        self.QA_, self.QS_, self.evals_ = {}, {}, {}
        for L in self.layers_:
            self.A_[L.name] = A[L.name] / ctx.n
            self.S_[L.name] = S[L.name] / ctx.n
            a, QA = torch.linalg.eigh(self.A_[L.name])
            s, QS = torch.linalg.eigh(self.S_[L.name])
            self.QA_[L.name], self.QS_[L.name] = QA, QS
            # PSD factors: clip round-off negatives
            self.evals_[L.name] = torch.outer(s.clamp_min(0), a.clamp_min(0))
        if self.corrected:
            self._correct(ctx)
        rcond = self.rcond if self.rcond is not None else (1e-10 if ctx.dtype == torch.float64 else 1e-5)
        self.inv_ = {L.name: _pinv_values(self.evals_[L.name] + L.reg + ctx.damping, rcond) for L in self.layers_}

    def _correct(self, ctx: CurvatureContext) -> None:
        """EK-FAC: the exact GGN's diagonal in the Kronecker eigenbasis (a second data pass)."""
        E = {L.name: torch.zeros(L.d_out, L.cols, dtype=ctx.dtype) for L in self.layers_}
        for s in range(0, ctx.n, ctx.chunk_size):
            acts, grads = pseudo_gradients(ctx.adapter, self.layers_, ctx.X[s:s + ctx.chunk_size])
            for L, a, g in zip(self.layers_, acts, grads):
                # per (i, c) the rotated gradient is the rank-one (Q_S^T s_ic)(Q_A^T a_i)^T, so its square
                # factorises: sum_c (Q_S^T s_ic)^2 outer (Q_A^T a_i)^2
                u2 = ((g @ self.QS_[L.name]) ** 2).sum(0)  # (B, d_out)
                v2 = (a @ self.QA_[L.name]) ** 2  # (B, cols)
                E[L.name] += u2.T @ v2
        for L in self.layers_:
            self.evals_[L.name] = E[L.name] / ctx.n

    def _apply(self, V: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        out = torch.zeros_like(V)
        for L in self.layers_:
            QA, QS = self.QA_[L.name], self.QS_[L.name]
            M = L.to_mat(V)
            Mt = torch.einsum("so,sak,ab->obk", QS, M, QA)  # Q_S^T M Q_A
            Mt = Mt * values[L.name][:, :, None]
            L.put(torch.einsum("os,sbk,ab->oak", QS, Mt, QA), out)
        return out

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        return self._apply(V, self.inv_)

    def matvec(self, V: torch.Tensor) -> torch.Tensor:
        """The approximate curvature times V: ``(K-FAC + reg I) V``, without damping (like ``ctx.hvp``)."""
        if self.ctx is None:
            raise RuntimeError(f"solver {self.name!r} is not fitted; call .fit(ctx) first")
        vec = V.ndim == 1
        V2 = V.reshape(self.ctx.p, -1).to(self.ctx.dtype)
        out = self._apply(V2, {L.name: self.evals_[L.name] + L.reg for L in self.layers_})
        return out[:, 0] if vec else out


@register("ekfac")
class EKFACSolver(KFACSolver):
    """EK-FAC inverse for nn.Linear layers: K-FAC's eigenbasis with corrected eigenvalues
    ``(1/n) sum_i sum_c (Q_S^T s_ic a~_i^T Q_A)^2`` (George et al. 2018). Equals the exact
    Gauss-Newton matrix wherever that is diagonal in the Kronecker eigenbasis (e.g. one linear layer
    with mse loss, or a single sample). Parameters as `KFACSolver`; costs one more data pass."""

    corrected = True
