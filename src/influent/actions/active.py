"""Pool-based active learning: each round refits on the labeled set, scores the pool, asks an oracle
for the labels of the top `batch_size` pool samples, and records test accuracy. Resumable.

A strategy is a function ``strategy(model, labeled, pool, rng, **options) -> (U,) priorities`` (higher =
label first). Strategies: ``fi`` (FI-active of [FI]), ``iv`` (influence value of adding the
pseudo-labeled sample against a validation loss, [IV]; needs ``valid``), ``bald``, ``entropy``, ``margin``, ``random``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import Split
from ..data.registry import Entry, Registry
from ..data.validate import InputError, check_number, check_shape
from ..models.base import ModelAdapter, resolve_params
from ..data.atomic import atomic_write

Strategy = Callable[..., np.ndarray]
STRATEGIES: Registry[Entry] = Registry("strategy")  # name -> Entry(name, strategy function); calling it calls it


def strategy(name: str, title: str = "", summary: str = "") -> Callable[[Strategy], Strategy]:
    """Decorator adding a strategy function to `STRATEGIES` (summary: its docstring's first line)."""
    return STRATEGIES.register(name, title=title, summary=summary)


def resolve_strategy(strategy: str | Strategy, options: dict[str, Any]) -> Strategy:
    """The strategy function for a name (or the callable itself), after checking `options` against its
    keyword parameters (a callable taking ``**kwargs`` accepts anything)."""
    import inspect

    fn = STRATEGIES[strategy].obj if isinstance(strategy, str) else strategy
    params = list(inspect.signature(fn).parameters.values())[4:]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        known = [p.name for p in params]
        unknown = sorted(set(options) - set(known))
        if unknown:
            name = strategy if isinstance(strategy, str) else getattr(fn, "__name__", "strategy")
            raise InputError(f"strategy {name!r} has no option {unknown[0]!r}; its options: {known or 'none'}")
    return fn


def takes_valid(strategy: str | Strategy) -> bool:
    """Whether a strategy (a registered name, or the function) takes a ``valid`` split option (an unknown name:
    False)."""
    import inspect

    fn = STRATEGIES.get(strategy) if isinstance(strategy, str) else strategy
    return fn is not None and "valid" in inspect.signature(fn).parameters


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(1)


@strategy("random")
def random_priority(model: ModelAdapter, labeled: Split, pool: Split, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random order."""
    return rng.random(len(pool))


@strategy("entropy")
def entropy_priority(model: ModelAdapter, labeled: Split, pool: Split, rng: np.random.Generator) -> np.ndarray:
    """Predictive entropy: label the most uncertain first."""
    return _entropy(model.predict_proba(pool.X))


@strategy("margin")
def margin_priority(model: ModelAdapter, labeled: Split, pool: Split, rng: np.random.Generator) -> np.ndarray:
    """Negative margin between the two most probable classes: smallest margin first."""
    p = np.sort(model.predict_proba(pool.X), axis=1)
    return -(p[:, -1] - p[:, -2])


def _member_probas(model: ModelAdapter, labeled: Split, pool: Split, rng: np.random.Generator,
                   members: int) -> np.ndarray:
    """(M, U, K) class probabilities from MC dropout (torch models with dropout layers: kept active)
    or, for models without dropout, from bootstrap refits on the labeled set."""
    import torch

    module = model._require_fitted()
    has_dropout = any(isinstance(m, torch.nn.Dropout) for m in module.modules())
    if has_dropout:
        from ..models.base import probabilities

        X = torch.as_tensor(pool.X, dtype=model.dtype)
        out = []
        torch.manual_seed(int(rng.integers(2**31)))
        module.train()
        try:
            with torch.no_grad():
                for _ in range(members):
                    out.append(probabilities(model.loss, module(X)).numpy())
        finally:
            module.eval()
        return np.stack(out)
    out = []
    for _ in range(members):
        boot = rng.integers(0, len(labeled), len(labeled))
        if len(np.unique(labeled.y[boot])) < len(np.unique(labeled.y)):
            boot = np.arange(len(labeled))
        sub = Split(labeled.X[boot], labeled.y[boot], name=labeled.name)
        out.append(model.refit(sub).predict_proba(pool.X))
    return np.stack(out)


@strategy("bald")
def bald_priority(model: ModelAdapter, labeled: Split, pool: Split, rng: np.random.Generator,
                  members: int = 10) -> np.ndarray:
    """BALD mutual information H[mean_m p_m] - mean_m H[p_m] over MC-dropout or bootstrap members."""
    if int(members) < 2:
        raise InputError(f"bald: members must be >= 2, got {members}")
    P = _member_probas(model, labeled, pool, rng, int(members))
    return _entropy(P.mean(0)) - np.mean([_entropy(p) for p in P], axis=0)


def _pseudo_labelled(model: ModelAdapter, pool: Split) -> Split:
    return Split(pool.X, model.predict(pool.X), ids=pool.ids, name="pool")


@strategy("iv")
def iv_priority(model: ModelAdapter, labeled: Split, pool: Split, rng: np.random.Generator, valid: Split | None = None,
                damping: float = 0.0, params: str = "auto", solver: str = "exact") -> np.ndarray:
    """Influence value ([IV]) of *adding* each pool sample with its predicted label: adding z
    lowers the validation loss f (mean loss on `valid`) by about (1/n) grad f^T H^-1 g_z, with H the
    labeled set's Hessian, so the highest is labeled first. Recomputed every round; ``params`` as for
    ``fi``.

    `valid` is required: [IV] scores against a validation loss. (The labeled set's own loss is no
    substitute: at the fitted optimum its gradient is minus the regulariser's, so the score would only
    measure weight shrinkage.)
    """
    from ..grads.source import GradientSource
    from ..methods.fi import fit_solver
    from ..targets import Utility

    if valid is None:
        raise InputError("strategy 'iv' needs a validation split: options={'valid': split} ([IV] scores the "
                         "change of a validation loss)")
    view = resolve_params(model, params)
    u = fit_solver(view, labeled, solver, damping).solve(Utility(valid).grad(view))
    return (GradientSource(view, _pseudo_labelled(model, pool)).dot(u) / len(labeled)).numpy()


def percentile_mean(M: np.ndarray, lo: float = 10.0, hi: float = 90.0) -> np.ndarray:
    """Column-wise mean of the entries of M (L, U) lying between the lo-th and hi-th percentiles of
    their column (inclusive; numpy's linear interpolation)."""
    M = np.asarray(M, dtype=np.float64)
    a, b = np.percentile(M, [lo, hi], axis=0)
    keep = (M >= a) & (M <= b)
    return (M * keep).sum(0) / np.maximum(keep.sum(0), 1)


@strategy("fi")
def fi_priority(model: ModelAdapter, labeled: Split, pool: Split, rng: np.random.Generator, approx: str = "exact",
                subsample: float | None = None, damping: float = 0.0, rank: int = 10, lo: float = 10.0,
                hi: float = 90.0, params: str = "auto", n_estimators: int = 25) -> np.ndarray:
    """FI-active of [FI]: for each pool sample x_u with its predicted label, the mean over the labeled
    samples z_i of FI((x_u, y_pred), z_i), restricted to the lo-th..hi-th percentiles; highest first.

    ``params="auto"`` analyses the last layer of a neural network and every parameter of a linear model
    (`influent.models.base.resolve_params`); any parameter spec may be given instead.
    ``subsample=alpha`` computes FI-active on a fraction of the pool and ranks the rest with a random
    forest (the subsampling approximation of [FI]). ``approx="kfsvd"`` uses K-FAC + truncated SVD.
    """
    from ..methods.fi import rank_model_features, fi_pairwise, fit_solver, subsample_fi

    view = resolve_params(model, params)
    solver = fit_solver(view, labeled, "kfac" if approx == "kfsvd" else "exact", damping)
    pseudo = _pseudo_labelled(model, pool)

    def fi_of(rows: np.ndarray) -> np.ndarray:
        M = fi_pairwise(view, labeled, pseudo.subset(rows), solver=solver, approx=approx, rank=rank,
                        seed=int(rng.integers(2**31)))
        return percentile_mean(M, lo, hi)

    if subsample is None:
        return fi_of(np.arange(len(pool)))
    raw, _ = subsample_fi(fi_of, rank_model_features(pseudo, model, "xy+model"), float(subsample),
                          int(rng.integers(2**31)), n_estimators, keep_exact=True)
    return raw


@dataclass
class RoundRecord:
    """One round: the labeled-set size the model was fitted on, its test accuracy, the round's wall time
    (fit + scoring), the scoring time alone and the pool ids acquired."""

    round: int
    n_labeled: int
    test_accuracy: float
    seconds: float
    picked: list
    score_seconds: float = 0.0


@dataclass
class ActiveLearner:
    """Run pool-based active learning.

    Parameters
    ----------
    model : an (unfitted or fitted) adapter; each round fits a fresh clone on the labeled set
    labeled, pool : Splits; pool labels are hidden from the strategy and revealed only by `oracle`
    strategy : a name in `STRATEGIES` or a callable with the strategy signature
    batch_size : pool samples labeled per round
    rounds : number of acquisition rounds
    oracle : callable(pool_ids) -> labels; default reads the pool split's own labels (experiments)
    test : split on which accuracy is recorded each round (optional)
    state_path : JSON file where the state is saved after each round; `run` resumes from it
    seed : seeds every random choice (round r uses seed + r)
    options : passed to the strategy (e.g. members for bald, valid for iv)
    """

    model: ModelAdapter
    labeled: Split
    pool: Split
    strategy: str | Strategy = "entropy"
    batch_size: int = 10
    rounds: int = 5
    oracle: Callable[[np.ndarray], np.ndarray] | None = None
    test: Split | None = None
    state_path: str | Path | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._fn = resolve_strategy(self.strategy, self.options)
        if self._fn is iv_priority and self.options.get("valid") is None:
            iv_priority(self.model, self.labeled, self.pool, None)  # raises the one-line error
        check_number(self.batch_size, "active learning: batch_size", kind=int, low=1)
        check_number(self.rounds, "active learning: rounds", kind=int, low=0)
        if np.intersect1d(self.labeled.ids, self.pool.ids).size:
            raise InputError("labeled and pool splits share ids; give them disjoint ids")
        self.history: list[RoundRecord] = []
        self.labeled_ids = list(self.labeled.ids.tolist())
        self.revealed: dict[Any, Any] = {}

    # ---- state -----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"labeled_ids": self.labeled_ids, "revealed": [[k, v] for k, v in self.revealed.items()],
                "history": [r.__dict__ for r in self.history], "seed": self.seed,
                "strategy": self.strategy if isinstance(self.strategy, str) else getattr(self.strategy, "__name__", "custom")}

    def _save(self) -> None:
        if self.state_path is not None:
            text = json.dumps(self._state(), default=lambda o: o.item() if hasattr(o, "item") else str(o))
            atomic_write(self.state_path, lambda p: p.write_text(text))

    def _load(self) -> None:
        path = Path(self.state_path) if self.state_path else None
        if path is None or not path.exists():
            return
        state = json.loads(path.read_text())
        self.labeled_ids = state["labeled_ids"]
        self.revealed = {k: v for k, v in state["revealed"]}
        self.history = [RoundRecord(**r) for r in state["history"]]

    # ---- the loop -----------------------------------------------------------------------------
    def current_sets(self) -> tuple[Split, Split | None]:
        """(labeled, remaining pool or None when exhausted), with the oracle's labels for acquired samples."""
        got = np.isin(self.pool.ids, list(self.revealed))
        labeled = self.labeled
        if got.any():
            acq = np.flatnonzero(got)
            y = np.array([self.revealed[i] for i in self.pool.ids[acq].tolist()], dtype=self.labeled.y.dtype)
            labeled = Split(np.concatenate([self.labeled.X, self.pool.X[acq]]), np.concatenate([self.labeled.y, y]),
                            ids=np.concatenate([self.labeled.ids, self.pool.ids[acq]]), name="labeled")
        return labeled, (self.pool.subset(~got, name="pool") if not got.all() else None)

    def _ask(self, ids: np.ndarray) -> np.ndarray:
        if self.oracle is not None:
            return np.asarray(self.oracle(ids))
        pos = {v: i for i, v in enumerate(self.pool.ids.tolist())}
        return self.pool.y[[pos[i] for i in ids.tolist()]]

    def step(self) -> RoundRecord:
        """One round: fit on the labeled set, score the pool, acquire the top batch."""
        r = len(self.history)
        t0 = time.perf_counter()
        labeled, pool = self.current_sets()
        model = self.model.clone().fit(labeled)
        acc = model.accuracy(self.test) if self.test is not None else float("nan")
        picked: list = []
        t_score = 0.0
        if pool is not None:
            t1 = time.perf_counter()
            prio = np.asarray(self._fn(model, labeled, pool, np.random.default_rng(self.seed + r), **self.options))
            t_score = time.perf_counter() - t1
            check_shape(prio, (len(pool),), f"strategy {getattr(self.strategy, '__name__', self.strategy)!r}: its priorities")
            top = np.argsort(-prio, kind="stable")[: self.batch_size]
            ids = pool.ids[top]
            for i, lab in zip(ids.tolist(), self._ask(ids).tolist()):
                self.revealed[i] = lab
            picked = ids.tolist()
        rec = RoundRecord(r, len(labeled), acc, time.perf_counter() - t0, picked, t_score)
        self.history.append(rec)
        self._save()
        return rec

    def run(self) -> list[RoundRecord]:
        """Run until `rounds` acquisition rounds are done (resuming from `state_path` if it exists),
        then fit once more to record the final accuracy."""
        self._load()
        while len(self.history) < self.rounds:
            self.step()
        if len(self.history) == self.rounds:
            labeled, _ = self.current_sets()
            model = self.model.clone().fit(labeled)
            acc = model.accuracy(self.test) if self.test is not None else float("nan")
            self.history.append(RoundRecord(self.rounds, len(labeled), acc, 0.0, []))
            self._save()
        return self.history
