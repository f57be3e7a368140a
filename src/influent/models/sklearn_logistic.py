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
        """Newton steps on mean(w_i l_i) + reg from scikit-learn's solution (closed-form Hessian)."""
        if self.newton_steps <= 0 or self.n_params() > 4000:
            return
        lin = self.module
        X, t = self.tensors(split)
        n, d = X.shape
        w = torch.ones(n, dtype=self.dtype) if sample_weight is None else torch.as_tensor(sample_weight, dtype=self.dtype)
        Xa = torch.cat([X, torch.ones(n, 1, dtype=self.dtype)], 1) if self.fit_intercept else X
        K = lin.weight.shape[0]
        reg = torch.zeros(K, Xa.shape[1], dtype=self.dtype)
        reg[:, :d] = self.reg_coef["weight"]
        for _ in range(self.newton_steps):
            Wa = torch.cat([lin.weight, lin.bias[:, None]], 1) if self.fit_intercept else lin.weight.detach()
            Wa = Wa.detach()
            z = Xa @ Wa.T
            if self.loss == "bce":
                p = torch.sigmoid(z[:, 0])
                r = (p - t.to(self.dtype))[:, None]  # dl/dz, (n, 1)
                lam = (p * (1 - p))[:, None, None]  # (n, 1, 1)
            else:
                P = torch.softmax(z, 1)
                r = P - torch.nn.functional.one_hot(t, K).to(self.dtype)
                lam = torch.diag_embed(P) - P[:, :, None] * P[:, None, :]  # (n, K, K)
            # gradient and Hessian over (K, d+1) in row-major order: weights, then intercept column
            G = (w[:, None] * r).T @ Xa / n + reg * Wa
            H = torch.einsum("i,ikl,ia,ib->kalb", w, lam, Xa, Xa).reshape(K * Xa.shape[1], -1) / n
            H = H + torch.diag(reg.reshape(-1))
            step = torch.linalg.lstsq(H, G.reshape(-1, 1), rcond=1e-12).solution.reshape(K, -1)
            Wa = Wa - step
            with torch.no_grad():
                lin.weight.copy_(Wa[:, :d])
                if self.fit_intercept:
                    lin.bias.copy_(Wa[:, d])

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
