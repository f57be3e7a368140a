"""Deterministic training loop for torch adapters, and the `TrainingRecorder` for checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.validate import InputError, check_choice, check_number

if TYPE_CHECKING:  # pragma: no cover
    from .base import ModelAdapter


OPTIMIZERS = ("adam", "sgd")


@dataclass
class TrainConfig:
    """How a torch adapter is trained. Deterministic for a given `seed`.

    The objective is the (weighted) mean loss plus the adapter's regulariser; weight decay is part
    of that objective (an explicit L2 term), not an optimizer side effect.
    """

    optimizer: str = "adam"  # "adam" | "sgd"
    lr: float = 1e-2
    epochs: int = 100
    batch_size: int | None = None  # None = full batch
    momentum: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.optimizer, OPTIMIZERS, "TrainConfig.optimizer")
        check_number(self.lr, "TrainConfig.lr", low=0, low_open=True)
        check_number(self.epochs, "TrainConfig.epochs", kind=int, low=0)
        check_number(self.batch_size, "TrainConfig.batch_size", kind=int, low=0, none=True)  # 0 or None: full batch
        check_number(self.momentum, "TrainConfig.momentum", low=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Checkpoint:
    """Analysed parameters at one training step, with the learning rate used at that step."""

    step: int
    lr: float
    params: dict[str, torch.Tensor]


class TrainingRecorder:
    """Records checkpoints during training (for TracIn, Diff-In).

    Call ``recorder.record(adapter, step, lr)`` after each optimizer step of your own loop (the adapter
    reads your module's current weights), or pass the recorder to ``adapter.fit(train, recorder=...)``.
    A checkpoint is kept every `every` steps (``step % every == 0``); pass ``last=True`` for the final step
    so that it is kept too. Checkpoints are kept in memory, and also saved to ``directory`` as
    ``ckpt-<step>.pt`` when one is given.

    Parameters
    ----------
    every : record one checkpoint every `every` optimizer steps (and always the last step)
    directory : optional folder for the checkpoints
    """

    def __init__(self, every: int = 1, directory: str | Path | None = None) -> None:
        self.every = max(1, int(every))
        self.directory = Path(directory) if directory else None
        self.checkpoints: list[Checkpoint] = []

    def record(self, adapter: "ModelAdapter", step: int, lr: float, last: bool = False) -> bool:
        """Keep the adapter's current analysed parameters as the checkpoint of `step` when
        ``step % every == 0`` or `last`; a step already recorded is not recorded twice.
        Returns whether a checkpoint was kept."""
        step = int(step)
        if not (step % self.every == 0 or last) or (self.checkpoints and self.checkpoints[-1].step == step):
            return False
        ckpt = Checkpoint(step, float(lr), adapter.params())
        self.checkpoints.append(ckpt)
        if self.directory is not None:
            from ..data.atomic import atomic_write

            atomic_write(self.directory / f"ckpt-{step}.pt",
                         lambda p: torch.save({"step": ckpt.step, "lr": ckpt.lr, "params": ckpt.params}, p))
        return True

    def maybe_record(self, adapter: "ModelAdapter", step: int, lr: float, last: bool) -> None:
        self.record(adapter, step, lr, last=last)

    @classmethod
    def load(cls, directory: str | Path) -> "TrainingRecorder":
        rec = cls(directory=None)
        for f in sorted(Path(directory).glob("ckpt-*.pt"), key=lambda p: int(p.stem.split("-")[1])):
            d = torch.load(f, weights_only=True)
            rec.checkpoints.append(Checkpoint(d["step"], d["lr"], d["params"]))
        return rec

    def __len__(self) -> int:
        return len(self.checkpoints)


def train_torch(adapter: "ModelAdapter", X: torch.Tensor, t: torch.Tensor, config: TrainConfig,
                sample_weight: np.ndarray | None = None, recorder: TrainingRecorder | None = None) -> None:
    """Minimise mean(w_i * loss_i) + regulariser over all trainable parameters of `adapter.module`."""
    module = adapter.module
    assert module is not None
    gen = torch.Generator().manual_seed(config.seed)
    params = [p for p in module.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=config.lr)
    elif config.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    else:
        raise InputError(f"optimizer must be one of {list(OPTIMIZERS)}, got {config.optimizer!r}")
    n = X.shape[0]
    w = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=X.dtype)
    bs = n if not config.batch_size else min(int(config.batch_size), n)
    steps_per_epoch = (n + bs - 1) // bs
    total = config.epochs * steps_per_epoch
    names = dict(module.named_parameters())
    reg_items = [(names[k], c) for k, c in adapter.reg_coef.items() if c and k in names]
    step = 0
    module.train()
    from .base import loss_from_outputs  # local: base imports this module's types

    first = last = None  # mean training objective of the first and of the last epoch
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=gen) if bs < n else torch.arange(n)
        total_loss = torch.zeros((), dtype=X.dtype, device=X.device)  # summed on the device: no sync per step
        for b in range(steps_per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            opt.zero_grad(set_to_none=True)
            losses = loss_from_outputs(adapter.loss, module(X[idx]), t[idx])
            loss = (losses * w[idx]).mean() if w is not None else losses.mean()
            for p, c in reg_items:
                loss = loss + 0.5 * c * (p**2).sum()
            total_loss = total_loss + loss.detach()
            loss.backward()
            opt.step()
            step += 1
            if recorder is not None:
                module.eval()
                recorder.maybe_record(adapter, step, opt.param_groups[0]["lr"], last=step == total)
                module.train()
        last = float(total_loss) / steps_per_epoch
        if not np.isfinite(last):
            raise InputError(f"training diverged: the training loss is {last} in epoch {epoch + 1} with learning rate "
                             f"{config.lr:g}; lower the learning rate (--lr)")
        first = last if first is None else first
    module.eval()
    check_converging(first, last, config)


DIVERGED = 2.0  # a last-epoch objective above this multiple of the first epoch's: the training diverged


def check_converging(first: float | None, last: float | None, config: TrainConfig) -> None:
    """One-line `InputError` when training made the objective worse: the mean training objective (loss plus
    regulariser) of the last epoch is more than `DIVERGED` times that of the first. A run that ends worse than
    its random start (``--lr 1e8``: most ReLUs dead, most per-sample gradients exactly 0, the damping rule at
    1e10) gives scores that describe no trained model, so it stops here, before any scoring, instead of a
    warning that a scripted run would not read. Gradient noise and a learning-rate schedule never double the
    epoch mean of a working run."""
    if first is None or last is None or first <= 0:
        return
    if last > DIVERGED * first:
        raise InputError(f"training diverged: the mean training loss rose from {first:.4g} (first epoch) to "
                         f"{last:.4g} (last epoch) with learning rate {config.lr:g}; lower the learning rate (--lr)")
