"""Model ensembles for `score` and `attribute`: the members, and the mean and spread of their answers.

An attribution of a network depends on the training run's randomness (initial weights, data order,
dropout) as much as on the data; averaging the attributions of independently trained models removes that
part (TRAK, Park et al., 2023, Sec. 3.3 and Fig. 5: the LDS rises with the number of models). The members:

- a sequence of fitted adapters given by the user (`score([m0, m1, ...], ...)`);
- ``ensemble=k``: k refits of the user's model kind on the full training split, refit ``s`` with its own
  seed ``seed + s`` (initial weights, data order, dropout: `models.refit.reseeded`), run in parallel
  processes by `models.refit.refit_many`;
- ``ensemble="checkpoints"`` (or a `TrainingRecorder` / list of `Checkpoint`): the recorded checkpoints of
  one training run, the cheap variant (no extra training; the members are correlated, so it gains less);
- ``ensemble=Ensemble(models=k, checkpoints=n)``: k refits, each contributing n checkpoints spread evenly
  over its whole training run (`spread`; the last is the trained model), k x n members for k trainings.
  An influence function at the end of training misses the samples whose gradients vanished once they were
  fitted; the influence of removing a sample accumulates along the whole trajectory (SOURCE: Bae et al.,
  2024, "Training Data Attribution via Approximate Unrolled Differentiation": the unrolled response is a
  sum over training segments of each segment's influence), and TRAK averages over checkpoints too (Park
  et al., 2023, Sec. 3.3). Chosen by LDS on held-back problems (docs/evaluation.md, "Checkpoints over the
  whole run").

Each member is scored on its own, with its own curvature, one after another: memory is that of one member
plus the running sums (`Running`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..data import Split
from ..data.validate import InputError, check_number
from ..models.base import ModelAdapter
from ..models.refit import Fitted, refit_many

CHECKPOINTS = "checkpoints"
# checkpoints per model that ``ensemble=k`` takes for a model trained by steps: 3, spread over each run, chosen
# by LDS on the held-back problems of docs/evaluation.md ("Checkpoints over the whole run"); score/attribute
# pass `members_of`'s "group" to `Running`, so the standard error is over the k independent models.
DEFAULT_CHECKPOINTS = 3


@dataclass(frozen=True)
class Ensemble:
    """An ensemble to build: `models` refits of the user's model kind (seeds ``seed .. seed + models - 1``),
    each contributing `checkpoints` checkpoints spread evenly over its whole training run (`spread`; 1: the
    trained model only). Checkpoints need a model trained by steps (the torch adapters)."""

    models: int = 1
    checkpoints: int = 1

    def __post_init__(self) -> None:
        check_number(self.models, "Ensemble.models", kind=int, low=1)
        check_number(self.checkpoints, "Ensemble.checkpoints", kind=int, low=1)


class Running:
    """Mean and standard error across members of arrays of one shape, accumulated one member at a time
    (Welford's update; memory: three arrays, plus one when `group` > 1).

    group : consecutive members that form one model (its checkpoints, `Ensemble(checkpoints=group)`): each
        model's mean over its group enters the running sums as one member, so the standard error is that of
        the mean over independent models, not over correlated checkpoints of one run."""

    def __init__(self, group: int = 1) -> None:
        self.group = check_number(group, "group", kind=int, low=1)
        self.n = 0
        self.mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None
        self._part: np.ndarray | None = None
        self._in_part = 0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if self.group > 1:
            self._part = x.copy() if self._part is None else self._part + x
            self._in_part += 1
            if self._in_part < self.group:
                return
            x, self._part, self._in_part = self._part / self.group, None, 0
        self.n += 1
        if self.mean is None:
            self.mean, self._m2 = x.copy(), np.zeros_like(x)
            return
        d = x - self.mean
        self.mean += d / self.n
        self._m2 += d * (x - self.mean)

    def stderr(self) -> np.ndarray | None:
        """Sample standard deviation (ddof 1) / sqrt(members); None for fewer than two members."""
        if self.n < 2 or self._m2 is None:
            return None
        return np.sqrt(self._m2 / (self.n - 1) / self.n)


def fit_members(model: ModelAdapter, train: Split, k: int, *, seed: int = 0, n_jobs: int = 2,
                record_every: int | None = None) -> list[ModelAdapter]:
    """k models of `model`'s kind trained on `train`, member s with seed ``seed + s`` (its own initial
    weights, data order and dropout), in parallel processes (`refit_many`). `model` is unchanged.
    `record_every`: each member records a checkpoint every that many steps (its ``recorder_``), so that
    `checkpoint_members` can expand it (members x checkpoints)."""
    k = check_number(k, "ensemble", kind=int, low=1)
    check_number(record_every, "record_every", kind=int, low=1, none=True)
    return refit_many(model, train, [train] * k, Fitted(), n_jobs=n_jobs, seed=seed, reseed=True,
                      record_every=record_every)


def checkpoint_members(model: ModelAdapter, checkpoints: Any = None) -> list[ModelAdapter]:
    """One member per recorded checkpoint (default: the recorder `model` was fitted with), each the model
    with that checkpoint's analysed parameters."""
    ckpts = getattr(model, "recorder_", None) if checkpoints is None else checkpoints
    if ckpts is None:
        raise InputError("ensemble='checkpoints' needs training checkpoints: fit with "
                         "recorder=influent.models.TrainingRecorder() or pass ensemble=<recorder>")
    ckpts = list(getattr(ckpts, "checkpoints", ckpts))
    if not ckpts or not all(hasattr(c, "params") for c in ckpts):
        raise InputError("ensemble: a TrainingRecorder or a list of Checkpoint holding at least one checkpoint")
    names = model.param_names()
    if list(ckpts[0].params) != names:
        raise InputError(f"ensemble: the checkpoints hold parameters {list(ckpts[0].params)[:4]}, "
                         f"the model analyses {names[:4]}")
    return [model.with_params(c.params) for c in ckpts]


