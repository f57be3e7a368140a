"""Exact attribution through the whole training run: metagradients d f / d w_i (issue 26).

The training run of influent's trainer is a function of the per-sample weights w (the loss of a step is
``sum_b w_b l_b / B`` plus the L2 term), and so is the target f(theta_T(w)). Its gradient at the recorded
weights (w = 1 unless the fit was weighted) is computed by reverse mode through every optimizer step:
Engstrom et al., "Optimizing ML Training with Metagradient Descent" (2025), and the MAGIC attribution
method (Ilyas & Engstrom, "MAGIC: Near-Optimal Data Attribution for Deep Learning", arXiv 2504.16430).
The adjoint of (parameters, optimizer buffers) is carried backwards step by step, and each step adds
``adjoint^T d(step)/d w_b`` to the weight gradient of the samples in its batch. Memory stays bounded by
recomputing one segment at a time from the recorded states (`TrainingRecord.states`, every ~sqrt(T)
steps): the segment's steps are replayed forward from its state keeping their autograd graphs, then
swept backwards.

Value of sample i (influent's sign): the first-order rise of the target when i is removed (w_i: 1 -> 0),
``value_i = -d f / d w_i``; removing a helpful sample raises the loss, so its value is positive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..data import Split
from ..data.validate import InputError, check_number
from ..models.base import ModelAdapter, loss_from_outputs
from ..models.refit import TargetValue, refit_many
from ..models.training import TrainingRecord, data_key, optimizer_step, params_key
from .options import MethodOptions, opt
from .registry import Job, Result, register_method, register_pairwise, to_numpy

NAME = "unrolled"


@dataclass
class UnrolledOptions(MethodOptions):
    """Options of the unrolled metagradient (MAGIC, arXiv 2504.16430)."""

    smoothness: int = opt(0, "random removal sets per fraction retrained (same recipe, weight 0) to check how far "
                             "the first-order prediction holds; 0: no check (each set costs one training run)")
    fractions: list = opt([0.01, 0.05], "fractions of the training set removed by the smoothness check")
    test_batch: int = opt(64, "pairwise form: test samples whose adjoints are carried together (memory x this)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self.smoothness, "unrolled: smoothness", kind=int, low=0)
        check_number(self.test_batch, "unrolled: test_batch", kind=int, low=1)
        if not isinstance(self.fractions, (list, tuple)) or not self.fractions:
            raise InputError(f"unrolled: fractions must be a list such as [0.01, 0.05], got {self.fractions!r}")
        for f in self.fractions:
            check_number(f, "unrolled: fractions", low=0, low_open=True, high=1, high_open=True)


# ---- checks: is this training run replayable? --------------------------------------------------------
def replayable(adapter: ModelAdapter, train: Split) -> tuple[TrainingRecord, torch.Tensor, torch.Tensor]:
    """The adapter's `TrainingRecord` and the training tensors (X, t), or a one-line `InputError` saying why
    the run cannot be replayed."""
    record = getattr(adapter, "record_", None)
    if not isinstance(record, TrainingRecord):
        raise InputError(f"method {NAME!r} replays training, but this model was not fitted by influent's trainer "
                         "with a record: fit it with TorchAdapter(net, train=TrainConfig(...), fitted=False).fit(train) "
                         "(a model trained in your own loop cannot be replayed)")
    if not record.deterministic:
        raise InputError(f"method {NAME!r}: the model was trained on {record.device} without deterministic kernels; "
                         "call torch.use_deterministic_algorithms(True) before fit to make it replayable")
    module = adapter._require_fitted()
    odd = sorted({type(m).__name__ for m in module.modules()
                  if isinstance(m, (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm))})
    if odd:
        raise InputError(f"method {NAME!r}: the model has {odd} layers, whose training steps depend on random "
                         "draws or batch statistics that are not recorded; training cannot be replayed")
    X, t = adapter.tensors(train)
    if len(train) != record.n or data_key(X, t) != record.data:
        raise InputError(f"method {NAME!r}: {train.name} is not the split the model was fitted on (unknown data "
                         "order); pass the same training split")
    if params_key(_trainable(module)) != record.final:
        raise InputError(f"method {NAME!r}: the model's weights changed after the recorded fit; refit it")
    return record, X, t


def _trainable(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}


# ---- the reverse sweep ---------------------------------------------------------------------------------
def metagradient(adapter: ModelAdapter, record: TrainingRecord, X: torch.Tensor, t: torch.Tensor,
                 adjoint: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    """((m, n) d f_j / d w_i at the recorded weights, replay error), for m targets whose gradients at the final parameters
    are `adjoint` (name -> (m, *shape)), by reverse mode through every recorded step.

    Segment by segment from the last: replay the segment's steps from its recorded state, keeping each
    step's autograd graph (the step's gradient is taken with ``create_graph=True``), then sweep them
    backwards with the m adjoints batched (``is_grads_batched``): each step maps the adjoint of
    (params, optimizer buffers) after it to the one before it and gives the weights' gradients of its
    batch (``d step / d w_b`` flows through the step's loss ``sum_b w_b l_b / B``). Memory: the recorded
    states plus one segment's graphs.

    Each replayed segment must end where the recorded run went (the next recorded state, or the trained
    parameters): the replay error is the largest relative difference (max |replayed - recorded| / max
    |recorded| over each parameter), and a one-line `InputError` says the run does not replay when it
    exceeds `REPLAY_TOL` for the dtype."""
    module = adapter._require_fitted()
    fixed = {**{n: p.detach() for n, p in module.named_parameters() if not p.requires_grad},
             **dict(module.named_buffers())}
    batches = record.batches()
    names = list(adjoint)
    m = adjoint[names[0]].shape[0]
    W = record.sample_weight.to(X.device)
    out = torch.zeros(m, record.n, dtype=W.dtype, device=X.device)

    def step(k: int, params: dict, state: dict, wb: torch.Tensor) -> tuple[dict, dict]:
        idx = batches[k].to(X.device)
        losses = loss_from_outputs(adapter.loss, functional_call(module, {**fixed, **params}, (X[idx],)), t[idx])
        obj = (losses * wb).mean()
        for name, c in record.reg.items():
            obj = obj + 0.5 * c * (params[name] ** 2).sum()
        g = torch.autograd.grad(obj, [params[n] for n in names], create_graph=True)
        return optimizer_step(record.optimizer, record.hyper, params, state, dict(zip(names, g)),
                              record.lrs[k], k + 1)

    a_flat: list[torch.Tensor] | None = None
    error = 0.0
    final = {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}
    starts = sorted(record.states)
    ends = starts[1:] + [record.steps]
    for start, end in reversed(list(zip(starts, ends))):
        saved = record.states[start]
        parts = [part for part in saved if part != "params"]
        flat = [saved["params"][n] for n in names] + [saved[part][n] for part in parts for n in names]
        if a_flat is None:  # the target's gradient; the optimizer buffers do not enter the target
            a_flat = [adjoint[n] for n in names] + [torch.zeros_like(adjoint[n]) for _ in parts for n in names]
        tape = []
        with torch.enable_grad(), module_mode(module, True):
            for k in range(start, end):
                inputs = [v.detach().to(X.device).requires_grad_(True) for v in flat]
                wb = W[batches[k].to(X.device)].clone().requires_grad_(True)
                params = dict(zip(names, inputs[:len(names)]))
                state = {part: dict(zip(names, inputs[(i + 1) * len(names):(i + 2) * len(names)]))
                         for i, part in enumerate(parts)}
                new_params, new_state = step(k, params, state, wb)
                flat = [new_params[n] for n in names] + [new_state[part][n] for part in parts for n in names]
                tape.append((k, inputs + [wb], flat))
        reached = record.states[end]["params"] if end in record.states else final
        for n, v in zip(names, flat):
            ref = reached[n].to(v.device)
            error = max(error, float((v.detach() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)))
        tol = REPLAY_TOL.get(W.dtype, 1e-2)
        if not error <= tol:
            raise InputError(f"method {NAME!r}: training does not replay (steps {start}-{end} end {error:.2g} away from "
                             f"the recorded run, tolerance {tol:g}): the loop's loss or optimizer differs from the record, "
                             "or its kernels are not deterministic")
        for k, inputs, outputs in reversed(tape):
            got = _vjp(outputs, inputs, a_flat, m)
            a_flat = got[:-1]
            out[:, batches[k].to(X.device)] += got[-1]
        del tape
    return out, error


REPLAY_TOL = {torch.float64: 1e-9, torch.float32: 1e-4}  # replayed vs recorded segment ends (relative)


def _vjp(outputs: list[torch.Tensor], inputs: list[torch.Tensor], cotangents: list[torch.Tensor],
         m: int) -> list[torch.Tensor]:
    """(m, *input shape) cotangent^T d outputs / d input for each input, the m cotangents batched."""
    if m == 1:
        got = torch.autograd.grad(outputs, inputs, [c[0] for c in cotangents], allow_unused=True)
        return [torch.zeros((1, *x.shape), dtype=x.dtype, device=x.device) if g is None else g.unsqueeze(0)
                for g, x in zip(got, inputs)]
    try:
        got = torch.autograd.grad(outputs, inputs, cotangents, retain_graph=True, allow_unused=True,
                                  is_grads_batched=True)
    except RuntimeError:  # an operation without a batching rule for its double backward: one cotangent at a time
        rows = [torch.autograd.grad(outputs, inputs, [c[j] for c in cotangents], retain_graph=j < m - 1,
                                    allow_unused=True) for j in range(m)]
        got = [None if r[0] is None else torch.stack(r) for r in zip(*rows)]
    return [torch.zeros((m, *x.shape), dtype=x.dtype, device=x.device) if g is None else g
            for g, x in zip(got, inputs)]


class module_mode:
    """Train (or eval) mode inside the block, each submodule's own mode restored after (the trainer runs
    in train mode; dropout and batch norm are refused, so only a user module's own mode logic differs)."""

    def __init__(self, module: nn.Module, train: bool) -> None:
        self.module, self.train = module, train

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.module.modules()]
        self.module.train(self.train)
        return self.module

    def __exit__(self, *exc: Any) -> None:
        for m, mode in self.modes:
            m.training = mode


