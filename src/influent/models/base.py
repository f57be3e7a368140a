"""`ModelAdapter`: the one interface every method sees.

An adapter owns a torch module and states, as pure functions of the *analysed* parameters
(a dict name -> tensor; the other parameters stay fixed):

- ``per_sample_loss(params, X, t) -> (B,)``: the loss of each sample,
- ``regularizer(params) -> ()``: the model's own regulariser, so that the training objective is
  ``mean_i per_sample_loss + regularizer`` (design promise 2),
- ``outputs(params, X) -> (B, K)`` logits (or predictions for ``loss="mse"``).
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..data import Split
from ..data.validate import (InputError, check_at_least_two_classes, check_choice, check_finite, check_known_labels,
                             class_codes)

# torch's forward-mode AD (used for Hessian- and Gauss-Newton-vector products) loads decompositions written
# with torch.jit.script on first use, which warns once per decomposition (18 lines) in torch >= 2.9.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

Params = dict[str, torch.Tensor]
LOSSES = ("cross_entropy", "bce", "mse")


def loss_from_outputs(kind: str, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-sample loss (B,) from model outputs (B, K) and encoded targets `t`."""
    if kind == "cross_entropy":
        return F.cross_entropy(out, t, reduction="none")
    if kind == "bce":
        z = out.reshape(out.shape[0], -1)[:, 0]
        return F.binary_cross_entropy_with_logits(z, t.to(z.dtype), reduction="none")
    if kind == "mse":
        diff = out.reshape(out.shape[0], -1) - t.reshape(t.shape[0], -1).to(out.dtype)
        return 0.5 * (diff**2).sum(1)
    check_choice(kind, LOSSES, "loss")
    raise AssertionError(kind)  # unreachable: every loss in LOSSES returned above


