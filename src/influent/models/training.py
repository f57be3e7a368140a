"""Deterministic training loop for torch adapters, and the `TrainingRecorder` for checkpoints."""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.validate import InputError, check_choice, check_number

if TYPE_CHECKING:  # pragma: no cover
    from .base import ModelAdapter


OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "linear", "cosine")
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, the ones `train_torch` uses
ADAM_EPS = 1e-8


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
    schedule: str = "constant"  # learning rate at step t of T: lr, lr*(1-t/T) ("linear"), lr*(1+cos(pi t/T))/2
    record: bool = True  # keep a `TrainingRecord` (adapter.record_) so that the run can be replayed
    record_every: int | None = None  # steps between recorded states; None: ceil(sqrt(T))

    def __post_init__(self) -> None:
        check_choice(self.optimizer, OPTIMIZERS, "TrainConfig.optimizer")
        check_choice(self.schedule, SCHEDULES, "TrainConfig.schedule")
        check_number(self.record_every, "TrainConfig.record_every", kind=int, low=1, none=True)
        check_number(self.lr, "TrainConfig.lr", low=0, low_open=True)
        check_number(self.epochs, "TrainConfig.epochs", kind=int, low=0)
        check_number(self.batch_size, "TrainConfig.batch_size", kind=int, low=0, none=True)  # 0 or None: full batch
        check_number(self.momentum, "TrainConfig.momentum", low=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate of optimizer step `step` (0-based) of `total` under `schedule`."""
        if self.schedule == "linear":
            return self.lr * (1.0 - step / max(1, total))
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total)))
        return self.lr


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


# ---- the replayable record of a run of `train_torch` (issue 26) ---------------------------------------------
State = dict[str, dict[str, torch.Tensor]]  # {"params": {...}, optimizer buffers: {"buf"} or {"m", "v"}}


def data_key(X: torch.Tensor, t: torch.Tensor) -> str:
    """Hash of the training tensors (features and encoded labels): a replay must see the same data."""
    h = hashlib.sha256()
    for a in (X, t):
        h.update(str((tuple(a.shape), a.dtype)).encode())
        h.update(a.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def params_key(params: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for n, p in params.items():
        h.update(n.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class TrainingRecord:
    """What is needed to replay a run of `train_torch` exactly (issue 26; Engstrom et al., "Optimizing ML Training with Metagradient Descent", 2025).

    The batch of step t is ``order(epoch)[b * batch : (b + 1) * batch]`` with the epoch orders drawn from
    ``torch.Generator().manual_seed(seed)`` (`batches()` regenerates them and checks them against
    `order_key`); the objective of a step is ``sum_b w_b l_b / B + sum_k c_k |theta_k|^2 / 2``; the optimizer
    step is `optimizer_step`. `states` holds the parameters and optimizer buffers before steps
    0, every, 2*every, ... (about sqrt(T) of them), so memory is O(sqrt(T) * p).
    """

    optimizer: str  # "sgd" | "adam"
    hyper: dict[str, Any]  # momentum; betas, eps
    seed: int
    batch_size: int  # B (the last batch of an epoch may be smaller)
    epochs: int
    n: int
    lrs: list[float]  # (T,) learning rate of each step
    reg: dict[str, float]  # L2 coefficient per trainable parameter
    sample_weight: torch.Tensor  # (n,) the weights of the recorded fit (ones unless given)
    every: int
    states: dict[int, State] = field(default_factory=dict)
    data: str = ""  # data_key of the training tensors
    final: str = ""  # params_key of the trained parameters
    order_key: str = ""
    device: str = "cpu"
    deterministic: bool = True  # CPU, or torch.use_deterministic_algorithms(True) during the fit
    steps_batches: list[torch.Tensor] | None = None  # a user's loop (`LoopRecorder`): each step's batch as given

    @property
    def steps(self) -> int:
        return len(self.lrs)

    def orders(self) -> list[torch.Tensor]:
        """The `epochs` permutations of range(n) the run used (arange when full batch)."""
        gen = torch.Generator().manual_seed(self.seed)
        full = self.batch_size >= self.n
        return [torch.arange(self.n) if full else torch.randperm(self.n, generator=gen) for _ in range(self.epochs)]

    def batches(self) -> list[torch.Tensor]:
        """(T,) index tensors, the batch of each step, regenerated from the seed (checked against the record)."""
        if self.steps_batches is not None:
            return self.steps_batches
        orders = self.orders()
        if _orders_key(orders) != self.order_key:
            raise InputError("training cannot be replayed: this torch version draws another batch order from the "
                             "recorded seed (unknown data order)")
        bs = self.batch_size
        return [o[b:b + bs] for o in orders for b in range(0, self.n, bs)]

    def describe(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, **self.hyper, "steps": self.steps, "batch_size": self.batch_size,
                "record_every": self.every, "n_states": len(self.states)}


def _orders_key(orders: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for o in orders:
        h.update(o.numpy().astype(np.int64).tobytes())
    return h.hexdigest()[:16]


def _safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """sqrt(v) for v >= 0 whose derivative is 0 (not nan) where v == 0 (a parameter whose gradient was
    always 0): the same values as ``v.sqrt()``."""
    pos = v > 0
    return torch.where(pos, torch.where(pos, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))


def optimizer_step(kind: str, hyper: dict[str, Any], params: dict[str, torch.Tensor], state: dict,
                   grads: dict[str, torch.Tensor], lr: float, step: int) -> tuple[dict, dict]:
    """One optimizer step as a pure (differentiable) function, the update of torch.optim.SGD
    (momentum, no dampening) and torch.optim.Adam (Kingma & Ba, 2015, Alg. 1, bias-corrected).

    params, grads : name -> tensor; state : {"buf": ...} (SGD with momentum), {} (plain SGD) or
    {"m": ..., "v": ...} (Adam); step : 1-based step count (Adam's bias correction).
    Returns (new params, new state).
    """
    if kind == "sgd":
        mu = float(hyper.get("momentum", 0.0))
        if not mu:
            return {n: p - lr * grads[n] for n, p in params.items()}, {}
        buf = {n: mu * state["buf"][n] + grads[n] for n in params}
        return {n: p - lr * buf[n] for n, p in params.items()}, {"buf": buf}
    b1, b2 = hyper["betas"]
    eps = hyper["eps"]
    m = {n: b1 * state["m"][n] + (1 - b1) * grads[n] for n in params}
    v = {n: b2 * state["v"][n] + (1 - b2) * grads[n] * grads[n] for n in params}
    bc1, bc2 = 1 - b1**step, 1 - b2**step
    new = {n: p - (lr / bc1) * m[n] / (_safe_sqrt(v[n]) / math.sqrt(bc2) + eps) for n, p in params.items()}
    return new, {"m": m, "v": v}


def _zero_state(kind: str, hyper: dict[str, Any], params: dict[str, torch.Tensor]) -> dict:
    if kind == "sgd":
        return {"buf": {n: torch.zeros_like(p) for n, p in params.items()}} if hyper.get("momentum") else {}
    return {"m": {n: torch.zeros_like(p) for n, p in params.items()},
            "v": {n: torch.zeros_like(p) for n, p in params.items()}}


def _snapshot(kind: str, hyper: dict[str, Any], named: dict[str, torch.nn.Parameter],
              opt: torch.optim.Optimizer) -> State:
    """The parameters and the optimizer's buffers now, copied, in `optimizer_step`'s layout."""
    params = {n: p.detach().clone() for n, p in named.items()}
    state = _zero_state(kind, hyper, params)
    keys = {"buf": "momentum_buffer", "m": "exp_avg", "v": "exp_avg_sq"}
    for part, d in state.items():
        for n, p in named.items():
            got = opt.state.get(p, {}).get(keys[part])
            if got is not None:
                d[n] = got.detach().clone()
    return {"params": params, **state}


def train_torch(adapter: "ModelAdapter", X: torch.Tensor, t: torch.Tensor, config: TrainConfig,
                sample_weight: np.ndarray | None = None, recorder: TrainingRecorder | None = None) -> TrainingRecord | None:
    """Minimise mean(w_i * loss_i) + regulariser over all trainable parameters of `adapter.module`.

    Returns the `TrainingRecord` of the run (None with ``config.record=False``): the batch order, learning
    rates, sample weights and the parameters + optimizer buffers every ``config.record_every`` (default
    ceil(sqrt(T))) steps, so that `influent.methods.unrolled` can replay it."""
    module = adapter.module
    assert module is not None
    gen = torch.Generator().manual_seed(config.seed)
    named = {n: p for n, p in module.named_parameters() if p.requires_grad}
    params = list(named.values())
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=config.lr, betas=ADAM_BETAS, eps=ADAM_EPS)
        hyper: dict[str, Any] = {"betas": ADAM_BETAS, "eps": ADAM_EPS}
    elif config.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
        hyper = {"momentum": float(config.momentum)}
    else:
        raise InputError(f"optimizer must be one of {list(OPTIMIZERS)}, got {config.optimizer!r}")
    n = X.shape[0]
    w = torch.ones(n, dtype=X.dtype) if sample_weight is None else torch.as_tensor(sample_weight, dtype=X.dtype)
    w = w.to(X.device)
    bs = n if not config.batch_size else min(int(config.batch_size), n)
    steps_per_epoch = (n + bs - 1) // bs
    total = config.epochs * steps_per_epoch
    reg_items = [(named[k], c) for k, c in adapter.reg_coef.items() if c and k in named]
    every = config.record_every or max(1, math.ceil(math.sqrt(total)))
    record = None
    if config.record:
        record = TrainingRecord(config.optimizer, hyper, config.seed, bs, config.epochs, n, [],
                                {k: float(c) for k, c in adapter.reg_coef.items() if c and k in named},
                                w.detach().clone(), every, data=data_key(X, t), device=str(X.device),
                                deterministic=X.device.type == "cpu" or torch.are_deterministic_algorithms_enabled())
    orders = []
    step = 0
    module.train()
    from .base import loss_from_outputs  # local: base imports this module's types

    first = last = None  # mean training objective of the first and of the last epoch
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=gen) if bs < n else torch.arange(n)
        orders.append(order)
        total_loss = torch.zeros((), dtype=X.dtype, device=X.device)  # summed on the device: no sync per step
        for b in range(steps_per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            lr = config.lr_at(step, total)
            for g in opt.param_groups:
                g["lr"] = lr
            if record is not None:
                record.lrs.append(lr)
                if step % every == 0:
                    record.states[step] = _snapshot(config.optimizer, hyper, named, opt)
            opt.zero_grad(set_to_none=True)
            dev_idx = idx.to(X.device)
            losses = loss_from_outputs(adapter.loss, module(X[dev_idx]), t[dev_idx])
            loss = (losses * w[dev_idx]).mean()
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
    if record is not None:
        record.order_key = _orders_key(orders)
        record.final = params_key(named)
    return record


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


class LoopRecorder:
    """Records a training loop of your own so that it can be replayed (method "unrolled", issue 26).

    The loop must take, at each step, the batch ``X[idx]`` of the rows `idx` of `train`, minimise the mean
    of the adapter's per-sample loss over it (``loss_fn(net(X[idx]), y[idx])`` with mean reduction; L2 only
    through the optimizer's ``weight_decay``) and step a ``torch.optim.SGD`` (momentum, no dampening or
    Nesterov) or ``torch.optim.Adam`` (no AMSGrad) over all the module's trainable parameters::

        model = TorchAdapter(net)                       # the module you train (read live)
        rec = LoopRecorder(model, opt, train, steps=T)  # before the first step
        for idx in batches:
            opt.zero_grad(); loss_fn(net(X[idx]), y[idx]).backward()
            rec.step(idx)                               # before opt.step(): the batch and the lr it uses
            opt.step()
        rec.finish()                                    # model.record_ now replays the loop

    A loop that does something else is caught when it is replayed: every replayed segment must end where
    the loop went (`methods.unrolled`). States are kept every `every` steps (default ceil(sqrt(steps))).
    """

    def __init__(self, adapter: "ModelAdapter", optimizer: torch.optim.Optimizer, train: Any,
                 steps: int | None = None, every: int | None = None) -> None:
        module = adapter._require_fitted()
        if getattr(adapter, "_source", None) is not None:
            raise InputError("LoopRecorder needs the adapter to analyse your module itself (no dtype= cast)")
        kind = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam"}.get(type(optimizer))
        if kind is None:
            raise InputError(f"LoopRecorder replays torch.optim.SGD and torch.optim.Adam, got {type(optimizer).__name__}")
        named = {n: p for n, p in module.named_parameters() if p.requires_grad}
        ids = {id(p): n for n, p in named.items()}
        in_opt = [p for g in optimizer.param_groups for p in g["params"]]
        if sorted(ids.get(id(p), "?") for p in in_opt) != sorted(named):
            raise InputError("LoopRecorder: the optimizer must step exactly the module's trainable parameters")
        g0 = optimizer.param_groups[0]
        odd = [k for k in ("dampening", "nesterov", "amsgrad", "maximize", "decoupled_weight_decay")
               if g0.get(k)]
        keys = ("momentum", "betas", "eps", "weight_decay", "lr")
        if odd or any(any(g.get(k) != g0.get(k) for k in keys) for g in optimizer.param_groups[1:]):
            raise InputError(f"LoopRecorder cannot replay this optimizer: {odd or 'parameter groups with different settings'}")
        if any(optimizer.state.get(p) for p in in_opt):
            raise InputError("LoopRecorder must be created before the optimizer's first step")
        hyper = {"momentum": float(g0.get("momentum", 0.0))} if kind == "sgd" else {
            "betas": tuple(float(b) for b in g0["betas"]), "eps": float(g0["eps"])}
        X, t = adapter.tensors(train)
        wd = float(g0.get("weight_decay", 0.0))
        self.adapter, self.optimizer, self.named, self.kind, self.hyper = adapter, optimizer, named, kind, hyper
        self.every = every or (max(1, math.ceil(math.sqrt(steps))) if steps else 32)
        self.record = TrainingRecord(kind, hyper, -1, 0, 0, len(X), [], {n: wd for n in named} if wd else {},
                                     torch.ones(len(X), dtype=X.dtype), self.every, data=data_key(X, t),
                                     device=str(X.device), steps_batches=[],
                                     deterministic=X.device.type == "cpu" or torch.are_deterministic_algorithms_enabled())

    def step(self, idx: Any) -> None:
        """Record the coming optimizer step: its batch `idx` (positions in `train`) and learning rate; call
        it after ``backward()`` and before ``optimizer.step()``."""
        rec = self.record
        batch = torch.as_tensor(np.asarray(idx), dtype=torch.long).reshape(-1).cpu()
        if batch.numel() == 0 or int(batch.min()) < 0 or int(batch.max()) >= rec.n:
            raise InputError(f"LoopRecorder.step: batch positions must lie in [0, {rec.n})")
        k = rec.steps
        if k % self.every == 0:
            rec.states[k] = _snapshot(self.kind, self.hyper, self.named, self.optimizer)
        rec.steps_batches.append(batch)
        rec.lrs.append(float(self.optimizer.param_groups[0]["lr"]))
        rec.batch_size = max(rec.batch_size, batch.numel())

    def finish(self) -> TrainingRecord:
        """Close the record after the last ``optimizer.step()``; sets and returns ``adapter.record_``."""
        self.record.final = params_key(self.named)
        self.adapter.record_ = self.record
        return self.record
