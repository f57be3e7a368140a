"""`SmallCNN`: a two-convolution image classifier for (C, H, W) inputs, built at `fit` time."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..data import Split
from ..data.validate import InputError
from .torch_adapter import TorchAdapter
from .training import TrainConfig


class SmallCNN(TorchAdapter):
    """conv(k) - ReLU - max-pool(2) - conv(k) - ReLU - max-pool(2) - dropout - dense - ReLU - dropout - dense.

    The defaults are [FI]'s Table 6 network for MNIST (section 6.2): two 5 x 5 convolutions with 32 and
    64 channels, dropout, a 256-unit dense layer and the output layer. Dropout makes MC-dropout BALD possible; influence methods see the network in
    evaluation mode (no dropout).

    Parameters
    ----------
    channels : output channels of the two convolutions
    kernel : convolution kernel size (no padding)
    hidden : width of the first dense layer
    dropout : dropout rate before each dense layer
    init_seed : seed of the weight initialisation
    weight_decay : L2 coefficient of the objective
    Other parameters as `TorchAdapter` (default `params="all"`; FI-active uses the last layer).
    """

    def __init__(self, channels: Sequence[int] = (32, 64), kernel: int = 5, hidden: int = 256, dropout: float = 0.25,
                 loss: str = "cross_entropy", params: str | Sequence[str] = "all", weight_decay: float = 1e-3,
                 train: TrainConfig | None = None, dtype: torch.dtype = torch.float32, init_seed: int = 0) -> None:
        if len(channels) != 2:
            raise InputError(f"SmallCNN has two convolutions; channels must have 2 entries, got {list(channels)}")
        self.channels = tuple(int(c) for c in channels)
        self.kernel = int(kernel)
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.init_seed = int(init_seed)
        super().__init__(nn.Identity(), loss, params, weight_decay, train, dtype)

    def _make_module(self, split: Split) -> nn.Module:
        if split.X.ndim != 4:
            raise InputError(f"SmallCNN needs images shaped (n, channels, height, width), got {split.X.shape}")
        torch.manual_seed(self.init_seed)
        c_in, h, w = split.X.shape[1:]
        k = self.kernel
        for _ in range(2):
            h, w = (h - k + 1) // 2, (w - k + 1) // 2
        if h < 1 or w < 1:
            raise InputError(f"SmallCNN: images of {split.X.shape[2:]} are too small for two {k}x{k} convolutions")
        n_out = 1 if self.loss == "bce" else self.n_classes
        c1, c2 = self.channels
        return nn.Sequential(
            nn.Conv2d(c_in, c1, k), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, k), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(self.dropout), nn.Linear(c2 * h * w, self.hidden), nn.ReLU(),
            nn.Dropout(self.dropout), nn.Linear(self.hidden, n_out))

    def describe(self) -> dict:
        d = super().describe()
        d.update(channels=list(self.channels), kernel=self.kernel, hidden=self.hidden, dropout=self.dropout,
                 init_seed=self.init_seed)
        return d

