"""Adapters for torch modules: a user's `nn.Module`, and the built-in `TabularMLP`."""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..data import Split
from ..data.validate import InputError, check_finite, check_number
from .base import ModelAdapter
from .training import TrainConfig, TrainingRecorder, train_torch


class TorchAdapter(ModelAdapter):
    """Wrap a torch `nn.Module` mapping a batch of inputs to logits (or predictions for mse).

    The module is taken as it is: trained (`fitted`), in its own dtype and on its own device, and its
    weights are read live — the adapter analyses the user's module object itself, so training it further
    (e.g. in the user's own loop with `TrainingRecorder.record(adapter, step, lr)`) is seen at once. Nothing
    here changes the user's module: `fit` / `refit` train a copy, prediction restores the module's
    train/eval mode, and analysis runs in evaluation mode through `functional_call`.

    Parameters
    ----------
    module : the model; taken as trained unless ``fitted=False``; its weights at construction are also
        the starting point of every (re)fit unless `init` is given
    loss : "cross_entropy" (K logits) | "bce" (one logit) | "mse"
    params : "all" | "last" | list of module names whose parameters are analysed
    weight_decay : L2 coefficient lambda; the objective is mean loss + lambda/2 * |theta|^2
    train : `TrainConfig` used by `fit`
    dtype : None (default): the module's own dtype. Another dtype analyses a cast copy, kept in step with
        the module: whenever the module's weights change in place (an optimizer step), the copy is updated
    fitted : True (default): `module` is trained and can be scored now. False: its weights are only the
        initial weights; call `fit(train)` first
    classes : the label values in the order of the outputs; default ``0..K-1`` with K the output size
        (``[0, 1]`` for bce), read from the last linear layer or, failing that, from a forward pass on the
        first training sample (`check_split`)
    init : a module or state dict to start every (re)fit from, instead of `module`'s weights at construction
    """

    def __init__(self, module: nn.Module, loss: str = "cross_entropy", params: str | Sequence[str] = "all",
                 weight_decay: float = 0.0, train: TrainConfig | None = None,
                 dtype: torch.dtype | None = None, fitted: bool = True,
                 classes: Sequence | None = None, init: nn.Module | dict | None = None) -> None:
        if not isinstance(module, nn.Module):
            raise InputError(f"TorchAdapter needs a torch nn.Module, got {type(module).__name__}")
        own = _module_dtype(module)
        super().__init__(loss, params, dtype if dtype is not None else (own or torch.float32))
        self.weight_decay = float(weight_decay)
        self.train_config = train or TrainConfig()
        self._given_classes = None if classes is None else np.asarray(classes)
        if self._given_classes is not None and (self._given_classes.ndim != 1 or
                                                len(np.unique(self._given_classes)) != len(self._given_classes)):
            raise InputError(f"classes must be a list of distinct label values, one per output, got {list(classes)!r}")
        self._init_module = self._initial_module(module, init)
        self._source: nn.Module | None = None
        self.record_ = None  # the TrainingRecord of the last `fit` (replayable training; methods.unrolled)
        if fitted and not self._builds_module():
            if own is None or own == self.dtype:
                self.module = module  # the user's own object: weights read live
            else:
                self.module = copy.deepcopy(module).to(self.dtype)
                self._source, self._versions = module, _versions(module)
            self.classes_ = self._default_classes(self.module)
            self._set_reg()

    # ---- construction helpers -----------------------------------------------------------------
    @classmethod
    def _builds_module(cls) -> bool:
        """True for adapters that build their own module in `fit` (TabularMLP, SmallCNN): never fitted
        before `fit`."""
        return cls._make_module is not TorchAdapter._make_module

    def _initial_module(self, module: nn.Module, init: nn.Module | dict | None) -> nn.Module:
        start = copy.deepcopy(module)
        if init is not None:
            state = init.state_dict() if isinstance(init, nn.Module) else init
            try:
                start.load_state_dict(state)
            except (RuntimeError, KeyError, TypeError) as exc:
                raise InputError(f"init does not fit the module: {str(exc).splitlines()[0]}") from None
        return start.to(self.dtype)

    def _default_classes(self, module: nn.Module) -> np.ndarray | None:
        if self.loss == "mse":
            return None
        if self._given_classes is not None:
            return self._given_classes
        if self.loss == "bce":
            return np.arange(2)
        k = _last_linear_outputs(module)
        return None if k is None else np.arange(k)

    def check_split(self, split: Split) -> None:
        """Check that the module's output size fits the labels of `split` (and infer the classes when the
        module has no final linear layer), and that its features are finite; one-line `InputError` otherwise."""
        self._require_fitted()
        check_finite(split.X, f"{split.name}: features")
        out = self._probe(split)
        if self.loss == "mse":
            return
        k = int(np.prod(out.shape[1:])) if out.ndim > 1 else 1
        if k == 1 and self.loss == "cross_entropy":  # a softmax over one logit is constant: a bce model
            raise InputError(f"the model gives one output per sample, loss 'cross_entropy' needs one per class",
                             hint="bce", fix='a binary classifier with one logit needs TorchAdapter(net, loss="bce")')
        want = 1 if self.loss == "bce" else (len(self.classes_) if self.classes_ is not None else k)
        if k != want:
            what = "one output (a logit)" if self.loss == "bce" else f"{want} outputs, one per class {self.classes_.tolist()}"
            raise InputError(f"the model gives {k} output(s) per sample, loss {self.loss!r} needs {what}",
                             hint="output-size", fix="change the last layer or pass classes=[...]")
        if self.classes_ is None:
            self.classes_ = np.arange(k)
        self._check_labels(split)

    def _require_fitted(self) -> nn.Module:
        module = super()._require_fitted()
        if self._source is not None and _versions(self._source) != self._versions:
            with torch.no_grad():  # the user trained their module: bring the cast copy in step
                mine = dict(module.named_parameters())
                for n, p in self._source.named_parameters():
                    mine[n].copy_(p.to(self.dtype))
                mine_b = dict(module.named_buffers())
                for n, b in self._source.named_buffers():
                    mine_b[n].copy_(b)
            self._versions = _versions(self._source)
        return module

    def _make_module(self, split: Split) -> nn.Module:
        return copy.deepcopy(self._init_module)

    def _set_reg(self) -> None:
        assert self.module is not None
        self.reg_coef = {n: self.weight_decay for n, p in self.module.named_parameters() if p.requires_grad}

    def fit(self, split: Split, sample_weight: np.ndarray | None = None,
            recorder: TrainingRecorder | None = None) -> "TorchAdapter":
        """Train a copy of the initial weights (never the user's module) on `split`; returns self.

        The run is kept as `record_` (a `TrainingRecord`: seed and batch order, learning rates, sample
        weights, parameters and optimizer buffers every ~sqrt(T) steps) unless ``TrainConfig(record=False)``;
        ``refit(split, sample_weight=w)`` replays the same recipe (initial weights, seed, batch order) with
        the weights `w`, so a removal is weight 0 in the same batches."""
        if self._given_classes is not None and self.loss != "mse":
            from ..data.validate import check_known_labels

            check_known_labels(split.y, self._given_classes, f"{split.name}: labels")
            self.classes_ = self._given_classes
        else:
            self._set_classes(split.y)
        self.module = self._make_module(split).to(self.dtype)
        self._source = None
        self._set_reg()
        self.check_split(split)
        X, t = self.tensors(split)
        torch.manual_seed(self.train_config.seed)
        self.record_ = train_torch(self, X, t, self.train_config, sample_weight, recorder)
        self.n_train_ = len(split)
        self.recorder_ = recorder
        return self

    def clone(self) -> "TorchAdapter":
        other = copy.copy(self)
        if self.classes_ is not None:  # a refit keeps the model's classes, even on a subset missing one
            other._given_classes = self.classes_
        other.module = None
        other._source = None
        other.classes_ = None
        other.reg_coef = {}
        other.recorder_ = None
        other.record_ = None
        return other

    def with_params(self, params: dict) -> "TorchAdapter":
        other = super().with_params(params)
        other._source = None
        other.record_ = None  # other weights than the recorded run's
        return other

    def describe(self) -> dict:
        d = super().describe()
        d.update(weight_decay=self.weight_decay, train=self.train_config.to_dict())
        return d


