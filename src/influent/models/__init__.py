"""Model adapters: which parameters are analysed, the per-sample loss as a pure function, fit/refit."""

from .base import ModelAdapter, loss_from_outputs, probabilities
from .cnn import SmallCNN
from .sklearn_logistic import SklearnLogistic
from .torch_adapter import TabularMLP, TorchAdapter
from .training import Checkpoint, TrainConfig, TrainingRecorder, train_torch

__all__ = ["ModelAdapter", "SklearnLogistic", "TorchAdapter", "TabularMLP", "SmallCNN", "TrainConfig", "TrainingRecorder",
           "Checkpoint", "train_torch", "loss_from_outputs", "probabilities"]