def output_grad(kind: str, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, ...) d loss_i / d out_i in closed form, the shape of `out` (what autograd of `loss_from_outputs`
    gives): softmax(out) - onehot(t) for cross-entropy, sigmoid(z) - t for bce, out - t for mse."""
    if kind == "cross_entropy":
        g = torch.softmax(out, dim=-1)
        if t.dtype.is_floating_point:  # class probabilities as targets
            return g - t.to(g.dtype)
        g[torch.arange(out.shape[0], device=out.device), t] -= 1
        return g
    if kind == "bce":
        z = out.reshape(out.shape[0], -1)
        g = torch.zeros_like(z)
        g[:, 0] = torch.sigmoid(z[:, 0]) - t.to(z.dtype)
        return g.reshape(out.shape)
    if kind == "mse":
        return out - t.reshape(out.shape).to(out.dtype)
    check_choice(kind, LOSSES, "loss")
    raise AssertionError(kind)


def probabilities(kind: str, out: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, K) from outputs; for mse the outputs themselves."""
    if kind == "cross_entropy":
        return torch.softmax(out, dim=-1)
    if kind == "bce":
        p = torch.sigmoid(out.reshape(out.shape[0], -1)[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return out


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode inside the block; each submodule's own train/eval mode is restored after it."""
    was = [m for m in module.modules() if m.training]
    for m in was:
        m.training = False
    try:
        yield module
    finally:
        for m in was:
            m.training = True


class ModelAdapter:
    """Base class; subclasses build `self.module` in `fit` and set `reg_coef`.

    Parameters
    ----------
    loss : "cross_entropy" | "bce" | "mse"
    params : "all" | "last" | list of module-name prefixes — which parameters are analysed
    dtype : torch dtype of the module and of every computation on it
    """

    def __init__(self, loss: str = "cross_entropy", params: str | Sequence[str] = "all",
                 dtype: torch.dtype = torch.float32) -> None:
        check_choice(loss, LOSSES, "loss")
        if not isinstance(dtype, torch.dtype):
            raise InputError(f"dtype must be a torch dtype such as torch.float64, got {dtype!r}")
        self.loss = loss
        self.params_spec = params
        self.dtype = dtype
        self.module: nn.Module | None = None
        self.classes_: np.ndarray | None = None
        self.reg_coef: dict[str, float] = {}
        self.n_train_: int | None = None

    # ---- construction -------------------------------------------------------------------
    def fit(self, split: Split, sample_weight: np.ndarray | None = None) -> "ModelAdapter":
        raise NotImplementedError

    def clone(self) -> "ModelAdapter":
        """An unfitted copy with the same settings (and the same initial weights for torch models)."""
        raise NotImplementedError

    def refit(self, split: Split, sample_weight: np.ndarray | None = None, warm_start: bool = False) -> "ModelAdapter":
        """A new adapter fitted on `split` (self is unchanged). Warm start where the model supports it."""
        return self.clone().fit(split, sample_weight)

    @property
    def fitted(self) -> bool:
        return self.module is not None

    @property
    def device(self) -> torch.device:
        """Where the module's parameters live (the user's choice; the adapter never moves them)."""
        module = self.module
        for p in (module.parameters() if module is not None else ()):
            return p.device
        return torch.device("cpu")

    def check_split(self, split: Split) -> None:
        """Raise a one-line `InputError` unless the fitted model can take `split` (its features, labels it
        knows); also its features, which may have been edited in place since the split was built."""
        check_finite(split.X, f"{split.name}: features")
        self._check_labels(split)
        if self.module is not None:
            self._probe(split)

    def _check_labels(self, split: Split) -> None:
        if self.classes_ is not None:
            check_known_labels(split.y, self.classes_, f"{split.name}: labels")

    def _probe(self, split: Split) -> torch.Tensor:
        """(1, K) outputs of the fitted model on the first row of `split`, in evaluation mode without
        gradients; a one-line `InputError` when the model cannot take the split's features (another
        feature count or image shape than it was trained on)."""
        X = split.tensor_X(self.dtype)[:1].to(self.device)
        try:
            with torch.no_grad():
                return self.outputs({}, X)
        except (RuntimeError, IndexError, ValueError) as exc:
            raise InputError(f"{split.name}: the model cannot take features of shape {tuple(np.shape(split.X)[1:])} "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); give the "
                             "features the model was trained on") from None

    def _require_fitted(self) -> nn.Module:
        if self.module is None:
            raise InputError(f"{type(self).__name__} is not fitted; call .fit(train) first")
        return self.module

    # ---- labels ----------------------------------------------------------------------------
    def _set_classes(self, y: np.ndarray) -> None:
        if self.loss == "mse":
            self.classes_ = None
            return
        check_at_least_two_classes(y, "train labels")
        self.classes_ = np.unique(y)
        if self.loss == "bce" and len(self.classes_) != 2:
            raise InputError(f"loss 'bce' needs exactly two classes, got {len(self.classes_)}")

    @property
    def n_classes(self) -> int:
        return 1 if self.classes_ is None else len(self.classes_)

    def encode(self, y: np.ndarray) -> torch.Tensor:
        """Labels -> the target tensor `per_sample_loss` expects (class index, 0/1, or float)."""
        if self.classes_ is None:
            if self.loss != "mse":
                raise InputError(f"{type(self).__name__}: the classes are unknown; pass classes=[...]")
            return torch.as_tensor(np.asarray(y, dtype=np.float64), dtype=self.dtype, device=self.device)
        return torch.as_tensor(self.class_index(y), dtype=torch.long, device=self.device)

    def class_index(self, y: np.ndarray) -> np.ndarray:
        """(n,) int64 output column of each label of `y` (the position of its class in `classes_`, whatever
        their order); a label the model does not know is a one-line `InputError`."""
        if self.classes_ is None:
            raise InputError(f"{type(self).__name__}: the classes are unknown; pass classes=[...]")
        return class_codes(y, self.classes_)

    def tensors(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """(X, t) of `split` in the model's dtype, on the model's device."""
        return split.tensor_X(self.dtype).to(self.device), self.encode(split.y)

    # ---- analysed parameters -------------------------------------------------------------
    def param_names(self) -> list[str]:
        module = self._require_fitted()
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        spec = self.params_spec
        if spec == "all":
            return [n for n, _ in named]
        if spec == "last":
            owners = [n.rsplit(".", 1)[0] if "." in n else "" for n, _ in named]
            last = owners[-1]
            return [n for (n, _), o in zip(named, owners) if o == last]
        if isinstance(spec, str):
            spec = [spec]
        chosen = [n for n, _ in named if any(n == s or n.startswith(s + ".") for s in spec)]
        if not chosen:
            raise InputError(f"params {list(spec)} match no parameter; available: {[n for n, _ in named][:8]}")
        return chosen

    def params(self) -> Params:
        """The analysed parameters, detached copies."""
        module = self._require_fitted()
        table = dict(module.named_parameters())
        return {n: table[n].detach().clone() for n in self.param_names()}

    def n_params(self) -> int:
        return sum(p.numel() for p in self.params().values())

    def _full(self, params: Params) -> dict[str, torch.Tensor]:
        module = self._require_fitted()
        full = {n: p.detach() for n, p in module.named_parameters()}
        full.update({n: b for n, b in module.named_buffers()})
        full.update(params)
        return full

    # ---- the objective as pure functions -------------------------------------------------
    def outputs(self, params: Params, X: torch.Tensor) -> torch.Tensor:
        """Model outputs (B, K) at `params`, in evaluation mode (the module's own mode is left as it was)."""
        module = self._require_fitted()
        with _eval_mode(module):
            return functional_call(module, self._full(params), (X,))

    def per_sample_loss(self, params: Params, X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return loss_from_outputs(self.loss, self.outputs(params, X), t)

    def regularizer(self, params: Params) -> torch.Tensor:
        """sum over analysed parameters of coef/2 * |theta|^2 (coef from `reg_coef`)."""
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        for n, p in params.items():
            c = self.reg_coef.get(n, 0.0)
            if c:
                total = total + 0.5 * c * (p**2).sum()
        return total

    def closed_form_hessian(self, X: torch.Tensor, t: torch.Tensor,
                            sample_weight: torch.Tensor | None = None) -> torch.Tensor | None:
        """The (p, p) Hessian of ``sum_i w_i l_i / n + reg`` over the analysed parameters in closed form,
        or None where the model has none (curvature is then built from Hessian-vector products)."""
        return None

    def is_convex(self) -> bool:
        """Whether the training objective is convex in the analysed parameters: they all belong to one
        `nn.Linear` that is the module's last layer with parameters (a linear model, or the last layer of a
        network whose other weights stay fixed), with one of the convex losses. Influence functions assume a
        convex objective; on a non-convex one the Hessian is indefinite (`Job.solver` picks a
        positive-definite curvature instead)."""
        module = self._require_fitted()
        names = self.param_names()
        owners = {n.rsplit(".", 1)[0] if "." in n else "" for n in names}
        if len(owners) != 1:
            return False
        mods = dict(module.named_modules())
        owner = mods.get(next(iter(owners)))
        with_params = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
        return isinstance(owner, nn.Linear) and bool(with_params) and with_params[-1] is owner

    def reg_hessian_diag(self) -> torch.Tensor:
        """Diagonal of the regulariser's Hessian over the flattened analysed parameters (p,)."""
        table = dict(self._require_fitted().named_parameters())  # sizes only: no parameter copies
        parts = [torch.full((table[n].numel(),), float(self.reg_coef.get(n, 0.0)), dtype=self.dtype,
                            device=self.device)
                 for n in self.param_names()]
        return torch.cat(parts)

    # ---- prediction ------------------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, X: Any, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities (n, K) (binary models give two columns)."""
        module = self._require_fitted()
        Xt = torch.as_tensor(np.asarray(X.X if isinstance(X, Split) else X), dtype=self.dtype)
        with _eval_mode(module):
            out = [probabilities(self.loss, module(Xt[i:i + batch_size].to(self.device))).cpu()
                   for i in range(0, len(Xt), batch_size)]
        return torch.cat(out).numpy()

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        if self.classes_ is None:
            return proba
        return self.classes_[proba.argmax(1)]

    def accuracy(self, split: Split) -> float:
        return float(np.mean(self.predict(split) == split.y))

    @torch.no_grad()
    def loss_on(self, split: Split) -> float:
        """Mean per-sample loss on `split` (no regulariser)."""
        X, t = self.tensors(split)
        return float(self.per_sample_loss(self.params(), X, t).mean())

    def fingerprint(self) -> str:
        """Hash of the analysed parameter names and values: the key of cached gradients."""
        h = hashlib.sha256(self.loss.encode())
        for n, p in self.params().items():
            h.update(n.encode())
            h.update(p.detach().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"adapter": type(self).__name__, "loss": self.loss, "params": self.params_spec,
                "dtype": str(self.dtype).replace("torch.", ""),
                "n_params": self.n_params() if self.fitted else None}

    def for_workers(self) -> "ModelAdapter":
        """A shallow copy without the training records (``recorder_``'s checkpoints, ``record_``'s states): what
        a shard kernel or a refit task reads of the model, sent to a distributed executor's workers; methods
        that need the records read them on the driver and send what they use in their payload."""
        other = copy.copy(self)
        for name in ("recorder_", "record_"):
            if getattr(other, name, None) is not None:
                setattr(other, name, None)
        return other

    def with_params(self, params: Params) -> "ModelAdapter":
        """A copy whose analysed parameters are replaced by `params` (for checkpoints, ensembles)."""
        other = copy.copy(self)
        other.module = copy.deepcopy(self._require_fitted())
        with torch.no_grad():
            table = dict(other.module.named_parameters())
            for n, v in params.items():
                table[n].copy_(v)
        return other


def resolve_params(adapter: ModelAdapter, params: str | Sequence[str] = "auto") -> ModelAdapter:
    """`adapter` viewed with the analysed parameters `params`.

    "auto": the adapter's own choice when it is not "all"; otherwise the last layer for a neural net
    (parameters in more than one module) and all parameters for a linear model (one module).
    Any other value is a parameter spec as in `ModelAdapter` ("all", "last", module names).
    """
    spec: Any = params
    if params == "auto":
        if adapter.params_spec != "all":
            return adapter
        owners = {n.rsplit(".", 1)[0] if "." in n else "" for n, p in adapter._require_fitted().named_parameters()
                  if p.requires_grad}
        spec = "last" if len(owners) > 1 else "all"
    if isinstance(spec, (list, tuple)):
        spec = list(spec)
    if spec == adapter.params_spec:
        return adapter
    view = copy.copy(adapter)
    view.params_spec = spec
    view.param_names()  # raises InputError for names that match nothing
    return view
