"""`mislabel`: which training labels are wrong, from leave-one-out probabilities without refits.

A flipped label is one the rest of the data disagrees with. The fitted model has partly memorised
it, so its in-sample probability of the given label hides the error; cleanlab therefore asks for
out-of-sample probabilities from K refits (K-fold cross-validation). Influence functions give every
sample its own leave-one-out model for the price of one Hessian: removing z_i from the objective
``(1/n) sum_j l_j + reg`` and taking one Newton step from the fitted theta gives

    theta_{-i} = theta + (1/n) H_{-i}^{-1} g_i,     H_{-i} = H - (1/n) J_i^T Lambda_i J_i

(the Newton step *on the leave-one-out objective*, whose Hessian lacks sample i's own term; with the full
H instead of H_{-i} this is the classical influence step). When the analysed parameters are the final
linear layer (all parameters of a logistic regression, the last layer of a network) the logits are
linear in them, so the leave-one-out logits of sample i are, exactly for that Newton step,

    z_{-i} = z_i + A_i (I - Lambda_i A_i)^{-1} r_i,     A_i = (1/n) J_i H^{-1} J_i^T   (K x K)

with r_i = dl/dz (p_i - e_{y_i}), Lambda_i = d^2 l/dz^2 (diag p - p p^T) and J_i the logit Jacobian
(Woodbury on the rank-K term). All n leave-one-out models cost one (Kq x Kq) inverse and a batched
K x K solve per sample (q = features + intercept): no refit. For logistic regression this is the
approximate leave-one-out of Rad & Maleki ("A scalable estimate of the out-of-sample prediction error
via approximate leave-one-out", JRSS-B 2020), accurate to second order in the step.

The leave-one-out probabilities P_{-i} = softmax(z_{-i}) are then scored like cleanlab's label quality
(Northcutt, Jiang, Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021,
sec. 2-3), optionally with confident learning's per-class thresholds t_k = mean of P_{-i}(k) over samples
labelled k (each class's self-confidence, which corrects classes the model is systematically unsure of).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..curvature.factor import Factor, factorize
from ..data import Split
from ..data.executor import sharding
from ..data.validate import InputError, check_choice, check_damping, check_number, unknown_name
from ..grads.linear import linear_layers
from ..models.base import ModelAdapter, resolve_params
from .options import MethodOptions, check_params, opt
from .registry import Job, Result, register_method

KINDS = ("margin", "self-confidence", "entropy")


@dataclass
class LeaveOneOut:
    """Fitted and leave-one-out outputs of the training samples.

    Attributes
    ----------
    logits : (n, K) outputs of the fitted model (K = 1 for a binary one-logit model)
    loo_logits : (n, K) outputs of sample i's own leave-one-out model at x_i
    leverage : (n,) trace of Lambda_i A_i (the sample's share of the curvature; in [0, K))
    classes : (C,) class labels of the probability columns (C = 2 for a one-logit model)
    labels : (n,) column index of each sample's given label
    loss : "cross_entropy" (softmax over K logits) or "bce" (one logit)
    theta : (K, q) final-layer parameters [weight | bias] of the last round (the fitted ones without rounds)
    weights : (n,) sample weights of the last round (1 = in the objective, 0 = flagged)
    rounds_rejected : True when `leave_one_out(check=True)` returned the fitted model's leave-one-out
        outputs because the rounds lowered the out-of-sample accuracy of the given labels
    """

    logits: np.ndarray
    loo_logits: np.ndarray
    leverage: np.ndarray
    classes: np.ndarray
    labels: np.ndarray
    loss: str
    theta: np.ndarray | None = None
    weights: np.ndarray | None = None
    rounds_rejected: bool = False

    def proba(self, loo: bool = True) -> np.ndarray:
        """(n, C) class probabilities, leave-one-out (default) or in-sample."""
        z = torch.as_tensor(self.loo_logits if loo else self.logits)
        if self.loss == "bce":
            p = torch.sigmoid(z[:, 0])
            return torch.stack([1 - p, p], 1).numpy()
        return torch.softmax(z, 1).numpy()


def _final_layer(adapter: ModelAdapter) -> tuple[str, bool, bool]:
    layers = linear_layers(adapter)
    if layers is None or len(layers) != 1:
        raise InputError("mislabel: the analysed parameters must be one final nn.Linear layer "
                         f"(got {adapter.param_names()[:4]}); use params='last' or 'auto'")
    name, (hw, hb) = next(iter(layers.items()))
    return name, hw, hb


def _features(adapter: ModelAdapter, X: torch.Tensor, name: str, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
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
                    raise InputError(f"mislabel: layer {name!r} is not the model's output layer; the analysed "
                                     "parameters must be the final linear layer (params='last')")
                feats.append(seen["a"])
                outs.append(out)
    finally:
        handle.remove()
    return torch.cat(feats), torch.cat(outs)


@dataclass
class _LastLayer:
    """The final-layer problem: logits z = F theta^T with F (n, q) augmented features, theta (K, q)."""

    F: torch.Tensor
    t: torch.Tensor
    reg: torch.Tensor  # (K q,) L2 coefficients of the regulariser, in the (class, feature) layout
    damping: float
    theta: torch.Tensor  # (K, q) fitted parameters
    loss: str

    def derivatives(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (n, K), residuals r = dl/dz (n, K) and output curvature Lambda = d2l/dz2 (n, K, K)."""
        z = self.F @ theta.T
        n = z.shape[0]
        if self.loss == "bce":
            pr = torch.sigmoid(z[:, 0])
            return z, (pr - self.t.to(z.dtype))[:, None], (pr * (1 - pr))[:, None, None]
        P = torch.softmax(z, 1)
        r = P.clone()
        r[torch.arange(n, device=z.device), self.t] -= 1
        return z, r, torch.diag_embed(P) - P[:, :, None] * P[:, None, :]

    def hessian(self, Lam: torch.Tensor, w: torch.Tensor | None, rows: torch.Tensor | None = None,
                add_reg: bool = True, dtype: torch.dtype = torch.float64,
                chunk_elems: int = 1_000_000) -> torch.Tensor:
        """(K q, K q) Hessian (1/n) sum_i w_i Lambda_i (x) f_i f_i^T + reg + damping (over `rows` only,
        without reg and damping, when `add_reg` is False: an update for changed weights).

        All K (K + 1) / 2 symmetric blocks F^T diag(Lambda[:, k, m]) F come from one matmul
        F^T [F * Lambda[:, k, m]]_{k <= m} per chunk of rows, in `dtype` (accumulated in float64)."""
        n, q = self.F.shape
        K = Lam.shape[1]
        L = Lam if w is None else Lam * w[:, None, None]
        F = self.F if rows is None else self.F[rows]
        L = L if rows is None else L[rows]
        dev = self.F.device
        ks, ms = torch.triu_indices(K, K, device=dev)
        Lp, F = L[:, ks, ms].to(dtype), F.to(dtype)  # (m, P)
        P = len(ks)
        acc = torch.zeros(q, P * q, dtype=torch.float64, device=dev)
        step = max(1, int(chunk_elems // max(1, P * q)))
        for s in range(0, len(F), step):
            Fc = F[s:s + step]
            acc += (Fc.T @ (Lp[s:s + step, :, None] * Fc[:, None, :]).reshape(len(Fc), P * q)).to(torch.float64)
        blocks = acc.reshape(q, P, q).permute(1, 0, 2)  # (P, q, q), each symmetric
        H = torch.empty(K, K, q, q, dtype=torch.float64, device=dev)
        H[ks, ms] = blocks
        H[ms, ks] = blocks
        H = H.permute(0, 2, 1, 3).reshape(K * q, K * q) / n
        return H + torch.diag(self.reg + self.damping) if add_reg else H

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
               H: torch.Tensor | None = None) -> torch.Tensor:
        """Parameters (K, q) after `steps` Newton steps on (1/n) sum w_i l_i + reg from `start` (default
        the fitted ones); damping enters as the proximal term damping/2 |theta - theta_fitted|^2, so H
        keeps its meaning. `H`: the Hessian at `start` and `w`, if known."""
        theta = (self.theta if start is None else start).clone()
        for k in range(steps):
            if H is None or k > 0:
                H = self.hessian(self.derivatives(theta)[2], w)
            theta = theta - self.solve(H, self.gradient(theta, w)).reshape(theta.shape)
        return theta


def _feature_kernel(adapter: ModelAdapter, shard: Split, payload: tuple[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Shard kernel: `_features` of one shard, as numpy."""
    X, _ = adapter.tensors(shard)
    a, z = _features(adapter, X, *payload)
    return a.cpu().numpy(), z.cpu().numpy()


def _last_layer(adapter: ModelAdapter, train: Split, damping: float, chunk_size: int) -> _LastLayer:
    if adapter.classes_ is None:
        raise InputError("mislabel needs a classifier (loss 'cross_entropy' or 'bce')")
    name, hw, hb = _final_layer(adapter)
    ex = sharding(train)
    if ex is not None:  # the features come from the shards: (n, d) and (n, K) numbers, not gradients
        t = adapter.encode(train.y)  # the driver needs only the labels
        parts = ex.map_shards(_feature_kernel, adapter, train, (name, chunk_size))
        a, z = (torch.as_tensor(np.concatenate([p[i] for p in parts])).to(adapter.device) for i in (0, 1))
    else:
        X, t = adapter.tensors(train)
        a, z = _features(adapter, X, name, chunk_size)
    a, z = a.to(torch.float64), z.to(torch.float64)
    n, K = z.shape
    F = torch.cat(([a] if hw else []) + ([torch.ones(n, 1, dtype=a.dtype, device=a.device)] if hb else []), 1)  # (n, q)
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
    prob = _LastLayer(F, t, reg.repeat(K), float(damping), theta, adapter.loss)
    if not torch.allclose(prob.F @ theta.T, z, rtol=1e-4, atol=1e-5 * (1 + z.abs().max().item())):
        raise InputError(f"mislabel: layer {name!r} output is not the model's output")
    return prob


def _loo_shift(prob: _LastLayer, theta: torch.Tensor, w: torch.Tensor | None, hessian: str,
               dtype: torch.dtype = torch.float64, skip_out: bool = True,
               chunk_elems: int = 200_000) -> tuple[torch.Tensor, ...]:
    """Logits (n, K), leave-one-out logit shifts (n, K), leverages (n,), the Hessian (K q, K q), the
    output curvatures Lambda (n, K, K) and the leverage blocks A (n, K, K) at `theta` and weights `w`.

    The n-sized products (Hessian build, leverage blocks) run in `dtype`; the inverse in float64. With
    `skip_out`, rows of weight 0 get A_i = 0 (their shift is 0 whatever A_i: they are out of sample).
    Chunks of `chunk_elems` / (K (K + 1) / 2 q) rows keep the (rows, pairs * q) product in cache."""
    z, r, Lam = prob.derivatives(theta)
    n, q = prob.F.shape
    K = z.shape[1]
    H = prob.hessian(Lam, w, dtype=dtype)
    Hinv = prob.inverse(H)
    dev = prob.F.device
    ks, ms = torch.triu_indices(K, K, device=dev)  # A_i is symmetric: the blocks k <= m only
    Hp = Hinv.reshape(K, q, K, q)[ks, :, ms, :].permute(1, 0, 2).reshape(q, -1).to(dtype)  # (q, pairs * q)
    Amat = torch.zeros(n, K, K, dtype=torch.float64, device=dev)
    rows = torch.arange(n, device=dev) if w is None or not skip_out else torch.nonzero(w != 0)[:, 0]
    F = prob.F[rows].to(dtype)
    step = max(1, int(chunk_elems // max(1, len(ks) * q)))
    for s in range(0, len(rows), step):
        Fc, idx = F[s:s + step], rows[s:s + step]
        pairs = ((Fc @ Hp).reshape(len(Fc), -1, q) * Fc[:, None, :]).sum(-1).to(torch.float64) / n  # (B, pairs)
        Amat[idx[:, None], ks, ms] = pairs
        Amat[idx[:, None], ms, ks] = pairs
    shift, lev = _shift(Amat, Lam, r, w, hessian)
    return z, shift, lev, H, Lam, Amat


def _shift(Amat: torch.Tensor, Lam: torch.Tensor, r: torch.Tensor, w: torch.Tensor | None,
           hessian: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-out logit shifts (n, K) A_i (I - w_i Lambda_i A_i)^-1 w_i r_i and leverages (n,)."""
    n, K = r.shape
    wl = torch.ones(n, dtype=torch.float64, device=r.device) if w is None else w
    LA = wl[:, None, None] * (Lam @ Amat)
    wr = (wl[:, None] * r)[:, :, None]
    if hessian == "loo":
        eye = torch.eye(K, dtype=torch.float64, device=r.device).expand(n, K, K)
        shift = (Amat @ torch.linalg.solve(eye - LA, wr))[:, :, 0]
    else:
        shift = (Amat @ wr)[:, :, 0]
    return shift, LA.diagonal(dim1=1, dim2=2).sum(1)


def leave_one_out(adapter: ModelAdapter, train: Split, damping: float = 0.0, hessian: str = "loo",
                  chunk_size: int = 512, rounds: int = 0, newton_steps: int = 1, refresh: int = 1,
                  precision: str = "float64", check: bool = False, calibrate: bool = False) -> LeaveOneOut:
    """Leave-one-out logits of every training sample from one Newton step each (module docstring).

    Parameters
    ----------
    adapter : fitted classifier whose analysed parameters are its final linear layer
    train : the split it was fitted on (n samples)
    damping : added to H (design promise 2: H = (1/n) sum hess l_i + reg + damping I)
    hessian : "loo" (Newton step on the leave-one-out objective, H_{-i}; default) or "full" (the classical
        influence step with H)
    rounds : cleaning rounds. Each gives weight 0 to the samples whose leave-one-out prediction is not
        their label (margin < 0), moves the final layer towards the optimum of the weighted objective by
        `newton_steps` Newton steps (from the previous round's parameters), and recomputes the
        leave-one-out logits there; a sample with weight 0 is out of sample already (its shift is 0).
        Stops early once a round flags the same samples as the one before. 0: the fitted model's
        leave-one-out logits only.
    refresh : recompute the leverages (a new Hessian and inverse) every `refresh` rounds and in the last;
        rounds in between take their flags from the last leverage blocks with the residuals and curvatures
        Lambda_i at the new parameters, and a Hessian updated only on the changed samples (frozen Lambda:
        cheaper, approximate). An early stop on such flags recomputes the leverages once, so the returned
        logits are always exact for the last parameters.

    calibrate : the rounds flag by the margin of the probabilities divided by the class thresholds
        (`label_scores` with calibrate=True) instead of the plain margin
    check : keep the rounds only if they do not lower the out-of-sample accuracy of the given labels
        (`given_label_accuracy`: the share of samples whose leave-one-out, or for a sample of weight 0
        out-of-sample, most probable class is their label) below that of the fitted model's leave-one-out
        probabilities; otherwise return the latter (``rounds_rejected``). No label's truth is used: the
        rounds aim at the clean model, which predicts the given labels out of sample at least as well as the
        noisy one unless the noise dominates; when the rounds drop clean-but-ambiguous samples of
        overlapping classes (sentiment on sentence embeddings), the flagged set grows round after round and
        this accuracy falls (docs/noisy-labels.md, "Choosing the rounds from the data")

    precision : "float64" (default) or "float32": the dtype of the n-sized products (the Hessian build,
        accumulated in float64, and the leverage blocks); the inverse and the Newton steps stay float64

    Returns
    -------
    `LeaveOneOut`; `logits` are always the fitted model's, `loo_logits` those of the last round.
    """
    if hessian not in ("loo", "full"):
        raise InputError(f"mislabel: hessian must be 'loo' or 'full', got {hessian!r}")
    if precision not in ("float64", "float32"):
        raise InputError(f"mislabel: precision must be 'float64' or 'float32', got {precision!r}")
    dt = getattr(torch, precision)
    prob = _last_layer(adapter, train, damping, chunk_size)
    classes = np.asarray(adapter.classes_)
    labels = prob.t.cpu().numpy().astype(np.int64)
    z, shift, lev, H, Lam, Amat = _loo_shift(prob, prob.theta, None, hessian, dt, skip_out=False)
    z0 = z.cpu().numpy()
    res = first = LeaveOneOut(z0, (z + shift).cpu().numpy(), lev.cpu().numpy(), classes, labels, adapter.loss)
    theta, w = prob.theta, torch.ones(len(labels), dtype=torch.float64, device=prob.F.device)
    stale = False  # whether res comes from leverage blocks of an earlier theta (refresh > 1)
    for k in range(int(rounds)):
        flagged = label_scores(res.proba(), labels, "margin", calibrate=calibrate) < 0
        if not flagged.any() or flagged.all():
            break
        new_w = torch.as_tensor(~flagged, dtype=torch.float64, device=w.device)
        changed = torch.nonzero(new_w != w)[:, 0]
        if len(changed) == 0 and k > 0:  # the flagged set is stable: its model has had its Newton steps
            break
        # the Hessian at theta for the new weights: the last one, updated on the samples that changed
        H = H + prob.hessian(Lam, new_w - w, changed, add_reg=False, dtype=dt)
        w = new_w
        theta = prob.newton(w, newton_steps, theta, H)
        last = k == int(rounds) - 1
        if last or (k + 1) % refresh == 0:  # rows of weight 0 need blocks only if later rounds reuse them
            z, shift, lev, H, Lam, Amat = _loo_shift(prob, theta, w, hessian, dt, skip_out=refresh == 1 or last)
            stale = False
        else:  # flags for the next round from the last leverage blocks (cheap: no new inverse)
            z, r, _ = prob.derivatives(theta)
            shift, lev = _shift(Amat, Lam, r, w, hessian)
            stale = True
        res = LeaveOneOut(z0, (z + shift).cpu().numpy(), lev.cpu().numpy(), classes, labels, adapter.loss)
    if stale:  # stopped early on flags from stale blocks: the returned logits are exact at the last theta
        z, shift, lev, *_ = _loo_shift(prob, theta, w, hessian, dt)
        res = LeaveOneOut(z0, (z + shift).cpu().numpy(), lev.cpu().numpy(), classes, labels, adapter.loss)
    res.theta, res.weights = theta.cpu().numpy(), w.cpu().numpy()
    if check and rounds > 0 and given_label_accuracy(res) < given_label_accuracy(first):
        first.theta, first.weights = prob.theta.cpu().numpy(), np.ones(len(labels))
        first.rounds_rejected = True
        return first
    return res


def given_label_accuracy(loo: LeaveOneOut) -> float:
    """Share of the samples whose out-of-sample most probable class is their given label."""
    return float((loo.proba().argmax(1) == loo.labels).mean())


COUNTS = ("calibrated", "off-diagonal")


def confident_joint(proba: np.ndarray, labels: np.ndarray, calibrate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Confident learning's confident joint C[i, j]: samples labelled i whose confident class is j
    (Northcutt, Jiang, Chuang 2021, sec. 3.1, eq. 1; cleanlab's `compute_confident_joint` rule).

    proba : (n, C) out-of-sample probabilities; labels : (n,) column index of each given label.
    A class j is confident for a sample when p_j >= t_j (`class_thresholds`, minus 1e-6); the sample's
    confident class is that class, or the most probable class where several are confident, -1 where none
    is. Every diagonal entry is at least 1. `calibrate`: rows rescaled to the given-label counts and the
    total to n, then rounded keeping each row's total (sec. 3.2, eq. 3: the calibrated joint).
    Returns the (C, C) joint (ints) and (n,) the confident class of each sample.
    """
    P = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n, C = P.shape
    t = np.maximum(class_thresholds(P, labels, missing=2.0), 1e-6)
    above = P >= t[None, :] - 1e-6
    several = above.sum(1) > 1
    guess = np.where(several, P.argmax(1), above.argmax(1))
    confident = np.where(above.any(1), guess, -1)
    keep = confident >= 0
    J = np.zeros((C, C), dtype=np.int64)
    np.add.at(J, (labels[keep], confident[keep]), 1)
    np.fill_diagonal(J, np.maximum(J.diagonal(), 1))
    if calibrate:
        counts = np.bincount(labels, minlength=C).astype(np.float64)
        cal = J / np.clip(J.sum(1, keepdims=True), 1e-100, None) * counts[:, None]
        cal = cal / max(cal.sum(), 1e-100) * counts.sum()
        J = np.stack([_round_keeping_sum(row) for row in cal])
    return J, confident


def _round_keeping_sum(row: np.ndarray) -> np.ndarray:
    """Integers closest to `row` with the same (rounded) total (largest remainders move first)."""
    ints = row.round()
    total = row.sum().round()
    while abs(ints.sum() - total) > 1e-6:
        diff = total - ints.sum()
        step = 1 if diff > 0 else -1
        idx = np.argsort(row - ints)[::-step][:min(int(abs(round(diff))), len(row))]
        ints[idx] += step
    return ints.astype(np.int64)


def estimated_count(proba: np.ndarray, labels: np.ndarray, method: str = "calibrated") -> int:
    """Confident learning's estimated number of wrong labels from (n, C) out-of-sample probabilities.

    method : "calibrated" (Northcutt et al. 2021, sec. 3.2: n times the off-diagonal mass of the calibrated
        joint, whose rows are the given-label counts; cleanlab's ``off_diagonal_calibrated``) or
        "off-diagonal" (sec. 3.1: the samples counted off the diagonal of the confident joint whose most
        probable class is not their label; cleanlab's default ``off_diagonal``).
    """
    check_choice(method, COUNTS, "mislabel: count", unknown="count method")
    P = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if method == "calibrated":
        J, _ = confident_joint(P, labels, calibrate=True)
        return int(np.rint((1.0 - np.trace(J) / max(J.sum(), 1e-100)) * n))
    _, confident = confident_joint(P, labels)
    bumped = P.copy()
    bumped[np.arange(n), labels] += 1e-6
    return int(((confident >= 0) & (confident != labels) & (bumped.argmax(1) != labels)).sum())


def class_thresholds(proba: np.ndarray, labels: np.ndarray, missing: float | None = None) -> np.ndarray:
    """(C,) confident learning's per-class thresholds: mean probability of class k over samples labelled k
    (Northcutt et al. 2021, eq. 2); classes without samples get `missing` (default 1/C)."""
    C = proba.shape[1]
    t = np.full(C, 1.0 / C if missing is None else float(missing))
    for k in range(C):
        m = labels == k
        if m.any():
            t[k] = proba[m, k].mean()
    return t


def label_scores(proba: np.ndarray, labels: np.ndarray, kind: str = "margin", calibrate: bool = True) -> np.ndarray:
    """(n,) label-quality score from (n, C) probabilities; lower = more likely mislabelled.

    kind : "margin" (p_y - max_{k != y} p_k), "self-confidence" (p_y), "entropy" (p_y * (1 - normalised
        entropy), cleanlab's confidence-weighted entropy). calibrate : divide each column by its class
        threshold (`class_thresholds`) first, so that every class's typical sample scores alike.
    """
    P = np.asarray(proba, dtype=np.float64)
    if calibrate:
        P = P / np.maximum(class_thresholds(P, labels), 1e-12)
    n = len(labels)
    py = P[np.arange(n), labels]
    if kind == "self-confidence":
        return py
    if kind == "margin":
        other = P.copy()
        other[np.arange(n), labels] = -np.inf
        return py - other.max(1)
    if kind == "entropy":
        Q = P / P.sum(1, keepdims=True)
        ent = -(Q * np.log(np.clip(Q, 1e-300, None))).sum(1) / np.log(P.shape[1])
        return Q[np.arange(n), labels] * (1 - ent)
    raise InputError(unknown_name("mislabel kind", kind, KINDS))


@dataclass
class MislabelOptions(MethodOptions):
    """Options of the wrong-label detector (leave-one-out label margins, `leave_one_out`)."""

    kind: str = opt("margin", "score of the leave-one-out probabilities: 'margin' | 'self-confidence' | 'entropy'")
    rounds: int = opt(5, "cleaning rounds (0: the fitted model's leave-one-out probabilities only)")
    check_rounds: bool = opt(True, "keep the rounds only if they do not lower the out-of-sample accuracy of the "
                                   "given labels (else rounds=0's scores)")
    newton_steps: int = opt(1, "Newton steps per round")
    refresh: int = opt(5, "exact leave-one-out every `refresh` rounds (and in the last); 1: every round")
    precision: str = opt("float32", "dtype of the n-sized products ('float32' | 'float64'); the inverse is float64")
    calibrate: bool = opt(False, "True: confident learning's per-class thresholds, in the score and in the rounds' "
                                 "flags (helps where one class received most flips)")
    hessian: str = opt("loo", "'loo': Newton step on the leave-one-out objective H_{-i} | 'full': the full H")
    params: Any = opt("auto", "parameters analysed: 'auto' (all of a linear model, the last layer of a "
                              "network), 'all', 'last' or module names")
    damping: Any = opt("auto", "'auto': 0 when the analysed weights are L2-regularised, else 1e-3; or a number >= 0")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.kind, KINDS, "kind", unknown="mislabel kind")
        check_choice(self.hessian, ("loo", "full"), "mislabel: hessian")
        check_choice(self.precision, ("float32", "float64"), "mislabel: precision")
        self.rounds = check_number(self.rounds, "mislabel: rounds", kind=int, low=0)
        self.newton_steps = check_number(self.newton_steps, "mislabel: newton_steps", kind=int, low=1)
        self.refresh = check_number(self.refresh, "mislabel: refresh", kind=int, low=1)
        check_choice(self.calibrate, (False, True), "mislabel: calibrate")
        check_choice(self.check_rounds, (False, True), "mislabel: check_rounds")
        check_params(self.params, "mislabel: params")
        if self.damping != "auto":
            check_damping(self.damping)


def run_leave_one_out(adapter: ModelAdapter, train: Split, o: "MislabelOptions", chunk_size: int = 512,
                      used: dict | None = None) -> LeaveOneOut:
    """`leave_one_out` with the options `o` (the analysed parameters, damping 'auto' resolved; the damping
    used goes into `used` when given)."""
    view = resolve_params(adapter, o.params)
    if o.params == "auto" and len(linear_layers(view) or ()) != 1:
        # the adapter's own choice (e.g. a LoRA model's adapters) is not one final layer: a network's "auto"
        # for mislabel is its last layer, the classification head
        view = resolve_params(adapter, "last")
    damping = o.damping
    if damping == "auto":
        regularised = any(view.reg_coef.get(nm, 0.0) > 0 for nm in view.param_names() if nm.endswith("weight"))
        damping = 0.0 if regularised else 1e-3
    damping = check_damping(damping)
    if used is not None:
        used["damping_used"] = damping
    return leave_one_out(view, train, damping, o.hessian, chunk_size, int(o.rounds), int(o.newton_steps),
                         int(o.refresh), o.precision, bool(o.check_rounds), bool(o.calibrate))


def relabel_probabilities(model: Any, train: Split, scores: Any) -> np.ndarray | None:
    """The leave-one-out probabilities behind a wrong-label detector's scores (made with the settings saved with
    them): what a relabelling of these scores chooses new labels from (`MethodSpec.probabilities`)."""
    from ..models.base import resolve_params

    if not isinstance(model, ModelAdapter):
        return None
    st = scores.settings or {}
    view = resolve_params(model, st.get("params", "auto"))
    return leave_one_out(view, train, float(st.get("damping_used", 0.0)), st.get("hessian", "loo"),
                         rounds=int(st.get("rounds", 0)), newton_steps=int(st.get("newton_steps", 1)),
                         refresh=int(st.get("refresh", 1)),
                         precision=st.get("precision", "float64")).proba()


@register_method("mislabel", needs_target=False, title="wrong-label detector", options=MislabelOptions,
                 probabilities=relabel_probabilities,
                 on_driver="the leave-one-out algebra on the gathered last-layer features (n x q numbers)",
                 verdict="mislabelled")
def mislabel(job: Job) -> Result:
    """Wrong-label detector: leave-one-out label margins from one Newton step per sample, with cleaning rounds.

    values = raw = the score (lower = more likely mislabelled); see `leave_one_out` for the rounds. Options:
    `MislabelOptions` (``influent methods mislabel``).
    """
    o = job.options
    t0 = time.perf_counter()
    loo = run_leave_one_out(job.adapter, job.train, o, job.chunk_size, job.used)
    job.timing["leave_one_out"] = time.perf_counter() - t0
    job.used["rounds_rejected"] = loo.rounds_rejected
    s = label_scores(loo.proba(), loo.labels, o.kind, bool(o.calibrate))
    return Result(s, s)
