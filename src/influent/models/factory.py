"""The model named on the command line: ``logistic``, ``mlp``, ``cnn``, ``lora`` or ``file.py:name``,
built (and fitted) from its options."""

from __future__ import annotations

import copy
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any
import numpy as np
from ..data import Split
from ..data.validate import InputError


# ---- models --------------------------------------------------------------------------------------------
MODEL_OPTIONS = {"logistic": {"C"}, "mlp": {"hidden", "epochs", "lr", "batch_size", "weight_decay", "dropout"},
                 "lora": {"encoder", "max_length", "epochs", "lr", "batch_size", "weight_decay"}}


def _train_config(opts: dict[str, Any], seed: int):
    from . import TrainConfig

    kw = {k: opts[k] for k in ("epochs", "lr", "batch_size") if opts.get(k) is not None}
    return TrainConfig(seed=seed, **kw)


def build_model(spec: str, options: dict[str, Any] | None = None, train: Split | None = None, seed: int = 0):
    """A `ModelAdapter` from a model name.

    Parameters
    ----------
    spec : "logistic" (`SklearnLogistic`), "mlp" (`TabularMLP`), or "path/to/file.py:function" where the
        function takes no argument or the training `Split` and returns a `ModelAdapter`, a torch
        `nn.Module` (wrapped in `TorchAdapter` with cross-entropy over all parameters), or a dict of
        `TorchAdapter` arguments (``{"module": ..., "loss": "cross_entropy", "params": "last", ...}``)
    options : C for logistic; hidden (list of ints), epochs, lr, batch_size, weight_decay, dropout otherwise
    """
    from torch import nn

    from . import ModelAdapter, SklearnLogistic, TabularMLP, TorchAdapter, TrainConfig

    opts = {k: v for k, v in (options or {}).items() if v is not None}
    if spec in MODEL_OPTIONS:
        extra = sorted(set(opts) - MODEL_OPTIONS[spec])
        if extra:
            raise InputError(f"model {spec!r} does not take option(s) {extra}; it takes {sorted(MODEL_OPTIONS[spec])}")
    if spec == "logistic":
        return SklearnLogistic(C=float(opts.get("C", 1.0)))
    if spec == "mlp":
        hidden = opts.get("hidden", [64])
        decay = {"weight_decay": float(opts["weight_decay"])} if "weight_decay" in opts else {}
        return TabularMLP(hidden=[int(h) for h in hidden], dropout=float(opts.get("dropout", 0.0)),
                          train=_train_config(opts, seed), init_seed=seed, **decay)
    if spec == "lora":  # a LoRA classifier on the local encoder, fine-tuned by the run ([OGA]/[IP] recipe)
        from .hf import HFAdapter, lora_classifier

        if "encoder" not in opts:
            raise InputError("--model lora needs --encoder (all-MiniLM-L6-v2 or a local model folder) and --text-column")
        k = len(np.unique(train.y)) if train is not None else 2
        net, _ = lora_classifier(opts["encoder"], num_labels=k, seed=seed)
        lora_train = TrainConfig(seed=seed, lr=float(opts.get("lr", 1e-3)), epochs=int(opts.get("epochs", 3)),
                                 batch_size=int(opts.get("batch_size", 16)))
        return HFAdapter(net, params="lora", weight_decay=float(opts.get("weight_decay", 0.0)), train=lora_train,
                         fitted=False)
    if ":" not in spec or not spec.rsplit(":", 1)[0].endswith(".py"):
        raise InputError(f"unknown model {spec!r}; use logistic, mlp or path/to/file.py:function")
    file, func_name = spec.rsplit(":", 1)
    path = Path(file)
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    mod_spec = importlib.util.spec_from_file_location(f"influent_user_model_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    write_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # leave no __pycache__ beside the user's file
    try:
        mod_spec.loader.exec_module(module)
    except Exception as exc:
        raise InputError(f"model file {path} failed to import: {type(exc).__name__}: {exc}; "
                         "run it with python to see the traceback (or add --debug)") from exc
    finally:
        sys.dont_write_bytecode = write_bytecode
    func = getattr(module, func_name, None)
    if not callable(func):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:8]
        raise InputError(f"{path} has no function {func_name!r}; found {found}")
    try:
        n_args = len([p for p in inspect.signature(func).parameters.values()
                      if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
        made = func(train) if n_args >= 1 else func()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{spec} raised {type(exc).__name__}: {exc} (add --debug for the traceback)") from exc
    if isinstance(made, ModelAdapter):
        return made
    torch_kw = {"weight_decay": float(opts.get("weight_decay", 0.0)), "train": _train_config(opts, seed)}
    if isinstance(made, nn.Module):  # an architecture: trained by the run from its weights
        return TorchAdapter(made, fitted=False, **torch_kw)
    if isinstance(made, dict) and isinstance(made.get("module"), nn.Module):
        kw = {"fitted": False, **torch_kw, **made}
        if isinstance(kw.get("train"), dict):
            kw["train"] = TrainConfig(**kw["train"])
        try:
            return TorchAdapter(**kw)
        except TypeError as exc:
            raise InputError(f"{spec} returned a dict TorchAdapter cannot take: {exc}") from None
    raise InputError(f"{spec} must return an influent ModelAdapter, a torch nn.Module or a dict with a 'module'; "
                     f"got {type(made).__name__}")


def model_label(spec: str, adapter: Any) -> str:
    """A short human description, e.g. "logistic regression (C=0.1)"."""
    name = type(adapter).__name__
    if name == "SklearnLogistic":
        return f"logistic regression (C={adapter.C:g})"
    if name == "TabularMLP":
        return f"MLP {'-'.join(str(h) for h in adapter.hidden)} hidden units"
    return f"{name} from {spec}" if ":" in spec else name


def fast_refit_model(model: Any) -> Any:
    """An unfitted copy for repeated refits (removal curves): scikit-learn's solution without the Newton
    polish, which changes predictions only beyond 1e-10."""
    clone = model.clone()
    if hasattr(clone, "newton_steps"):
        clone = copy.copy(clone)
        clone.newton_steps = 0
    return clone