def _final_params(adapter: ModelAdapter) -> dict[str, torch.Tensor]:
    return _trainable(adapter._require_fitted())


def target_adjoint(job: Job) -> dict[str, torch.Tensor]:
    """(1, *shape) gradient of the job's target at the final parameters (all trainable ones)."""
    target = job.need_target(NAME)
    params = {n: p.clone() for n, p in _final_params(job.adapter).items()}
    g = grad(lambda p: target.value(job.adapter, p))(params)
    return {n: v.unsqueeze(0) for n, v in g.items()}


def test_adjoint(adapter: ModelAdapter, test: Split) -> dict[str, torch.Tensor]:
    """(m, *shape) per-sample gradients of the test losses at the final parameters."""
    Xs, ts = adapter.tensors(test)
    params = _final_params(adapter)

    def one(x: torch.Tensor, y: torch.Tensor) -> dict:
        return grad(lambda p: adapter.per_sample_loss(p, x[None], y[None]).sum())(params)

    return vmap(one)(Xs, ts)


# ---- the method ----------------------------------------------------------------------------------------
@register_method(NAME, title="unrolled metagradient", options=UnrolledOptions,
                 local_only="it replays the recorded training run step by step in one process")
def unrolled(job: Job) -> Result:
    """Unrolled metagradient (MAGIC): values = -d f / d w_i through every recorded training step.

    raw = d f / d w_i at the recorded weights; values = -raw, the first-order rise of the target when
    sample i is removed. Options: `UnrolledOptions` (``influent methods unrolled``)."""
    record, X, t = replayable(job.adapter, job.train)
    if job.options.smoothness and record.steps_batches is not None:
        raise InputError(f"method {NAME!r}: the smoothness check retrains with influent's trainer, which cannot rerun "
                         "a loop of your own (LoopRecorder); use smoothness=0 and retrain your loop with weights")
    t0 = time.perf_counter()
    raw, error = metagradient(job.adapter, record, X, t, target_adjoint(job))
    raw = raw[0]
    job.timing["scoring"] = time.perf_counter() - t0
    job.used["record"] = record.describe()
    job.used["replay_error"] = error
    values = to_numpy(-raw)
    if job.options.smoothness:
        job.used["smoothness"] = smoothness_check(job, values)
    return Result(values, to_numpy(raw))


