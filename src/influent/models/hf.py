"""`HFAdapter`: Hugging Face sequence-classification models, plain or wrapped by peft (LoRA).

The model is analysed through a thin `nn.Module` that maps a batch of token ids (B, L) to logits
(B, K): the attention mask is ``ids != pad_id`` (the config's ``pad_token_id``). Token ids travel in a
`Split` as a float matrix (the `Split` stores numbers as float32/float64, exact for ids below 2**24,
i.e. every tokenizer's vocabulary) and are cast back to int64 inside the forward pass.

Every mechanism of a `TorchAdapter` applies unchanged: per-sample gradients through `GradientSource`
(vmap where the model allows it, one backward per sample otherwise), and — when every analysed
parameter is the weight of an ``nn.Linear``, as LoRA's ``lora_A`` / ``lora_B`` matrices are — the
factorised linear-layer path over tokens (grads/linear.py): one forward and one backward pass per chunk
give every per-sample product that IP, TracIn and the outlier methods need, with no per-sample loop.
K-FAC / EK-FAC treat each token position of such a layer as a position of a convolution
(curvature/kfac.py).

`transformers` and `peft` are an optional extra: ``pip install 'influent[text]'``.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..data.text import TEXT_EXTRAS, require_transformers
from ..data.validate import InputError, require
from .base import _eval_mode
from .torch_adapter import TorchAdapter, _module_dtype
from .training import TrainConfig

PREFIX = "model."  # the wrapped model's parameters are named model.<its own name>
MAX_ID = 2**24  # token ids are exact in float32 below this


class SequenceLogits(nn.Module):
    """token ids (B, L) (any numeric dtype) -> logits (B, K) of a Hugging Face classification model.

    Parameters
    ----------
    model : a ``*ForSequenceClassification`` model (or a peft model wrapping one); held, not copied
    pad_id : token id of padding; attention mask is ``ids != pad_id``
    """

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model = model
        self.pad_id = int(pad_id)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        ids = ids.round().long() if ids.is_floating_point() else ids.long()
        with sdpa_kernel([SDPBackend.MATH]):  # the one attention kernel with double backward and forward AD
            out = self.model(input_ids=ids, attention_mask=(ids != self.pad_id).long())
        return out.logits if hasattr(out, "logits") else out[0]


def _pad_id(model: nn.Module, pad_id: int | None) -> int:
    if pad_id is not None:
        return int(pad_id)
    config = getattr(model, "config", None)
    value = getattr(config, "pad_token_id", None)
    if value is None:
        raise InputError("the model's config has no pad_token_id; pass pad_id=... (the tokenizer's pad token id)")
    return int(value)


def _num_labels(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    k = getattr(config, "num_labels", None)
    return None if k is None else int(k)


class HFAdapter(TorchAdapter):
    """Analyse a Hugging Face sequence-classification model (plain, or LoRA-wrapped by peft).

    Parameters
    ----------
    model : ``transformers`` ``*ForSequenceClassification`` model or a ``peft`` model around one; taken
        as trained, weights read live (the adapter never copies or changes it; `fit` trains a copy)
    params : "lora" — exactly the LoRA parameters (``lora_A`` / ``lora_B`` / ``lora_embedding_*``);
        "last" — the last parametrised module (the classification head); "all" — every trainable
        parameter; or a list of module names of the model (e.g. ``["classifier"]``)
    loss : "cross_entropy" (default) | "bce" | "mse"
    pad_id : padding token id; default the config's ``pad_token_id``
    weight_decay, train, dtype, fitted, classes, init : as `TorchAdapter`; the classes default to
        ``0..num_labels-1`` from the config

    Inputs are token-id matrices (n, L) in a `Split` (see `influent.from_texts`).
    """

    def __init__(self, model: nn.Module, params: str | Sequence[str] = "lora", loss: str = "cross_entropy",
                 pad_id: int | None = None, weight_decay: float = 0.0, train: TrainConfig | None = None,
                 dtype: torch.dtype | None = None, fitted: bool = True, classes: Sequence | None = None,
                 init: nn.Module | dict | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"HFAdapter needs a Hugging Face model (an nn.Module), got {type(model).__name__}")
        if classes is None and loss == "cross_entropy" and _num_labels(model):
            classes = np.arange(_num_labels(model))
        wrapper = SequenceLogits(model, _pad_id(model, pad_id))
        if isinstance(init, nn.Module) and not isinstance(init, SequenceLogits):
            init = SequenceLogits(init, wrapper.pad_id)
        if isinstance(init, dict):
            init = {(k if k.startswith(PREFIX) else PREFIX + k): v for k, v in init.items()}
        super().__init__(wrapper, loss, params, weight_decay, train, dtype, fitted, classes, init)
        if self.fitted:
            self.param_names()  # a spec that matches nothing fails here, in one line

    @classmethod
    def _builds_module(cls) -> bool:
        return False  # the model is the user's, taken as trained

    def fit(self, split, sample_weight: np.ndarray | None = None, recorder: Any = None,
            progress: Any = None) -> "HFAdapter":
        """`TorchAdapter.fit`; `progress(step, total)` is called after every optimizer step (fine-tuning a
        transformer takes minutes to hours: the CLI shows it as a bar)."""
        if progress is None:
            return super().fit(split, sample_weight, recorder)
        n, bs = len(split), self.train_config.batch_size
        steps = (n + (min(int(bs), n) if bs else n) - 1) // (min(int(bs), n) if bs else n)
        super().fit(split, sample_weight, _StepProgress(recorder, progress, self.train_config.epochs * steps))
        self.recorder_ = recorder  # the caller's recorder (or None), not the progress wrapper
        return self

    # ---- initial weights: only the trainable parameters are kept (a LoRA model's base stays shared) ----
    def _initial_module(self, module: nn.Module, init: nn.Module | dict | None) -> nn.Module:
        self._init_state = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
        if init is not None:
            state = init.state_dict() if isinstance(init, nn.Module) else init
            missing = [n for n in self._init_state if n not in state]
            if missing:
                raise InputError(f"init does not fit the model: no value for {missing[0]!r}")
            self._init_state = {n: state[n].detach().clone() for n in self._init_state}
        self._template = module
        return module

    @staticmethod
    def _copy_trainable(module: nn.Module) -> nn.Module:
        """A copy of `module` whose trainable parameters are new tensors and whose frozen parameters and
        buffers are shared with `module` (a LoRA model's base weights are not duplicated)."""
        memo: dict[int, Any] = {id(p): p for p in module.parameters() if not p.requires_grad}
        memo.update({id(b): b for b in module.buffers()})
        return copy.deepcopy(module, memo)

    def with_params(self, params: dict) -> "HFAdapter":
        """A copy analysing `params`: only the trainable parameters are copied, the frozen base is shared."""
        other = copy.copy(self)
        other.module = self._copy_trainable(self._require_fitted())
        other._source = None
        with torch.no_grad():
            table = dict(other.module.named_parameters())
            for n, v in params.items():
                table[n].copy_(v)
        return other

    def _make_module(self, split) -> nn.Module:
        # `fit` casts the new module to the adapter's dtype: share frozen weights only when no cast happens
        same = _module_dtype(self._template) in (None, self.dtype)
        fresh = self._copy_trainable(self._template) if same else copy.deepcopy(self._template)
        with torch.no_grad():
            table = dict(fresh.named_parameters())
            for n, v in self._init_state.items():
                table[n].copy_(v)
        return fresh

    # ---- analysed parameters ----------------------------------------------------------------------
    def param_names(self) -> list[str]:
        module = self._require_fitted()
        spec = self.params_spec
        named = [n for n, p in module.named_parameters() if p.requires_grad]
        if spec == "lora":
            chosen = [n for n in named if ".lora_" in n]
            if not chosen:
                raise InputError("params='lora': the model has no trainable LoRA parameters; wrap it with "
                                 "peft.get_peft_model(model, LoraConfig(...)) or pass params='last'/'all'")
            return chosen
        if isinstance(spec, (list, tuple)) or (isinstance(spec, str) and spec not in ("all", "last")):
            names = [spec] if isinstance(spec, str) else list(spec)
            full = [s if s.startswith(PREFIX) else PREFIX + s for s in names]
            chosen = [n for n in named if any(n == s or n.startswith(s + ".") for s in full)]
            if not chosen:
                shown = [n[len(PREFIX):] for n in named][:8]
                raise InputError(f"params {names} match no trainable parameter of the model; available: {shown}")
            return chosen
        return super().param_names()

    # ---- inputs ------------------------------------------------------------------------------------
    def check_split(self, split) -> None:
        X = np.asarray(split.X)
        if X.ndim != 2:
            raise InputError(f"{split.name}: HFAdapter needs token ids of shape (n, max_length), got {X.shape}")
        if X.min() < 0 or X.max() >= MAX_ID or not np.all(X == np.round(X)):
            raise InputError(f"{split.name}: token ids must be integers in [0, {MAX_ID}); build the split with "
                             "influent.from_texts(texts, labels, tokenizer)")
        super().check_split(split)

    def ensemble_dropout_points(self) -> list[str]:
        """IP Ensemble's default dropout points: the dropout layers that act in evaluation mode on one vector
        per sample (the classifier's input), not on tokens — a mask over tokens would tie the members to
        one sequence length; attention-probability dropout is not called in evaluation mode at all."""
        module = self._require_fitted()
        names = {id(m): n for n, m in module.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd)}
        seen: dict[str, int] = {}
        hooks = [m.register_forward_hook(lambda m, i, o: seen.__setitem__(names[id(m)], o.ndim))
                 for m in module.modules() if id(m) in names]
        ids = torch.full((1, 2), 1 if self._template.pad_id != 1 else 2, device=self.device)
        try:
            with torch.no_grad(), _eval_mode(module):
                module(ids)
        finally:
            for h in hooks:
                h.remove()
        return [n for n, nd in seen.items() if nd == 2]

    def describe(self) -> dict:
        d = super().describe()
        inner = self._template.model
        base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
        d.update(hf_model=type(base).__name__, peft=base is not inner, pad_id=self._template.pad_id)
        return d


