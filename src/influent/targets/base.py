"""What "performance" means: a differentiable cost f(theta) of the model on a target set (lower is better)."""

from __future__ import annotations

from typing import Any

import torch

from ..data import Split
from ..data.validate import check_finite
from ..grads.per_sample import flatten
from ..models.base import ModelAdapter, Params


class Target:
    """A cost f(theta) on a target split; influence methods measure how removing a sample changes it.

    Subclasses implement `value(adapter, params)`. `prepare(adapter)` is called once against the
    trained model (e.g. to build an adversarial set, or to fix the sign of a fairness gap) before any
    value or gradient is taken, so retrained models are judged by the same yardstick.
    """

    name = "target"

    def __init__(self, valid: Split) -> None:
        self.valid = valid
        self.prepared_for_: str | None = None

    def prepare(self, adapter: ModelAdapter) -> "Target":
        """Fix the target against the trained `adapter`; a one-line `InputError` if the target's features are
        not finite (e.g. edited in place after its split was built)."""
        check_finite(self.valid.X, f"{self.valid.name}: features")
        self.prepared_for_ = adapter.fingerprint()
        return self

    def _ensure(self, adapter: ModelAdapter) -> None:
        if self.prepared_for_ is None:
            self.prepare(adapter)

    def value(self, adapter: ModelAdapter, params: Params | None = None) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, adapter: ModelAdapter) -> float:
        """The cost at the adapter's own parameters, as a float."""
        self._ensure(adapter)
        with torch.no_grad():
            return float(self.value(adapter, adapter.params()))

    def grad(self, adapter: ModelAdapter, params: Params | None = None) -> torch.Tensor:
        """(p,) gradient of the cost w.r.t. the analysed parameters."""
        self._ensure(adapter)
        params = adapter.params() if params is None else params
        leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        with torch.enable_grad():
            g = torch.autograd.grad(self.value(adapter, leaves), list(leaves.values()), allow_unused=True)
        return flatten({n: torch.zeros_like(p) if gi is None else gi for (n, p), gi in zip(leaves.items(), g)})

    def describe(self) -> dict[str, Any]:
        return {"target": self.name, "n": len(self.valid), "data": self.valid.name}


def mean_loss(adapter: ModelAdapter, params: Params, split: Split, mask: Any = None) -> torch.Tensor:
    """Mean per-sample loss over `split` (optionally over rows where `mask` is true)."""
    X, t = adapter.tensors(split)
    if mask is not None:
        m = torch.as_tensor(mask, dtype=torch.bool)
        X, t = X[m], t[m]
    return adapter.per_sample_loss(params, X, t).mean()
