"""The one retraining helper of the evaluation suite: refit an adapter on many subsets, in parallel
processes, with fixed seeds, and return a metric of each refit model.

Every protocol that needs ground truth (leave-one-out, LDS, brittleness, removal curves, the paper
experiments) goes through `refit_many`, so they share its determinism: the result of subset k depends
only on the subset, its weights and ``seed + k`` — not on `n_jobs` or on how tasks are batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import copy
import dataclasses

import numpy as np
import torch

from ..data import Split
from ..data.executor import current
from ..data.validate import InputError, check_number
from .base import ModelAdapter
from .training import TrainingRecorder

Metric = Callable[[ModelAdapter], Any]


# ---- metrics (small picklable callables: they travel to the worker processes) ----------------------
@dataclass
class Accuracy:
    """Accuracy of the refit model on `split`."""

    split: Split

    def __call__(self, model: ModelAdapter) -> float:
        return model.accuracy(self.split)


@dataclass
class Predictions:
    """(n,) predicted labels on `split`."""

    split: Split

    def __call__(self, model: ModelAdapter) -> np.ndarray:
        return np.asarray(model.predict(self.split))


@dataclass
class PerSampleLoss:
    """(n,) per-sample losses on `split` (the model's own loss, no regulariser)."""

    split: Split

    @torch.no_grad()
    def __call__(self, model: ModelAdapter) -> np.ndarray:
        X, t = model.tensors(self.split)
        return model.per_sample_loss(model.params(), X, t).numpy().astype(np.float64)


@dataclass
class TargetValue:
    """The value f(theta) of a prepared `Target` (e.g. validation loss, fairness gap, robust loss)."""

    target: Any

    def __call__(self, model: ModelAdapter) -> float:
        return float(self.target.evaluate(model))


@dataclass
class Several:
    """A dict of metrics evaluated on the same refit model."""

    metrics: dict[str, Metric]

    def __call__(self, model: ModelAdapter) -> dict[str, Any]:
        return {k: m(model) for k, m in self.metrics.items()}


@dataclass
class Fitted:
    """The refit model itself (for ensemble members): ``refit_many(..., metric=Fitted())``."""

    def __call__(self, model: ModelAdapter) -> ModelAdapter:
        return model


# ---- the helper -----------------------------------------------------------------------------------
def reseeded(model: ModelAdapter, seed: int) -> ModelAdapter:
    """An unfitted copy of `model` whose training randomness is drawn from `seed`: the data order and
    dropout (`TrainConfig.seed`) and the initial weights (``init_seed`` of `TabularMLP` / `SmallCNN`; for a
    user's module, every submodule's ``reset_parameters()`` under ``torch.manual_seed(seed)``). A model with
    no training randomness (`SklearnLogistic`) is returned as a plain unfitted copy. `model` is unchanged."""
    other = model.clone()
    seed = int(seed)
    config = getattr(other, "train_config", None)
    if config is not None:
        other.train_config = dataclasses.replace(config, seed=seed)
    if hasattr(other, "init_seed"):
        other.init_seed = seed
    elif getattr(other, "_init_module", None) is not None:
        start = copy.deepcopy(other._init_module)
        state = torch.get_rng_state()
        try:
            torch.manual_seed(seed)
            for m in start.modules():
                if callable(getattr(m, "reset_parameters", None)):
                    m.reset_parameters()
        finally:
            torch.set_rng_state(state)
        other._init_module = start
    return other


def _positions(subset: Any, n: int, k: int) -> np.ndarray:
    idx = np.asarray(subset)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise InputError(f"subset {k}: boolean mask of shape {idx.shape} for {n} samples")
        return np.flatnonzero(idx)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise InputError(f"subset {k}: expected positions (1-D integers) or a boolean mask, got {idx.dtype} {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise InputError(f"subset {k}: positions must lie in [0, {n}), got {idx.min()}..{idx.max()}")
    return idx.astype(np.int64)


def _run_chunk(model: ModelAdapter, train: Split, tasks: list[tuple[int, np.ndarray | Split, np.ndarray | None]],
               metric: Metric, seed: int, warm_start: bool, threads: int,
               skip: tuple[type[Exception], ...] = (), reseed: bool = False,
               record_every: int | None = None) -> list[Any]:
    """Refit on each task's rows (in a worker process or in-process) and evaluate `metric`; a refit or
    metric raising one of `skip` gives None."""
    from threadpoolctl import threadpool_limits

    old_threads, np_state, torch_state = torch.get_num_threads(), np.random.get_state(), torch.get_rng_state()
    torch.set_num_threads(threads)
    out = []
    try:
        with threadpool_limits(threads):
            for k, idx, w in tasks:
                np.random.seed((seed + k) % 2**32)
                torch.manual_seed(seed + k)
                data = idx if isinstance(idx, Split) else train.subset(idx)
                base = reseeded(model, seed + k) if reseed else model
                try:
                    if record_every:  # checkpoints of the refit's own training run (torch adapters)
                        fitted = base.clone().fit(data, sample_weight=w, recorder=TrainingRecorder(every=record_every))
                    else:
                        fitted = base.refit(data, sample_weight=w, warm_start=warm_start)
                    out.append(metric(fitted))
                except skip:
                    out.append(None)
    finally:  # leave the caller's process as it was when this runs in-process
        torch.set_num_threads(old_threads)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
    return out


def _run_one(task: tuple[int, np.ndarray | Split, np.ndarray | None], model: ModelAdapter, train: Split,
             metric: Metric, seed: int, warm_start: bool, skip: tuple[type[Exception], ...], reseed: bool,
             record_every: int | None) -> Any:
    """One refit as an executor task (single-threaded)."""
    return _run_chunk(model, train, [task], metric, seed, warm_start, 1, skip, reseed, record_every)[0]


def refit_many(model: ModelAdapter, train: Split, subsets: Sequence[Any], metric: Metric, *,
               weights: Sequence[np.ndarray | None] | None = None, n_jobs: int = 2, seed: int = 0,
               warm_start: bool = False, threads_per_job: int = 1,
               skip: tuple[type[Exception], ...] = (), reseed: bool = False,
               record_every: int | None = None, progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """Refit `model` on each subset of `train` and return `metric(refit)` for each, in order. Inside a call
    with a distributed backend (`data.executor.current`) every refit is one task of that executor (model,
    data and metric sent once), whatever `n_jobs`.

    Parameters
    ----------
    model : a (fitted or unfitted) adapter; each refit is ``model.refit(train.subset(rows), ...)``, so it
        starts from the adapter's own initial weights and training settings
    train : the full training split
    subsets : one entry per refit: positions (1-D ints) or a boolean mask over `train`, or a whole `Split`
        (e.g. the relabelled split of an action) used as it is
    metric : callable(refit adapter) -> float | array | dict, e.g. `Accuracy(test)`, `PerSampleLoss(test)`,
        `TargetValue(target)`; it must be picklable for ``n_jobs > 1`` (lambdas are fine: joblib uses
        cloudpickle)
    weights : optional per-subset sample weights (aligned with that subset's rows), or None entries
    n_jobs : worker processes (joblib/loky); 1 runs in this process. Results do not depend on it.
    seed : subset k runs with numpy and torch seeded by ``seed + k``
    warm_start : start each refit from the fitted model where the adapter supports it (logistic)
    threads_per_job : BLAS/torch threads inside each job
    skip : exception types (e.g. ``(InputError,)``: a subset left with one class) that give None for that
        subset instead of stopping every refit
    reseed : refit k starts from `reseeded(model, seed + k)`: its own initial weights, data order and
        dropout (independently trained models: ensemble members, retrains "each with its own seed");
        by default every refit starts from the model's own initial weights and training seed
    record_every : fit each refit with a `TrainingRecorder(every=record_every)` (torch adapters): its
        checkpoints are the refit's ``recorder_`` (checkpoint ensembles of independent runs)
    progress : progress(done, total) after each refit (in-process and distributed runs)

    Returns
    -------
    list of the metric values, one per subset
    """
    if not isinstance(model, ModelAdapter):
        raise InputError(f"model must be an influent ModelAdapter, got {type(model).__name__}")
    n = len(train)
    tasks = []
    for k, s in enumerate(subsets):
        idx = s if isinstance(s, Split) else _positions(s, n, k)
        size = len(idx)
        if size == 0:
            raise InputError(f"subset {k} is empty; a model needs training samples")
        w = None if weights is None or weights[k] is None else np.asarray(weights[k], dtype=np.float64)
        if w is not None and w.shape != (size,):
            raise InputError(f"subset {k}: {w.shape[0]} weights for {size} samples")
        tasks.append((k, idx, w))
    if weights is not None and len(weights) != len(tasks):
        raise InputError(f"{len(weights)} weight vectors for {len(tasks)} subsets")
    if not tasks:
        return []
    ex = current()
    if ex is not None:  # one task per refit; the result of refit k still depends only on (subset k, seed + k)
        return ex.map_tasks(_run_one, tasks, model, train, metric, seed, warm_start, skip, reseed, record_every,
                            progress=progress)
    n_jobs = max(1, int(n_jobs))
    if n_jobs == 1 or len(tasks) == 1:
        if progress is None:
            return _run_chunk(model, train, tasks, metric, seed, warm_start, threads_per_job, skip, reseed,
                              record_every)
        out = []
        for i, task in enumerate(tasks):
            out += _run_chunk(model, train, [task], metric, seed, warm_start, threads_per_job, skip, reseed,
                              record_every)
            progress(i + 1, len(tasks))
        return out
    from joblib import Parallel, delayed

    # a few chunks per worker: fewer transfers of the model and data than one task per subset
    n_chunks = min(len(tasks), 4 * n_jobs)
    chunks = [tasks[i::n_chunks] for i in range(n_chunks)]
    parts = Parallel(n_jobs=n_jobs, backend="loky", max_nbytes=None)(
        delayed(_run_chunk)(model, train, c, metric, seed, warm_start, threads_per_job, skip, reseed,
                            record_every)
        for c in chunks)
    out: list[Any] = [None] * len(tasks)
    for c, res in zip(chunks, parts):
        for (k, _, _), r in zip(c, res):
            out[k] = r
    return out


def random_subsets(n: int, size: int, count: int, seed: int = 0) -> np.ndarray:
    """(count, n) boolean masks, each selecting `size` rows uniformly at random (fixed seed)."""
    check_number(size, "subset size", kind=int, low=1, high=n)
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, n), dtype=bool)
    for k in range(count):
        masks[k, rng.choice(n, size, replace=False)] = True
    return masks
