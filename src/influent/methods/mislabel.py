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

from ..curvature.last_layer import LastLayer, last_layer
from ..data import Split
from ..data.executor import CHUNK_SIZE
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


def _last_layer(adapter: ModelAdapter, train: Split, damping: float, chunk_size: int) -> LastLayer:
    return last_layer(adapter, train, damping, chunk_size, "mislabel")


def _loo_shift(prob: LastLayer, theta: torch.Tensor, w: torch.Tensor | None, hessian: str,
               dtype: torch.dtype = torch.float64, skip_out: bool = True) -> tuple[torch.Tensor, ...]:
    """Logits (n, K), leave-one-out logit shifts (n, K), leverages (n,), the Hessian (K q, K q), the
    output curvatures Lambda (n, K, K) and the leverage blocks A (n, K, K) at `theta` and weights `w`.

    The n-sized products (Hessian build, leverage blocks; `LastLayer`, over the shards on a distributed
    executor) run in `dtype`; the inverse in float64. With `skip_out`, rows of weight 0 get A_i = 0 (their
    shift is 0 whatever A_i: they are out of sample)."""
    z, r, Lam = prob.derivatives(theta)
    H = prob.hessian(theta, w, dtype=dtype, Lam=Lam)
    Amat = prob.leverage_blocks(prob.inverse(H), w if skip_out else None, dtype)
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
    theta_lam = theta  # the parameters of Lam (and of H's terms)
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
        H = H + prob.hessian(theta_lam, new_w - w, changed, add_reg=False, dtype=dt, Lam=Lam)
        w = new_w
        theta = prob.newton(w, newton_steps, theta, H)
        last = k == int(rounds) - 1
        if last or (k + 1) % refresh == 0:  # rows of weight 0 need blocks only if later rounds reuse them
            z, shift, lev, H, Lam, Amat = _loo_shift(prob, theta, w, hessian, dt, skip_out=refresh == 1 or last)
            theta_lam = theta
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


def run_leave_one_out(adapter: ModelAdapter, train: Split, o: "MislabelOptions", chunk_size: int = CHUNK_SIZE,
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
                 on_driver="the rounds' O(n K q) algebra and the (K q)^2 inverse on the gathered last-layer "
                           "features; the Hessian sums and leverage blocks run on the shards",
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
