"""The impact functions of [IV] and [IP]: utility, demographic parity, equal opportunity, robustness."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data import Split
from ..data.validate import InputError, check_shape
from ..models.base import ModelAdapter, Params, probabilities
from .base import Target, mean_loss


class Utility(Target):
    """f = mean loss over the validation split."""

    name = "utility"

    def value(self, adapter: ModelAdapter, params: Params | None = None) -> torch.Tensor:
        return mean_loss(adapter, adapter.params() if params is None else params, self.valid)


def _groups(valid: Split, group: Any) -> np.ndarray:
    g = valid.group if group is None else np.asarray(group)
    if g is None:
        raise InputError(f"{valid.name}: a fairness target needs a group attribute (Split.group or group=...)")
    check_shape(g, (len(valid),), f"{valid.name}: group")
    values = np.unique(g)
    if len(values) != 2:
        raise InputError(f"{valid.name}: group must have exactly two values, got {values[:5].tolist()}")
    return (g == values[1]).astype(bool)


class _SignedGap(Target):
    """A signed group gap d(theta); the cost is |d| linearised at the trained model: sign(d(theta_hat)) * d."""

    def __init__(self, valid: Split, group: Any = None) -> None:
        super().__init__(valid)
        self.g1 = _groups(valid, group)
        self.sign_ = 1.0

    def gap(self, adapter: ModelAdapter, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, adapter: ModelAdapter) -> "Target":
        with torch.no_grad():
            d = float(self.gap(adapter, adapter.params()))
        self.sign_ = 1.0 if d >= 0 else -1.0
        self.gap_ = d
        return super().prepare(adapter)

    def value(self, adapter: ModelAdapter, params: Params | None = None) -> torch.Tensor:
        self._ensure(adapter)
        return self.sign_ * self.gap(adapter, adapter.params() if params is None else params)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "signed_gap_at_fit": getattr(self, "gap_", None)}


class DemographicParity(_SignedGap):
    """d = mean_{group 1} p_hat(x) - mean_{group 0} p_hat(x) on the validation split (soft positive-class
    probability; binary models). The cost is |d|, so a helpful sample is one whose removal widens the gap."""

    name = "demographic-parity"

    def gap(self, adapter: ModelAdapter, params: Params) -> torch.Tensor:
        if adapter.n_classes != 2:
            raise InputError("demographic parity needs a binary classifier")
        X, _ = adapter.tensors(self.valid)
        p = probabilities(adapter.loss, adapter.outputs(params, X))[:, 1]
        m = torch.as_tensor(self.g1)
        return p[m].mean() - p[~m].mean()


class EqualOpportunity(_SignedGap):
    """d = mean loss of positives in group 0 - mean loss of positives in group 1 (a differentiable
    surrogate of the true-positive-rate gap); the cost is |d|."""

    name = "equal-opportunity"

    def gap(self, adapter: ModelAdapter, params: Params) -> torch.Tensor:
        if adapter.n_classes != 2:
            raise InputError("equal opportunity needs a binary classifier")
        pos = self.valid.y == adapter.classes_[1]
        m0, m1 = pos & ~self.g1, pos & self.g1
        if not m0.any() or not m1.any():
            raise InputError(f"{self.valid.name}: equal opportunity needs positives in both groups")
        return mean_loss(adapter, params, self.valid, m0) - mean_loss(adapter, params, self.valid, m1)


class Robustness(Target):
    """f = mean loss on an adversarial copy of the validation split with the original labels.

    The copy is built once, in `prepare`, against the trained model: for a single linear layer
    (logistic regression) x' = x - 1.3 (w.x + b) / (w.w) w, the projection onto the decision boundary
    with 30% overshoot (multiclass: the boundary between the predicted class and the runner-up); for
    other models an L-infinity PGD attack of radius `epsilon` (`steps` steps of size 2.5 eps / steps;
    steps=1 is FGSM).
    """

    name = "robustness"

    def __init__(self, valid: Split, epsilon: float | None = None, steps: int = 10, overshoot: float = 0.3) -> None:
        super().__init__(valid)
        self.epsilon = epsilon
        self.steps = int(steps)
        self.overshoot = float(overshoot)
        self.adversarial_: Split | None = None

    def prepare(self, adapter: ModelAdapter) -> "Target":
        module = adapter._require_fitted()
        X, t = adapter.tensors(self.valid)
        if isinstance(module, torch.nn.Linear) and self.epsilon is None:
            Xa = self._project(module, X)
        else:
            Xa = self._pgd(adapter, X, t, 0.1 if self.epsilon is None else float(self.epsilon))
        self.adversarial_ = Split(Xa.numpy(), self.valid.y, self.valid.group, self.valid.ids, f"{self.valid.name}-adv")
        return super().prepare(adapter)

    def _project(self, lin: torch.nn.Linear, X: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            W = lin.weight
            b = lin.bias if lin.bias is not None else torch.zeros(W.shape[0], dtype=W.dtype)
            if W.shape[0] == 1:
                w, c = W[0].expand(X.shape[0], -1), b[0].expand(X.shape[0])
            else:
                z = X @ W.T + b
                top2 = z.topk(2, dim=1).indices
                w = W[top2[:, 0]] - W[top2[:, 1]]
                c = b[top2[:, 0]] - b[top2[:, 1]]
            margin = (w * X).sum(1) + c
            return X - (1 + self.overshoot) * (margin / (w * w).sum(1).clamp_min(1e-12))[:, None] * w

    def _pgd(self, adapter: ModelAdapter, X: torch.Tensor, t: torch.Tensor, eps: float) -> torch.Tensor:
        params = adapter.params()
        step = 2.5 * eps / self.steps if self.steps > 1 else eps
        Xa = X.clone()
        for _ in range(self.steps):
            Xa.requires_grad_(True)
            loss = adapter.per_sample_loss(params, Xa, t).sum()
            (gx,) = torch.autograd.grad(loss, Xa)
            with torch.no_grad():
                Xa = X + (Xa + step * gx.sign() - X).clamp(-eps, eps)
        return Xa.detach()

    def value(self, adapter: ModelAdapter, params: Params | None = None) -> torch.Tensor:
        self._ensure(adapter)
        assert self.adversarial_ is not None
        return mean_loss(adapter, adapter.params() if params is None else params, self.adversarial_)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "epsilon": self.epsilon, "steps": self.steps}