TOKENS_PER_CHUNK = 8192  # a chunk's token positions when the user sets no chunk size


def default_chunk_size(length: int) -> int:
    """The chunk size of a transformer run whose user sets none: the largest power of two whose chunk holds at
    most `TOKENS_PER_CHUNK` token positions of `length` tokens each, between 8 and 512. A chunk's activations
    (every layer's inputs and output gradients at every token) grow with chunk x length: 512 rows of 128
    tokens peaked at 11.6 GB in a LoRA run where 64 rows (8,192 tokens) used a quarter and ran faster."""
    rows = max(1, TOKENS_PER_CHUNK // max(1, int(length)))
    return int(min(512, max(8, 1 << (rows.bit_length() - 1))))


class _StepProgress:
    """A training recorder that reports each optimizer step to `progress(step, total)` and passes the step on
    to the caller's recorder, if any (`train_torch` calls ``maybe_record`` after every step)."""

    def __init__(self, inner: Any, progress: Any, total: int) -> None:
        self.inner, self.progress, self.total = inner, progress, int(total)

    def maybe_record(self, adapter: Any, step: int, lr: float, last: bool = False) -> None:
        if self.inner is not None:
            self.inner.maybe_record(adapter, step, lr, last=last)
        self.progress(int(step), self.total)

    def __getattr__(self, name: str) -> Any:  # anything else a recorder offers is the caller's recorder's
        if self.inner is None:
            raise AttributeError(name)
        return getattr(self.inner, name)


def lora_classifier(encoder: str = "all-MiniLM-L6-v2", num_labels: int = 2, r: int = 8, alpha: int = 16,
                    targets: Sequence[str] = ("query", "value"), dropout: float = 0.0, seed: int = 0):
    """A sequence classifier on a local pre-trained encoder with LoRA adapters — the [OGA]/[IP] recipe
    (fine-tune with LoRA, analyse the LoRA gradients). Nothing is downloaded.

    Parameters
    ----------
    encoder : "all-MiniLM-L6-v2" (the packaged sentence encoder, a 6-layer BERT) or a local model folder
    num_labels : K; the classification head is new (seeded by `seed`) and trained with the adapters
    r, alpha, targets, dropout : the LoRA rank, scaling numerator, target module names, dropout

    Returns
    -------
    (model, tokenizer): a peft model (trainable: LoRA matrices and the head) and the encoder's tokenizer.
    """
    import os

    transformers = require_transformers("lora_classifier")
    peft = require("peft", "lora_classifier", "the text extras", TEXT_EXTRAS)
    from ..data.text import encoder_path, load_tokenizer, quiet_libraries

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = encoder_path(encoder)
    torch.manual_seed(int(seed))
    with quiet_libraries():  # the load report (the new head's "MISSING" weights) is expected, not news
        model = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=int(num_labels))
    tokenizer = load_tokenizer(encoder)
    config = peft.LoraConfig(r=int(r), lora_alpha=int(alpha), target_modules=list(targets), lora_dropout=float(dropout),
                             task_type="SEQ_CLS")
    return peft.get_peft_model(model, config), tokenizer
