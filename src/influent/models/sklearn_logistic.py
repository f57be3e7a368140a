"""`SklearnLogistic`: scikit-learn's L2 logistic regression, with its exact objective in torch.

scikit-learn minimises ``C * sum_i loss_i + 0.5 * |W|^2`` (intercept not penalised). Divided by
``C * n`` that is ``mean_i loss_i + |W|^2 / (2 C n)``: the mean loss plus an L2 regulariser with
coefficient ``1 / (C n)`` on the weights only. Binary problems use one logit (sigmoid loss),
multiclass problems the multinomial (softmax) loss, as scikit-learn does.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from torch import nn

from ..data import Split
from ..data.validate import InputError
from .base import ModelAdapter, loss_from_outputs


class SklearnLogistic(ModelAdapter):
    """L2-regularised logistic regression fitted by scikit-learn (lbfgs, tight tolerance).

    Parameters
    ----------
    C : inverse regularisation strength, as in scikit-learn
    fit_intercept : whether to fit an (unpenalised) intercept
    tol, max_iter : scikit-learn solver settings
    newton_steps : Newton steps on the same objective after scikit-learn's fit (pseudo-inverse of the
        explicit Hessian), taking the optimum to machine precision so that leave-one-out differences are
        exact; skipped when the model has more than 4,000 parameters
    dtype : torch dtype of the analysis (float64 by default)
    """

    def __init__(self, C: float = 1.0, fit_intercept: bool = True, tol: float = 1e-10, max_iter: int = 10_000,
                 dtype: torch.dtype = torch.float64, newton_steps: int = 2) -> None:
        super().__init__("cross_entropy", "all", dtype)
        if not C > 0:
            raise InputError(f"C must be positive, got {C}")
        self.C = float(C)
        self.fit_intercept = bool(fit_intercept)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.newton_steps = int(newton_steps)
        self.estimator_: LogisticRegression | None = None

    def _estimator(self, warm: LogisticRegression | None = None) -> LogisticRegression:
        est = LogisticRegression(C=self.C, fit_intercept=self.fit_intercept, tol=self.tol,
                                 max_iter=self.max_iter, warm_start=warm is not None)
        if warm is not None:
            est.coef_ = warm.coef_.copy()
            if self.fit_intercept:
                est.intercept_ = warm.intercept_.copy()
        return est

    def fit(self, split: Split, sample_weight: np.ndarray | None = None,
            _warm: LogisticRegression | None = None) -> "SklearnLogistic":
        if split.X.ndim != 2:
            raise InputError(f"SklearnLogistic needs 2-D features, got shape {split.X.shape}")
        self._set_classes(split.y)
        est = self._estimator(_warm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(split.X.astype(np.float64), split.y, sample_weight=sample_weight)
        self.estimator_ = est
        self.loss = "bce" if len(self.classes_) == 2 else "cross_entropy"
        lin = nn.Linear(split.X.shape[1], est.coef_.shape[0], bias=self.fit_intercept).to(self.dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(est.coef_))
            if self.fit_intercept:
                lin.bias.copy_(torch.as_tensor(est.intercept_))
        self.module = lin.eval()
        # objective / (C n) = mean loss + |W|^2 / (2 C n); with sample weights the loss term is
        # sum w_i l_i / n, so the coefficient is the same.
        self.reg_coef = {"weight": 1.0 / (self.C * len(split))}
        self.n_train_ = len(split)
        self._polish(split, sample_weight)
        return self

    def _polish(self, split: Split, sample_weight: np.ndarray | None) -> None:
        """Newton steps on mean(w_i l_i) + reg from scikit-learn's solution."""
        if self.newton_steps <= 0 or self.n_params() > 4000:
            return
        from torch.func import functional_call, hessian

        lin = self.module
        X, t = self.tensors(split)
        w = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=self.dtype)
        names = [n for n, _ in lin.named_parameters()]
        shapes = [p.shape for p in lin.parameters()]

        def obj(theta: torch.Tensor) -> torch.Tensor:
            parts, i = {}, 0
            for n, sh in zip(names, shapes):
                k = int(np.prod(sh))
                parts[n] = theta[i:i + k].reshape(sh)
                i += k
            losses = loss_from_outputs(self.loss, functional_call(lin, parts, (X,)), t)
            data = (losses * w).mean() if w is not None else losses.mean()
            return data + 0.5 * self.reg_coef["weight"] * (parts["weight"] ** 2).sum()

        theta = torch.cat([p.detach().reshape(-1) for p in lin.parameters()])
        for _ in range(self.newton_steps):
            g = torch.func.grad(obj)(theta)
            H = hessian(obj)(theta)
            theta = theta - torch.linalg.lstsq(H, g[:, None], rcond=1e-12).solution[:, 0]
        with torch.no_grad():
            i = 0
            for p in lin.parameters():
                p.copy_(theta[i:i + p.numel()].reshape(p.shape))
                i += p.numel()

    def refit(self, split: Split, sample_weight: np.ndarray | None = None, warm_start: bool = False) -> "SklearnLogistic":
        warm = self.estimator_ if (warm_start and self.estimator_ is not None
                                   and np.array_equal(np.unique(split.y), self.classes_)) else None
        return self.clone().fit(split, sample_weight, _warm=warm)

    def clone(self) -> "SklearnLogistic":
        return SklearnLogistic(self.C, self.fit_intercept, self.tol, self.max_iter, self.dtype, self.newton_steps)

    def describe(self) -> dict:
        d = super().describe()
        d.update(C=self.C, fit_intercept=self.fit_intercept)
        return d

    def __deepcopy__(self, memo):  # the sklearn estimator is copied by value too
        other = self.clone()
        other.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        return other
