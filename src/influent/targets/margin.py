"""TRAK's measured quantity: the margin log(p / (1 - p)) of the correct class (Park et al., 2023, Sec. 3.2:
the "model output function" f(z; theta) = log(p(z; theta) / (1 - p(z; theta)))).

For softmax cross-entropy the margin is z_y - logsumexp_{k != y} z_k, and the loss is log(1 + exp(-margin)),
so grad(-margin_j) = grad(loss_j) / (1 - p_j): per test point, attributing minus the margin is attributing
the loss scaled by 1 / (1 - p_j) (`margin_scale`). Rankings and correlations per test point (LDS) are
unchanged; sums over test points (a `score` with the `Margin` target) weight each test point by it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.validate import InputError
from ..models.base import ModelAdapter, Params
from .base import Target


def margins(adapter: ModelAdapter, params: Params, X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B,) margin log(p_y / (1 - p_y)) of the correct class y, from the logits (stable: no p is formed)."""
    if adapter.loss not in ("cross_entropy", "bce"):
        raise InputError(f"the margin target needs a classifier (loss 'cross_entropy' or 'bce'), not {adapter.loss!r}")
    out = adapter.outputs(params, X)
    if adapter.loss == "bce":
        z = out.reshape(out.shape[0], -1)[:, 0]
        return torch.where(t.reshape(-1) > 0.5, z, -z)
    own = out.gather(1, t.reshape(-1, 1))[:, 0]
    others = out.masked_fill(torch.nn.functional.one_hot(t.reshape(-1), out.shape[1]).bool(), float("-inf"))
    return own - others.logsumexp(1)


class Margin(Target):
    """f = minus the mean margin log(p / (1 - p)) of the correct class over the validation split (lower is
    better, like a loss): TRAK's model output function as an influence target."""

    name = "margin"

    def value(self, adapter: ModelAdapter, params: Params | None = None) -> torch.Tensor:
        X, t = adapter.tensors(self.valid)
        return -margins(adapter, adapter.params() if params is None else params, X, t).mean()


def margin_scale(adapter: ModelAdapter, split) -> np.ndarray:
    """(m,) 1 / (1 - p_j) = 1 + exp(margin_j) for each sample of `split` at the adapter's parameters: the
    factor turning the gradient of sample j's loss into the gradient of minus its margin (cross-entropy and
    bce). Formed from the margin, not from p: a confident float32 prediction rounds p to 1."""
    X, t = adapter.tensors(split)
    with torch.no_grad():
        m = margins(adapter, adapter.params(), X, t).to(torch.float64)
    return (1.0 + torch.exp(m)).cpu().numpy()
