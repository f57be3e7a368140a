"""A `transformers.TrainerCallback` that records the checkpoints TracIn and Diff-In need.

TracIn (Pruthi et al. 2020, eq. 3, TracInCP) sums ``eta_c g_z(theta_c) . g_z'(theta_c)`` over checkpoints
``theta_c`` with the learning rate ``eta_c`` of the step that produced them. The Trainer steps its
scheduler right after the optimizer, so the callback reads the rate in ``on_optimizer_step`` (the rate
that step used) and keeps the analysed parameters in ``on_step_end`` (after ``global_step`` is counted):
checkpoint ``k`` holds the parameters after optimizer step ``k`` and the rate of step ``k`` — the same
record as `TrainingRecorder.record(adapter, k, lr)` in a loop of one's own.

Only the adapter's analysed parameters are copied (the LoRA matrices for ``params="lora"``), every
`every` steps; ``benchmarks/hf_callback.py`` measures the overhead against the same run without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .hf import require_transformers
from .training import Checkpoint, TrainingRecorder

_CLASS: type | None = None


def _callback_class() -> type:
    """The callback class, built on first use so that importing this module needs no transformers."""
    global _CLASS
    if _CLASS is None:
        transformers = require_transformers("InfluentCallback")

        class InfluentTrainerCallback(transformers.TrainerCallback):
            __doc__ = InfluentCallback.__doc__

            def __init__(self, adapter: Any, every: int = 1, directory: str | Path | None = None) -> None:
                self.adapter = adapter
                self.recorder = TrainingRecorder(every=every, directory=directory)
                self._lr: float | None = None

            @property
            def checkpoints(self) -> list[Checkpoint]:
                return self.recorder.checkpoints

            def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
                if optimizer is not None:
                    self._lr = float(optimizer.param_groups[0]["lr"])

            def on_step_end(self, args, state, control, **kwargs):
                lr = self._lr if self._lr is not None else float(args.learning_rate)
                self.recorder.record(self.adapter, state.global_step, lr, last=state.global_step == state.max_steps)

        _CLASS = InfluentTrainerCallback
    return _CLASS


def InfluentCallback(adapter: Any, every: int = 1, directory: str | Path | None = None) -> Any:
    """A Trainer callback recording checkpoints of `adapter`'s analysed parameters for TracIn / Diff-In.

    Parameters
    ----------
    adapter : an `HFAdapter` (or `TorchAdapter`) around the model the Trainer trains (weights read live)
    every : keep a checkpoint every `every` optimizer steps (and always the last one)
    directory : also save each checkpoint there as ``ckpt-<step>.pt`` (`TrainingRecorder.load` reads them)

    Returns a ``transformers.TrainerCallback``; after ``trainer.train()`` its ``checkpoints`` (steps,
    learning rates, parameters) go to ``influent.score(..., method="tracin", checkpoints=cb.checkpoints)``.

    Examples
    --------
    >>> cb = InfluentCallback(HFAdapter(model, params="lora"), every=10)   # doctest: +SKIP
    >>> Trainer(model=model, args=args, train_dataset=ds, callbacks=[cb]).train()   # doctest: +SKIP
    """
    return _callback_class()(adapter, every, directory)