def _module_dtype(module: nn.Module) -> torch.dtype | None:
    for p in list(module.parameters()) + list(module.buffers()):
        if p.is_floating_point():
            return p.dtype
    return None


def _versions(module: nn.Module) -> tuple[int, ...]:
    """In-place modification counters of the parameters and buffers (an optimizer step bumps them)."""
    return tuple(t._version for t in list(module.parameters()) + list(module.buffers()))


def _last_linear_outputs(module: nn.Module) -> int | None:
    """Output size of the module when its last parametrised layer is an nn.Linear, else None."""
    with_params = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    if with_params and isinstance(with_params[-1], nn.Linear):
        return int(with_params[-1].out_features)
    return None


class TabularMLP(TorchAdapter):
    """A fully connected ReLU network for tabular features, built at `fit` time.

    Parameters
    ----------
    hidden : sizes of the hidden layers, e.g. (32, 32)
    dropout : dropout rate after each hidden activation (0 = none)
    init_seed : seed of the weight initialisation
    weight_decay : L2 coefficient of the objective (default 1e-3)
    Other parameters as `TorchAdapter`.

    The default regime — full-batch Adam, lr 1e-2, 100 epochs (`TrainConfig()`), weight decay 1e-3 — is
    chosen for influence and outlier-gradient analysis: a network trained until it memorises its flipped
    labels hides them (their gradients shrink). On the [OGA] two-moons task (32-32 MLP, 20 of 250 labels
    flipped, 30 seeds) the Isolation Forest finds 0.91 of them after 100-300 full-batch steps whatever the
    weight decay, but after 1000 steps 0.78 with weight decay 1e-4 against 0.89 with 1e-3; see
    docs/oga-moons.md.
    """

    def __init__(self, hidden: Sequence[int] = (64,), dropout: float = 0.0, loss: str = "cross_entropy",
                 params: str | Sequence[str] = "all", weight_decay: float = 1e-3,
                 train: TrainConfig | None = None, dtype: torch.dtype = torch.float32, init_seed: int = 0) -> None:
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise InputError(f"TabularMLP: hidden must be a list of layer sizes such as (64, 32), got {hidden!r}")
        self.hidden = tuple(check_number(h, "TabularMLP: hidden layer size", kind=int, low=1) for h in hidden)
        self.dropout = check_number(dropout, "TabularMLP: dropout", low=0, high=1, high_open=True)
        self.init_seed = int(init_seed)
        super().__init__(nn.Identity(), loss, params, weight_decay, train, dtype)

    def _make_module(self, split: Split) -> nn.Module:
        torch.manual_seed(self.init_seed)
        d_in = split.n_features
        n_out = 1 if self.loss in ("bce",) else (self.n_classes if self.loss == "cross_entropy"
                                                 else int(np.prod(np.asarray(split.y).shape[1:]) or 1))
        layers: list[nn.Module] = [nn.Flatten()] if split.X.ndim > 2 else []
        for h in self.hidden:
            layers += [nn.Linear(d_in, h), nn.ReLU()]
            if self.dropout:
                layers.append(nn.Dropout(self.dropout))
            d_in = h
        layers.append(nn.Linear(d_in, n_out))
        return nn.Sequential(*layers)

    def describe(self) -> dict:
        d = super().describe()
        d.update(hidden=list(self.hidden), dropout=self.dropout, init_seed=self.init_seed)
        return d
