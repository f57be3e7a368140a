"""The two verbs: `score` (one value per training sample) and `attribute` (train x test matrix)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data import Split
from ..data.executor import current, using
from ..data.validate import InputError, check_choice, check_fitted, check_number
from ..grads.source import Progress
from ..methods import DEFAULT_ATTRIBUTION, DEFAULT_METHOD, METHODS, Job
from ..methods.registry import MethodSpec, reads_checkpoints
from ..methods.options import build_options
from ..models.base import ModelAdapter, _eval_mode
from ..data.scores import Scores
from ..targets import Target, Utility, margin_scale
from .ensemble import Running, members_of


def _job(model: ModelAdapter, train: Split, target: Target | Split | None, options: dict[str, Any],
         chunk_size: int, store: str | Path | None, seed: int, progress: Progress | None, method: str = "",
         prepare: bool = True) -> Job:
    if not isinstance(model, ModelAdapter):
        raise InputError(f"model must be an influent ModelAdapter, got {type(model).__name__}")
    check_fitted(model)
    chunk_size = check_number(chunk_size, "chunk_size", kind=int, low=1)
    if not isinstance(train, Split):
        raise InputError(f"train must be an influent Split, got {type(train).__name__}")
    model.check_split(train)
    if target is not None and not isinstance(target, (Split, Target)):
        raise InputError(f"target must be an influent Split (the validation data) or a Target, got {type(target).__name__}")
    seed = check_number(seed, "seed", kind=int)
    built = build_options(method, METHODS[method].options, options)  # unknown options fail before any work
    if isinstance(target, Split):
        model.check_split(target)
        target = Utility(target)
    if target is not None and prepare:  # an ensemble's members share the target prepared for the first
        target.prepare(model)
    return Job(model, train, target, built, chunk_size, store, seed, progress)


def _check_test(model: ModelAdapter, test: Any) -> None:
    """A one-line `InputError` unless `test` is a Split the model can read."""
    if not isinstance(test, Split):
        raise InputError(f"test must be an influent Split, got {type(test).__name__}")
    model.check_split(test)


def _executor(backend: str, backend_options: dict[str, Any] | None, train: Split, spec: MethodSpec,
              store: str | Path | None, chunk_size: int | None = None) -> Any:
    """The executor of one call (None: in this process), after the method and the options say it may run there
    (its shards cut at multiples of `chunk_size`)."""
    from ..backends import check_backend, executor_for

    backend = check_backend(backend)
    spec.check_backend(backend)
    if backend != "local" and store is not None:
        raise InputError(f"store is a gradient cache on this machine; backend {backend!r} computes the gradients on "
                         "its workers: drop store, or use backend='local'")
    ex = current()
    if ex is not None and ex.name == backend and ex.shards(train):  # a run's executor (influent score --backend)
        return ex
    return executor_for(backend, train, backend_options, chunk_size)


def _ran_on(ex: Any, spec: MethodSpec) -> dict[str, Any] | None:
    """What ran where, saved with the scores (None for the local backend)."""
    if ex is None:
        return None
    out = ex.describe()
    if spec.on_driver:
        out["on_driver"] = spec.on_driver
    return out


def _check_used(job: Job, method: str) -> None:
    """A one-line `InputError` for options the method never read: an option of another variant of the
    method (e.g. ``nu`` with ``detector="l2"``; unknown names fail earlier, in `build_options`)."""
    unused = job.options.unread()
    if unused:
        raise InputError(f"method {method!r} does not take option(s) {unused}")


def _pairwise(method: str) -> MethodSpec:
    """The registered method `method` if it has a pairwise form, else a one-line `InputError` with those that do."""
    spec = METHODS[method]
    if spec.pairwise is None:
        have = sorted(METHODS.names(lambda s: s.pairwise is not None))
        raise InputError(f"method {method!r} has no pairwise form; choose one of {have}")
    return spec


def score(model: ModelAdapter | Sequence[ModelAdapter], train: Split, target: Target | Split | None = None,
          method: str = DEFAULT_METHOD, *, chunk_size: int = 512, store: str | Path | None = None, seed: int = 0,
          progress: Progress | None = None, backend: str = "local", backend_options: dict[str, Any] | None = None,
          ensemble: Any = None, ensemble_jobs: int = 2, **options: Any) -> Scores:
    """Score every training sample; higher = more valuable to `target`, the lowest are removed first.

    Parameters
    ----------
    model : a fitted `ModelAdapter`, or a sequence of them (an ensemble: the scores are the mean over the
        members, each scored with its own curvature, one after another; `Scores.stderr` is the standard error
        across them)
    train : the split the model was fitted on
    target : a `Target` (a bare Split means `Utility(split)`; `targets.Margin(split)` measures TRAK's margin);
        not needed by self-influence and random. An ensemble's members share the target prepared for the first
    method : a name from `influent.methods.METHODS` ("if", "ip", "tracin", "self-if", "self-tracin", ...)
    chunk_size : samples per chunk of per-sample gradients (memory O(chunk_size * n_params))
    store : folder for an on-disk gradient store reused across runs and resumable after interruption
        (an ensemble's member m uses its subfolder ``member-m``)
    seed : seed of every random choice (ensemble member s is trained with seed ``seed + s``)
    progress : callback progress(done, total) per gradient chunk
    backend : "local" (in-process) or "ray" (the method's shard kernels and refits as Ray tasks, small results
        reduced here; the same scores to float tolerance; `influent.backends.ray`, docs/scale.md); a method
        that cannot distribute refuses "ray" (`MethodSpec.local_only`)
    backend_options : for "ray": address (else RAY_ADDRESS, else a local Ray), workers, shards, task_timeout,
        retries (`backends.ray.RayExecutor`)
    ensemble : None (the model as given); k (an int): average over k models of the model's kind, each
        trained on `train` with its own seed (`api.ensemble.fit_members`, parallel refits); "checkpoints" (or a
        `TrainingRecorder` / list of `Checkpoint`): average over the recorded checkpoints of one training run
    ensemble_jobs : worker processes for the refits of ``ensemble=k``
    **options : method options, e.g. solver="cg", damping=1e-3, solver_options={...}, checkpoints=...; the
        method's options dataclass (`METHODS[method].options`, `influent methods NAME`) lists them
    """
    spec = METHODS[METHODS.check(method)]
    ex = _executor(backend, backend_options, train, spec, store, chunk_size)
    with using(ex):  # every shard kernel and refit of this call (ensemble members too) runs there
        out = _score(model, train, target, method, chunk_size=chunk_size, store=store, seed=seed, progress=progress,
                     ensemble=ensemble, ensemble_jobs=ensemble_jobs, options=options)
    ran = _ran_on(ex, spec)
    if ran is not None:
        out.settings["backend"] = ran
    return out


def _score(model: ModelAdapter | Sequence[ModelAdapter], train: Split, target: Target | Split | None, method: str, *,
           chunk_size: int, store: str | Path | None, seed: int, progress: Progress | None, ensemble: Any,
           ensemble_jobs: int, options: dict[str, Any]) -> Scores:
    """`score` in the current executor."""
    members, info = members_of(model, train, ensemble, seed=seed, n_jobs=ensemble_jobs)
    call = dict(chunk_size=chunk_size, seed=seed, progress=progress)
    if not info:
        return _score_one(members[0], train, target, method, store=store, options=options, **call)
    if isinstance(target, Split):  # one yardstick for every member
        _check_test(members[0], target)
        target = Utility(target)
    group = int(info.get("group", 1))  # a model's checkpoints enter the standard error as one member
    values, raws, runs = Running(group), Running(group), []
    for m, member in enumerate(members):
        s = _score_one(member, train, target, method, store=None if store is None else Path(store) / f"member-{m}",
                       options=options, prepare=m == 0, **call)
        values.add(s.values)
        if s.raw is not None:
            raws.add(s.raw)
        runs.append(s)
    settings = dict(runs[0].settings)
    settings["ensemble"] = info
    if "damping" in settings:
        settings["ensemble"]["damping"] = [s.settings.get("damping") for s in runs]
    timing: dict[str, float] = {}
    for s in runs:
        for k, v in s.timing.items():
            timing[k] = timing.get(k, 0.0) + v
    timing["ensemble_build"] = info.get("build_seconds", 0.0)
    return Scores(values.mean, runs[0].method, train.ids, raws.mean if raws.n * raws.group == len(runs) else None, settings,
                  runs[0].target, timing, stderr=values.stderr())


def _score_one(model: ModelAdapter, train: Split, target: Target | Split | None, method: str, *, chunk_size: int,
               store: str | Path | None, seed: int, progress: Progress | None, options: dict[str, Any],
               prepare: bool = True) -> Scores:
    """`score` of one model."""
    spec = METHODS[method]
    job = _job(model, train, target, options, chunk_size, store, seed, progress, method, prepare)  # checked before any work
    if spec.needs_target:
        job.need_target(method)
    t0 = time.perf_counter()
    with _eval_mode(model._require_fitted()):  # scored in evaluation mode; the module's own mode is restored
        result = spec.score(job)
    job.timing["total"] = time.perf_counter() - t0
    _check_used(job, method)
    settings = job.settings()
    settings.update(chunk_size=chunk_size, seed=seed, model=model.describe())
    return Scores(result.values, method, train.ids, result.raw, settings,
                  None if job.target is None else job.target.describe(), job.timing)


MEASURES = ("loss", "margin")


def attribute(model: ModelAdapter | Sequence[ModelAdapter], train: Split, test: Split,
              method: str = DEFAULT_ATTRIBUTION, *, chunk_size: int = 512, seed: int = 0,
              progress: Progress | None = None, backend: str = "local", backend_options: dict[str, Any] | None = None,
              target: str = "loss", ensemble: Any = None, ensemble_jobs: int = 2, **options: Any) -> np.ndarray:
    """(n_train, n_test) pairwise attributions: entry (i, j) estimates how much test sample j's loss rises
    when training sample i is removed (higher = i helps j). Methods: those with a pairwise form.
    `backend`, `backend_options`: as in `score` (the Ray backend computes the training gradients).

    model : a fitted adapter or a sequence of them (the mean over the members, each with its own curvature,
        computed one after another); `ensemble`, `ensemble_jobs`: build the members as in `score`
    target : the measured quantity of each test sample: "loss", or "margin" (TRAK's log(p / (1 - p)) of the
        correct class; entry (i, j) is then the fall of test sample j's margin when i is removed). The margin's
        gradient is the loss's times 1 / (1 - p_j) (`targets.margin`), applied per member at its own p_j;
        exact for methods that read the test gradients at the member's parameters, so methods that read
        recorded checkpoints take only "loss"
    """
    spec = _pairwise(method)
    check_choice(target, MEASURES, "attribute target")
    if target == "margin" and reads_checkpoints(method, options):
        raise InputError(f"method {method!r} reads training checkpoints; target='margin' needs the test gradients "
                         "at one model: use target='loss'")
    with using(_executor(backend, backend_options, train, spec, None, chunk_size)):
        members, info = members_of(model, train, ensemble, seed=seed, n_jobs=ensemble_jobs)
        mean = Running(int(info.get("group", 1)))
        for member in members:  # one at a time: memory is one member's plus the running sums
            out = _attribute_one(spec, member, train, test, method, chunk_size, seed, progress, options)
            if target == "margin":
                out = out * margin_scale(member, test)[None, :]
            mean.add(out)
    assert mean.mean is not None
    return mean.mean


def _attribute_one(spec: MethodSpec, model: ModelAdapter, train: Split, test: Split, method: str, chunk_size: int,
                   seed: int, progress: Progress | None, options: dict[str, Any]) -> np.ndarray:
    """`attribute` of one model, in the current executor."""
    job = _job(model, train, None, options, chunk_size, None, seed, progress, method)
    _check_test(model, test)
    with _eval_mode(model._require_fitted()):
        out = spec.pairwise(job, test)
    _check_used(job, method)
    return out