@register_pairwise(NAME)
def unrolled_pairwise(job: Job, test: Split) -> np.ndarray:
    """(n_train, n_test): -d loss_j / d w_i, the first-order rise of test loss j when i is removed; the test
    samples' adjoints go through the reverse sweep `test_batch` at a time."""
    record, X, t = replayable(job.adapter, job.train)
    cols = []
    step = job.options.test_batch
    for s in range(0, len(test), step):
        part = test.subset(np.arange(s, min(len(test), s + step)))
        cols.append(-metagradient(job.adapter, record, X, t, test_adjoint(job.adapter, part))[0])
    return to_numpy(torch.cat(cols, 0).T)


def smoothness_check(job: Job, values: np.ndarray) -> dict[str, Any]:
    """How far the first-order prediction holds for larger removals: for each fraction, `smoothness` random
    sets S are removed (weight 0, the same recipe and batch order, through `refit_many`) and the actual
    change of the target is compared with the prediction sum_{i in S} value_i."""
    o = job.options
    target = job.need_target(NAME)
    n = len(job.train)
    base = to_numpy(job.adapter.record_.sample_weight)
    rng = np.random.default_rng(job.seed)
    sets = [(f, rng.choice(n, max(1, int(round(f * n))), replace=False)) for f in o.fractions
            for _ in range(o.smoothness)]
    weights = [base.copy() for _ in range(len(sets) + 1)]
    for w, (_, S) in zip(weights[1:], sets):
        w[S] = 0.0
    got = refit_many(job.adapter, job.train, [np.arange(n)] * len(weights), TargetValue(target),
                     weights=weights, n_jobs=1, seed=job.seed)
    report: dict[str, Any] = {}
    for f in o.fractions:
        pred = np.array([values[S].sum() for g, S in sets if g == f])
        actual = np.array([got[k + 1] - got[0] for k, (g, _) in enumerate(sets) if g == f])
        rel = float(np.abs(pred - actual).sum() / max(np.abs(actual).sum(), 1e-300))
        report[f"{f:g}"] = {"predicted": pred.round(8).tolist(), "actual": np.round(actual, 8).tolist(),
                            "relative_error": rel,
                            "pearson": float(np.corrcoef(pred, actual)[0, 1]) if len(pred) >= 3 else None}
    return report