def spread(checkpoints: Sequence[Any], n: int) -> list[Any]:
    """n of a run's recorded checkpoints (sorted by step) spread evenly over the run: for i = 1..n the one
    nearest to step i * T / n, T the last recorded step (so the last is always included; all of them when
    fewer than n were recorded)."""
    n = check_number(n, "checkpoints", kind=int, low=1)
    ckpts = sorted(checkpoints, key=lambda c: c.step)
    if len(ckpts) <= n:
        return ckpts
    steps = np.array([c.step for c in ckpts], dtype=np.float64)
    T = steps[-1]
    picked: list[int] = []
    for i in range(1, n + 1):
        order = np.argsort(np.abs(steps - i * T / n), kind="stable")
        picked.append(next(int(j) for j in order if int(j) not in picked))
    return [ckpts[j] for j in sorted(picked)]


def trained_by_steps(model: ModelAdapter) -> bool:
    """Whether refits of `model` are trained by optimizer steps that a `TrainingRecorder` can record (the
    torch adapters, with a `TrainConfig`)."""
    cfg = getattr(model, "train_config", None)
    return cfg is not None and getattr(cfg, "epochs", None) is not None


def record_every(model: ModelAdapter, train: Split, n: int) -> int:
    """Steps between recorded checkpoints so that a training run of `model` on `train` records about 4 n of
    them (enough for `spread` to pick n evenly, few enough to keep in memory)."""
    cfg = getattr(model, "train_config", None)
    if not trained_by_steps(model):
        raise InputError("Ensemble(checkpoints=n > 1) needs a model trained by steps (a torch adapter with a "
                         "TrainConfig); use checkpoints=1")
    bs = cfg.batch_size or len(train)
    total = max(1, int(cfg.epochs) * -(-len(train) // bs))
    return max(1, total // (4 * n))


def given_checkpoints(models: list[ModelAdapter], n: int) -> tuple[list[ModelAdapter], dict[str, Any]]:
    """The user's fitted models, each expanded into n checkpoints spread over its own recorded run (`spread`
    of its ``recorder_``, from ``fit(..., recorder=TrainingRecorder(...))``)."""
    members: list[ModelAdapter] = []
    for i, m in enumerate(models):
        ckpts = getattr(getattr(m, "recorder_", None), "checkpoints", None)
        if n > 1 and not ckpts:
            raise InputError(f"ensemble=Ensemble(checkpoints={n}): model {i} has no recorded checkpoints; fit it "
                             "with recorder=influent.TrainingRecorder(every=...)")
        members += checkpoint_members(m, spread(ckpts, n)) if n > 1 else [m]
    per_model = len(members) // len(models)
    if per_model * len(models) != len(members):
        raise InputError("ensemble=Ensemble(checkpoints=n): the models recorded different numbers of checkpoints")
    return members, {"kind": "given x checkpoints", "members": len(members), "models": len(models),
                     "checkpoints": per_model, "group": per_model}


def members_of(model: ModelAdapter | Sequence[ModelAdapter], train: Split, ensemble: Any, *, seed: int,
               n_jobs: int) -> tuple[list[ModelAdapter], dict[str, Any]]:
    """The members that `score`/`attribute` average over, and the description saved with the scores
    (empty for a single model)."""
    if isinstance(model, (list, tuple)):
        members = list(model)
        if not members:
            raise InputError("model: an empty list of models")
        for m in members:
            if not isinstance(m, ModelAdapter):
                raise InputError(f"model: every ensemble member must be an influent ModelAdapter, "
                                 f"got {type(m).__name__}")
        if isinstance(ensemble, Ensemble) and ensemble.models in (1, len(members)):
            return given_checkpoints(members, ensemble.checkpoints)
        if ensemble is not None:
            raise InputError("pass either a list of models or ensemble=..., not both (or, with a list of models "
                             "fitted with a TrainingRecorder, ensemble=Ensemble(checkpoints=n))")
        return members, ({"kind": "given", "members": len(members)} if len(members) > 1 else {})
    if ensemble is None:
        return [model], {}
    if not isinstance(model, ModelAdapter):
        raise InputError(f"model must be an influent ModelAdapter, got {type(model).__name__}")
    t0 = time.perf_counter()
    if isinstance(ensemble, (int, np.integer)) and not isinstance(ensemble, bool):
        k = check_number(int(ensemble), "ensemble", kind=int, low=1)
        if DEFAULT_CHECKPOINTS > 1 and trained_by_steps(model):
            return members_of(model, train, Ensemble(models=k, checkpoints=DEFAULT_CHECKPOINTS), seed=seed,
                              n_jobs=n_jobs)
        members = fit_members(model, train, k, seed=seed, n_jobs=n_jobs)
        info: dict[str, Any] = {"kind": "refits", "members": k, "seeds": [seed + s for s in range(k)]}
    elif isinstance(ensemble, Ensemble):
        if ensemble.checkpoints == 1:
            members = fit_members(model, train, ensemble.models, seed=seed, n_jobs=n_jobs)
        else:
            runs = fit_members(model, train, ensemble.models, seed=seed, n_jobs=n_jobs,
                               record_every=record_every(model, train, ensemble.checkpoints))
            members = [e for r in runs for e in checkpoint_members(r, spread(r.recorder_.checkpoints,
                                                                              ensemble.checkpoints))]
        per_model = len(members) // ensemble.models  # fewer than asked when a run records fewer steps
        info = {"kind": "refits x checkpoints", "members": len(members), "models": ensemble.models,
                "checkpoints": per_model, "group": per_model, "seeds": [seed + s for s in range(ensemble.models)]}
    elif (isinstance(ensemble, str) and ensemble == CHECKPOINTS) or hasattr(ensemble, "checkpoints") \
            or isinstance(ensemble, (list, tuple)):
        members = checkpoint_members(model, None if ensemble == CHECKPOINTS else ensemble)
        info = {"kind": "checkpoints", "members": len(members)}
    else:
        raise InputError(f"ensemble must be a number of models, an Ensemble(models=, checkpoints=), 'checkpoints' "
                         f"or a TrainingRecorder, got {ensemble!r}")
    info["build_seconds"] = time.perf_counter() - t0
    return members, info
