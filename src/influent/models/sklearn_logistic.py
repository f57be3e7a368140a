"""`SklearnLogistic`: scikit-learn's L2 logistic regression, with its exact objective in torch.

scikit-learn minimises ``C * sum_i loss_i + 0.5 * |W|^2`` (intercept not penalised). Divided by
``C * n`` that is ``mean_i loss_i + |W|^2 / (2 C n)``: the mean loss plus an L2 regulariser with
coefficient ``1 / (C n)`` on the weights only. Binary problems use one logit (sigmoid loss),
multiclass problems the multinomial (softmax) loss, as scikit-learn does.
"""

from __future__ import annotations

import copy
import warnings

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..data import Split
from ..data.validate import InputError, check_finite, check_number, check_shape
from .base import ModelAdapter

if TYPE_CHECKING:  # scikit-learn loads where a model is fitted, not where a Ray worker unpickles an adapter
    from sklearn.linear_model import LogisticRegression


SLOW_ITERATIONS = 1000  # lbfgs on standardised features takes tens of iterations (breast cancer: 45)
SCALE_RATIO = 100.0  # largest / smallest feature standard deviation above which features count as badly scaled


class BadlyScaledWarning(UserWarning):
    """lbfgs needed many iterations on features of very different scales (`SklearnLogistic.fit`)."""


