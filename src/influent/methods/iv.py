"""The influence-value baseline of [IV] (Chhabra et al., "What Data Benefits My Classifier? Enhancing
Model Performance and Interpretability through Influence-Based Data Selection", ICLR 2024).

[IV] scores a training sample by ``I(z_i) = grad_theta l(z_i)^T H_sum^-1 grad_theta F(V)`` at the fitted
logistic regression, where ``H_sum = sum_i hess l_i + lambda I`` is the Hessian of the *summed*
regularised training loss and ``F`` the impact function (for utility the *summed* validation loss), and
removes the samples with the lowest ``I`` first (their removal lowers F the most, to first order).

That is our ``if`` estimator with the exact solver: with ``H = H_sum / n`` (the mean-loss Hessian,
regulariser included) ``I(z_i) = (1/n) g_i^T H^-1 grad F = effect_i``, the same orientation (lowest
removed first) and, for a mean-loss target ``f``, the same scale (the paper's summed validation loss
multiplies every score by the number of validation samples, which changes no ranking). So ``iv`` is a
registered alias of ``if`` whose solver defaults to ``"exact"`` and damping to 0: ``values = raw = effect``.
Any target of `influent.targets` (fairness, robustness) works as in [IV].
"""

from __future__ import annotations

from .influence import CURVATURE_ON_DRIVER, InfluenceOptions, curvature_memory, influence, influence_pairwise
from .registry import register_method, register_pairwise

register_method("iv", title="influence value", options=InfluenceOptions, on_driver=CURVATURE_ON_DRIVER,
                memory=curvature_memory,
                summary="[IV] influence value: exact-Hessian influence g_i^T H^-1 grad f "
                "(alias of 'if'); remove the lowest first.")(influence)
register_pairwise("iv")(influence_pairwise)
