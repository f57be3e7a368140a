"""Model adapters: which parameters are analysed, the per-sample loss as a pure function, fit/refit."""

from .base import ModelAdapter, loss_from_outputs, probabilities
from .cnn import SmallCNN
from .sklearn_logistic import SklearnLogistic
from .torch_adapter import TabularMLP, TorchAdapter
from .training import Checkpoint, LoopRecorder, TrainConfig, TrainingRecord, TrainingRecorder, train_torch

def __getattr__(name: str):  # HFAdapter imports no transformers itself, but loads lazily like the extra it serves
    if name == "HFAdapter":
        from .hf import HFAdapter

        return HFAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["HFAdapter", "ModelAdapter", "SklearnLogistic", "TorchAdapter", "TabularMLP", "SmallCNN", "TrainConfig", "TrainingRecorder", "TrainingRecord", "LoopRecorder",
           "Checkpoint", "train_torch", "loss_from_outputs", "probabilities"]