def _warn_badly_scaled(est: LogisticRegression, X: np.ndarray) -> None:
    """Warn (never rescale: the data are the user's) when lbfgs needed `SLOW_ITERATIONS` or more and the
    feature scales differ by more than `SCALE_RATIO`: standardising makes such fits 10-50x faster."""
    n_iter = int(np.max(getattr(est, "n_iter_", [0])))
    if n_iter < SLOW_ITERATIONS:
        return
    sd = np.asarray(X, dtype=np.float64).std(0)
    sd = sd[sd > 0]
    if sd.size and sd.max() / sd.min() > SCALE_RATIO:
        warnings.warn(f"SklearnLogistic: lbfgs needed {n_iter} iterations; the feature scales differ by a factor of "
                      f"{sd.max() / sd.min():.0e} (standard deviations {sd.min():.3g} to {sd.max():.3g}): standardise "
                      "the features (e.g. sklearn's StandardScaler fitted on train) for a fast, well-conditioned fit",
                      BadlyScaledWarning, stacklevel=3)


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
        check_number(C, "C", low=0, low_open=True)
        self.C = float(C)
        self.fit_intercept = bool(fit_intercept)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.newton_steps = int(newton_steps)
        self.estimator_: LogisticRegression | None = None

    def _estimator(self, warm: LogisticRegression | None = None) -> LogisticRegression:
        from sklearn.linear_model import LogisticRegression

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
            from sklearn.exceptions import ConvergenceWarning

            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(split.X.astype(np.float64), split.y, sample_weight=sample_weight)
        if _warm is None:
            _warn_badly_scaled(est, split.X)
        self._adopt(est, len(split))
        self._polish(split, sample_weight)
        return self

    def check_split(self, split: Split) -> None:
        """Finite features, labels the model knows, and the fitted number of feature columns (from the shapes)."""
        check_finite(split.X, f"{split.name}: features")
        self._check_labels(split)
        if self.module is not None:
            check_shape(split.X, (None, self.module.in_features), f"{split.name}: features")

    def _adopt(self, est: LogisticRegression, n: int) -> None:
        """Take a fitted estimator's weights as the analysed linear layer; `n` training samples."""
        self.estimator_ = est
        self.loss = "bce" if len(self.classes_) == 2 else "cross_entropy"
        lin = nn.Linear(est.coef_.shape[1], est.coef_.shape[0], bias=self.fit_intercept).to(self.dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(est.coef_))
            if self.fit_intercept:
                lin.bias.copy_(torch.as_tensor(est.intercept_))
        self.module = lin.eval()
        # objective / (C n) = mean loss + |W|^2 / (2 C n); with sample weights the loss term is
        # sum w_i l_i / n, so the coefficient is the same.
        self.reg_coef = {"weight": 1.0 / (self.C * n)}
        self.n_train_ = int(n)

    @classmethod
    def from_estimator(cls, estimator: LogisticRegression, train: Split, newton_steps: int = 0,
                       dtype: torch.dtype = torch.float64) -> "SklearnLogistic":
        """A user's fitted scikit-learn `LogisticRegression` taken as it is: its C, intercept setting,
        classes and weights (copied into the adapter; the estimator is not changed). `train` is the data it
        was fitted on: its size fixes the regulariser ``1 / (C n)``. `newton_steps` > 0 polishes the
        adapter's copy of the optimum (the estimator keeps its own weights); refits use `C` as usual."""
        from ..data.validate import check_known_labels

        coef = getattr(estimator, "coef_", None)
        from sklearn.linear_model import LogisticRegression

        if not isinstance(estimator, LogisticRegression) or coef is None:
            raise InputError(f"from_estimator needs a fitted scikit-learn LogisticRegression, got {type(estimator).__name__}")
        if getattr(estimator, "penalty", "l2") not in ("l2", "deprecated") or getattr(estimator, "l1_ratio", None) not in (None, 0, 0.0):
            raise InputError(f"from_estimator: penalty {estimator.penalty!r} is not the L2 objective this adapter reproduces")
        if coef.shape[1] != train.n_features or train.X.ndim != 2:
            raise InputError(f"from_estimator: the estimator has {coef.shape[1]} features, train has {train.X.shape[1:]}")
        check_known_labels(train.y, estimator.classes_, f"{train.name}: labels")
        model = cls(C=float(estimator.C), fit_intercept=bool(estimator.fit_intercept), tol=float(estimator.tol),
                    max_iter=int(estimator.max_iter), dtype=dtype, newton_steps=newton_steps)
        model.classes_ = np.asarray(estimator.classes_)
        model._adopt(copy.deepcopy(estimator), len(train))
        model._polish(train, None)
        return model

    def closed_form_hessian(self, X: torch.Tensor, t: torch.Tensor, sample_weight: torch.Tensor | None = None,
                            chunk_size: int = 8192) -> torch.Tensor:
        """The (p, p) Hessian of ``sum_i w_i l_i / n + reg`` in closed form, over the flattened analysed
        parameters (weight rows, then the intercepts); ``w = 1`` without sample weights."""
        W, b = self.module.weight.detach(), (self.module.bias.detach() if self.fit_intercept else None)
        K, d = W.shape
        n = X.shape[0]
        q = d + (1 if self.fit_intercept else 0)
        H = torch.zeros(K, q, K, q, dtype=self.dtype)
        for s in range(0, n, chunk_size):
            Xc = X[s:s + chunk_size].to(self.dtype)
            Xa = torch.cat([Xc, torch.ones(Xc.shape[0], 1, dtype=self.dtype)], 1) if self.fit_intercept else Xc
            z = Xc @ W.T + (b if b is not None else 0.0)
            if self.loss == "bce":
                pr = torch.sigmoid(z[:, 0])
                lam = (pr * (1 - pr))[:, None, None]
            else:
                P = torch.softmax(z, 1)
                lam = torch.diag_embed(P) - P[:, :, None] * P[:, None, :]
            if sample_weight is not None:
                lam = lam * sample_weight[s:s + chunk_size].to(self.dtype)[:, None, None]
            for k in range(K):
                for m in range(k, K):
                    block = (Xa * lam[:, k, m, None]).T @ Xa
                    H[k, :, m, :] += block
                    if m != k:
                        H[m, :, k, :] += block
        H /= n
        # (K, q, K, q) row-major over [weights | intercept] per class -> the adapter's flat order
        idx = torch.arange(K * q).reshape(K, q)
        order = torch.cat([idx[:, :d].reshape(-1), idx[:, d:].reshape(-1)])
        H = H.reshape(K * q, K * q)[order][:, order]
        return H + torch.diag(self.reg_hessian_diag())

    def _polish(self, split: Split, sample_weight: np.ndarray | None) -> None:
        """Newton steps on mean(w_i l_i) + reg from scikit-learn's solution (closed-form Hessian)."""
        if self.newton_steps <= 0 or self.n_params() > 4000:
            return
        X, t = self.tensors(split)
        n = X.shape[0]
        w = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=self.dtype)
        for _ in range(self.newton_steps):
            params = {k: v.requires_grad_() for k, v in self.params().items()}
            losses = self.per_sample_loss(params, X, t)
            total = (losses if w is None else w * losses).sum() / n + self.regularizer(params)
            g = torch.cat([v.reshape(-1) for v in torch.autograd.grad(total, list(params.values()))])
            step = torch.linalg.lstsq(self.closed_form_hessian(X, t, w), g[:, None], rcond=1e-12).solution[:, 0]
            live = dict(self.module.named_parameters())
            with torch.no_grad():
                offset = 0
                for name, v in params.items():
                    live[name] -= step[offset:offset + v.numel()].reshape(v.shape)
                    offset += v.numel()

    def refit(self, split: Split, sample_weight: np.ndarray | None = None, warm_start: bool = False) -> "SklearnLogistic":
        warm = self.estimator_ if (warm_start and self.estimator_ is not None
                                   and np.array_equal(np.unique(split.y), self.classes_)) else None
        with warnings.catch_warnings():  # the first fit warned already; refits (curves, loops) stay quiet
            warnings.simplefilter("ignore", BadlyScaledWarning)
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
