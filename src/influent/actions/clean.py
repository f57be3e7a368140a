"""`clean`: from the wrong-label table to a measured decision — trim, relabel, reweight, or leave the data alone.

The loop a user needs after `find_label_issues`: act on the samples it counts as wrong, refit, and keep
the action only if the refit model is measurably better on held-out data.

1. `find_label_issues` ranks every training sample and estimates the number c of wrong labels
   (confident learning's count, Northcutt et al. 2021, sec. 3.1).
2. Candidates: the baseline "none" (a refit on the training data as given, by the same procedure as every
   other candidate, so the comparison is like for like) and, for each action, a few budgets around c
   (``BUDGET_FACTORS`` x c by default): ``trim`` drops the b most likely wrong samples, ``relabel`` gives
   the b most likely wrong samples whose suggested label differs from the given one their suggested label,
   ``reweight`` keeps every sample and gives the b most likely wrong ones the weight p_label (the
   out-of-sample probability of the given label: a soft trim).
3. Every candidate is refit in parallel (`models.refit.refit_many`) and evaluated on `valid`: per-sample
   correctness and log-loss.
4. Uncertainty: a paired bootstrap over the validation samples (Efron & Tibshirani 1993, ch. 13; the
   same resampled rows for every candidate) of the difference candidate - none.
5. The rule: with m candidates besides "none", each interval is a percentile interval at the Bonferroni
   level ``1 - (1 - level) / m``, so the m intervals hold together with probability >= `level`. The chosen
   candidate is, among those whose lower bound is > 0, the most parsimonious one that is not significantly
   worse than the best of them (`choose`); if no lower bound is above 0, the action is "none". Choosing the best of m would otherwise
   make the winner's interval optimistic (the winner's curse); the simultaneous level keeps "its lower
   bound is above 0" a statement that holds with probability >= `level` for whichever candidate wins.
   The point estimate `gain` of the winner is still the maximum of m noisy estimates and so optimistic;
   the interval is the honest part.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..data import Split
from ..data.validate import InputError, check_choice, check_number
from ..models.base import ModelAdapter

ACTIONS = ("trim", "relabel", "reweight")
METRICS = ("accuracy", "log_loss")
BUDGET_FACTORS = (0.5, 1.0, 1.5)
CANDIDATE_COLUMNS = ("action", "budget", "n_changed", "accuracy", "log_loss", "gain", "gain_low", "gain_high",
                     "accuracy_gain", "log_loss_change", "chosen", "note")


@dataclass
class CleanResult:
    """What `clean` decided and why.

    Attributes
    ----------
    action : "none" | "trim" | "relabel" | "reweight"
    budget : how many training samples the action touches (0 for "none")
    positions : (budget,) training positions acted on, ascending
    train : the `Split` to refit on (trim: the kept rows; relabel: every row, new labels at `positions`;
        reweight and none: the training split as given)
    weights : (len(train),) sample weights for ``fit(train, sample_weight=weights)`` (reweight), else None
    gain : improvement of the metric on `valid` over the "none" refit: accuracy points (0..100) for
        metric "accuracy", log-loss decrease (nats) for "log_loss"; 0 for "none"
    gain_ci : (low, high) the simultaneous interval of `gain` (see the module docstring); (0, 0) for "none"
    candidates : one row per candidate tried (columns `CANDIDATE_COLUMNS`), "none" first
    issues : the `find_label_issues` table the candidates were built from
    metric, level : the metric chosen on and the joint confidence level of the intervals
    refit_note : what was refit for every candidate (the model's own `refit` or the user's function)
    notes : further facts (candidates skipped or failed, the count of wrong labels)
    """

    action: str
    budget: int
    positions: np.ndarray
    train: Split
    gain: float
    gain_ci: tuple[float, float]
    candidates: pd.DataFrame
    issues: pd.DataFrame
    weights: np.ndarray | None = None
    metric: str = "accuracy"
    level: float = 0.95
    refit_note: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def n_issues(self) -> int:
        """The estimated number of wrong labels (`is_issue` count of `issues`)."""
        return int(self.issues["is_issue"].sum())

    def summary(self) -> str:
        """The one-line recommendation, e.g. "relabel 142 samples: validation accuracy +2.1 points [1.2, 3.0]"."""
        base = self.candidates.iloc[0]
        if self.action == "none":
            best = self.candidates.iloc[1:]
            best = best[best["gain"].notna()]
            why = "no action beats leaving it alone beyond its interval"
            if len(best):
                b = best.sort_values("gain", ascending=False, kind="stable").iloc[0]
                why += (f" (best tried: {b['action']} {int(b['budget'])}, {_gain_text(b['gain'], self.metric)} "
                        f"[{_num(b['gain_low'], self.metric)}, {_num(b['gain_high'], self.metric)}])")
            else:
                why = (f"no label looks wrong (validation accuracy {100 * base['accuracy']:.1f}%)" if self.n_issues == 0
                       else "every candidate's refit failed")
            return f"keep the data as it is: {why}"
        lo, hi = self.gain_ci
        return (f"{self.action} {self.budget:,} samples: {_gain_text(self.gain, self.metric)} "
                f"[{_num(lo, self.metric)}, {_num(hi, self.metric)}]")

    def __str__(self) -> str:
        return self.summary()


def _num(x: float, metric: str) -> str:
    return f"{x:+.1f}" if metric == "accuracy" else f"{x:+.3f}"


def _gain_text(g: float, metric: str) -> str:
    return (f"validation accuracy {g:+.1f} points" if metric == "accuracy"
            else f"validation log-loss {-g:+.3f}")


# ---- refitting with the user's own training function ---------------------------------------------------
class UserRefit(ModelAdapter):
    """A `ModelAdapter` whose `refit` calls the user's function ``fn(split) -> fitted adapter`` (or
    ``fn(split, sample_weight) -> ...`` when it takes a second argument or a ``sample_weight`` keyword), so
    that `refit_many` runs the user's own training for every candidate."""

    def __init__(self, fn: Callable[..., ModelAdapter]) -> None:
        super().__init__()
        self.fn = fn
        self.takes_weights = takes_weights(fn)

    def refit(self, split: Split, sample_weight: np.ndarray | None = None, warm_start: bool = False) -> ModelAdapter:
        if sample_weight is not None and not self.takes_weights:
            raise InputError("refit: the function takes no sample_weight; reweighting needs fn(split, sample_weight)")
        out = self.fn(split) if sample_weight is None else self.fn(split, sample_weight=sample_weight)
        if not isinstance(out, ModelAdapter):
            raise InputError(f"refit must return a fitted influent ModelAdapter, got {type(out).__name__}")
        return out


def takes_weights(fn: Callable[..., Any]) -> bool:
    """Whether `fn` can be called as ``fn(split, sample_weight=w)``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind == p.VAR_KEYWORD or p.name == "sample_weight" for p in params)


def refit_note(model: ModelAdapter, refit: Callable | None) -> str:
    """One sentence saying what `clean` refits for every candidate."""
    if refit is not None:
        how = "with sample weights" if takes_weights(refit) else "without sample weights (no reweight)"
        return f"every candidate is refit by your refit function ({how})"
    from ..models.torch_adapter import TabularMLP, TorchAdapter

    if isinstance(model, TorchAdapter) and not isinstance(model, TabularMLP):
        cfg = model.train_config
        batch = "full batch" if not cfg.batch_size else f"batch {cfg.batch_size}"
        return (f"every candidate is refit by {type(model).__name__}.refit: a copy of the module's weights at "
                f"construction (or its init) trained with its TrainConfig ({cfg.optimizer}, lr {cfg.lr:g}, "
                f"{cfg.epochs} epochs, {batch}, weight decay {model.weight_decay:g}), not your own training loop; "
                "pass refit=lambda split: ... to use yours")
    return f"every candidate is refit by {type(model).__name__}.refit (the model's own fit, same settings)"


# ---- candidates ---------------------------------------------------------------------------------------
@dataclass
class Candidate:
    action: str
    budget: int
    positions: np.ndarray
    data: Split | np.ndarray  # a Split (relabel, none, reweight) or kept positions (trim)
    weights: np.ndarray | None = None
    note: str = ""


def default_budgets(count: int, n: int) -> list[int]:
    """`BUDGET_FACTORS` x the estimated count, rounded, at least 1, at most n // 2, without repeats."""
    if count <= 0:
        return []
    cap = max(1, n // 2)
    return sorted({min(cap, max(1, int(round(f * count)))) for f in BUDGET_FACTORS})


def _budgets(budgets: Sequence[Any] | None, count: int, n: int) -> list[int]:
    from ..data.validate import check_budget

    if budgets is None:
        return default_budgets(count, n)
    if isinstance(budgets, (int, float, np.integer, np.floating)):
        budgets = [budgets]
    out = sorted({check_budget(b, n, "clean: budget") for b in budgets})
    return [b for b in out if b > 0]


def build_candidates(train: Split, issues: pd.DataFrame, actions: Sequence[str], budgets: list[int]) -> list[Candidate]:
    """The "none" baseline and one candidate per action and budget (see the module docstring)."""
    n = len(train)
    order = np.argsort(issues["rank"].to_numpy(), kind="stable")  # most likely wrong first
    cands = [Candidate("none", 0, np.zeros(0, np.int64), train)]
    suggested = issues["suggested_label"].to_numpy()
    differs = np.asarray(suggested).astype(str) != np.asarray(train.y).astype(str)
    relabel_order = order[differs[order]]
    p_label = issues["p_label"].to_numpy(dtype=np.float64)
    for action in actions:
        for b in budgets:
            if action == "trim":
                pos = np.sort(order[:b])
                keep = np.setdiff1d(np.arange(n), pos)
                cands.append(Candidate("trim", b, pos, keep))
            elif action == "relabel":
                pos = np.sort(relabel_order[:b])
                if len(pos) == 0:
                    continue
                y = train.y.copy()
                y[pos] = np.asarray(suggested[pos]).astype(y.dtype)
                cands.append(Candidate("relabel", len(pos), pos, train.with_labels(y),
                                       note="" if len(pos) == b else f"only {len(pos)} suggestions differ"))
            else:
                pos = np.sort(order[:b])
                w = np.ones(n)
                w[pos] = np.clip(p_label[pos], 0.0, 1.0)
                cands.append(Candidate("reweight", b, pos, train, w))
    # the same change reached twice (e.g. relabel budgets capped by the suggestions) is refit once
    seen, unique = set(), []
    for c in cands:
        key = (c.action, c.positions.tobytes())
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique


# ---- evaluation -----------------------------------------------------------------------------------------
def paired_bootstrap(diff: np.ndarray, n_boot: int, seed: int, chunk: int = 4_000_000) -> np.ndarray:
    """(m, n_boot) bootstrap means of the rows of `diff` (m, n_valid), all rows resampled with the same
    validation rows in each replicate (a paired bootstrap)."""
    m, nv = diff.shape
    rng = np.random.default_rng(seed)
    out = np.empty((m, n_boot))
    step = max(1, chunk // max(1, nv * max(m, 1)))
    for s in range(0, n_boot, step):
        b = min(step, n_boot - s)
        idx = rng.integers(0, nv, size=(b, nv))
        out[:, s:s + b] = diff[:, idx].mean(-1)
    return out


@dataclass
class _Measure:
    """Picklable metric: (predicted labels, per-sample log-loss) of a refit on `valid`."""

    valid: Split

    def __call__(self, model: ModelAdapter) -> dict[str, np.ndarray]:
        from ..models.refit import PerSampleLoss, Predictions

        return {"pred": Predictions(self.valid)(model), "loss": PerSampleLoss(self.valid)(model)}


def clean(model: ModelAdapter, train: Split, valid: Split, *, actions: Sequence[str] = ACTIONS,
          budgets: Sequence[int | float] | None = None, metric: str = "accuracy", n_boot: int = 2000,
          level: float = 0.95, n_jobs: int = 2, seed: int = 0,
          refit: Callable[..., ModelAdapter] | None = None, **options: Any) -> CleanResult:
    """Choose and validate what to do about wrong labels: trim, relabel, reweight, or nothing.

    Parameters
    ----------
    model : a fitted classifier adapter (or an unfitted one: it is fitted on a copy first); its wrong-label
        table (`find_label_issues`) ranks the samples, and its `refit` (or `refit`) trains every candidate
    train : the training `Split` (n rows); valid : the held-out `Split` the candidates are measured on
    actions : which of "trim", "relabel", "reweight" to try
    budgets : counts (or fractions of n) tried for every action; default `BUDGET_FACTORS` x the estimated
        number of wrong labels (none tried when it is 0)
    metric : "accuracy" (gain in points) or "log_loss" (gain = decrease in mean validation log-loss)
    n_boot : bootstrap replicates of the paired difference; level : joint confidence of the intervals
    n_jobs : parallel refits (`refit_many`); seed : refit and bootstrap seed
    refit : optional ``fn(split) -> fitted adapter`` that trains the model the way you do; it receives the
        candidate's split (trim: the kept rows; relabel: every row with the new labels). Reweighting calls
        ``fn(split, sample_weight=w)`` (w: (len(split),) weights) and is skipped, with a note, when `fn`
        takes no ``sample_weight`` keyword. Without it each candidate is ``model.refit(split, sample_weight)``
        (`refit_note` says exactly what that trains, e.g. for a `TorchAdapter` its TrainConfig recipe).
    options : options of the `mislabel` detector behind `find_label_issues`

    Returns
    -------
    `CleanResult`; the decision rule is in the module docstring and `choose`: only a candidate whose
    simultaneous (Bonferroni) lower bound is above 0 can be chosen, else "none". `train`, `valid` and `model` are not changed.
    """
    from ..api.issues import find_label_issues
    from ..models.refit import refit_many

    if not isinstance(model, ModelAdapter):
        raise InputError(f"model must be an influent ModelAdapter, got {type(model).__name__}")
    for s, nm in ((train, "train"), (valid, "valid")):
        if not isinstance(s, Split):
            raise InputError(f"{nm} must be an influent Split, got {type(s).__name__}")
    if isinstance(actions, str):
        actions = (actions,)
    actions = tuple(dict.fromkeys(check_choice(a, ACTIONS, "clean: action") for a in actions))
    check_choice(metric, METRICS, "clean: metric")
    n_boot = check_number(n_boot, "clean: n_boot", kind=int, low=100)
    level = check_number(level, "clean: level", low=0, high=1, low_open=True, high_open=True)
    if refit is not None and not callable(refit):
        raise InputError(f"refit must be a function split -> fitted adapter, got {type(refit).__name__}")
    fitted = model if model.fitted else (refit(train) if refit is not None else model.refit(train))
    if getattr(fitted, "classes_", None) is None:
        raise InputError("clean needs a classifier (a model with classes); this one predicts numbers")
    fitted.check_split(valid)
    notes: list[str] = []
    if refit is not None and "reweight" in actions and not takes_weights(refit):
        actions = tuple(a for a in actions if a != "reweight")
        notes.append("reweight skipped: the refit function takes no sample_weight keyword")

    issues = find_label_issues(fitted, train, **options)
    count = int(issues["is_issue"].sum())
    chosen_budgets = _budgets(budgets, count, len(train))
    if not chosen_budgets:
        notes.append("find_label_issues counts no wrong labels: only the baseline was refit")
    cands = build_candidates(train, issues, actions, chosen_budgets)
    runner = UserRefit(refit) if refit is not None else fitted
    results = refit_many(runner, train, [c.data for c in cands], _Measure(valid),
                         weights=[c.weights for c in cands], n_jobs=n_jobs, seed=seed, skip=(InputError,))
    if results[0] is None:
        raise InputError("clean: the baseline refit on the training data as given failed")
    table, diffs = _evaluate(cands, results, valid, metric)
    m = max(1, len(cands) - 1)
    alpha = (1 - level) / m
    rows = [i for i in range(1, len(cands)) if results[i] is not None]
    if rows:
        boots = paired_bootstrap(diffs[rows], n_boot, seed)
        lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2], axis=1)
        table.loc[rows, "gain_low"], table.loc[rows, "gain_high"] = lo, hi
    table.loc[0, ["gain", "gain_low", "gain_high"]] = 0.0
    pick = choose(table, boots if rows else np.zeros((0, n_boot)), rows, alpha)
    table["chosen"] = table.index == pick
    for i, c in enumerate(cands):
        if results[i] is None:
            table.loc[i, "note"] = "refit failed (e.g. a class left without samples)"
    c = cands[pick]
    new_train = c.data if isinstance(c.data, Split) else train.subset(c.data)
    return CleanResult(action=c.action, budget=int(c.budget), positions=c.positions.copy(), train=new_train,
                       gain=float(table.loc[pick, "gain"]),
                       gain_ci=(float(table.loc[pick, "gain_low"]), float(table.loc[pick, "gain_high"])),
                       candidates=table, issues=issues, weights=None if c.weights is None else c.weights.copy(),
                       metric=metric, level=level, refit_note=refit_note(model, refit),
                       notes=notes + [f"{count:,} of {len(train):,} labels look wrong (confident learning's count); "
                                      f"{m} candidates, intervals at the joint level {level:g} "
                                      f"(each {1 - alpha:.4f})"])


def choose(table: pd.DataFrame, boots: np.ndarray, rows: list[int], alpha: float) -> int:
    """The row of `table` to act on (0 = "none"), by the rule of the module docstring.

    boots : (len(rows), n_boot) paired bootstrap gains of the candidates `rows`; alpha : the per-interval
    error level. Eligible: lower bound > 0. Among the eligible, the best (largest gain, then lower log-loss)
    and every candidate whose paired difference to it is not significant at the same level (the interval of
    best - candidate contains 0) are equally good on this validation set; of those the most parsimonious is
    chosen: a plain data set (trim, relabel) before one that needs weights (reweight), then the smallest
    budget, then trim before relabel (removing a doubtful label asserts less than replacing it).
    """
    eligible = [k for k, i in enumerate(rows) if table.loc[i, "gain_low"] > 0]
    if not eligible:
        return 0
    best = min(eligible, key=lambda k: (-table.loc[rows[k], "gain"], table.loc[rows[k], "log_loss"]))
    tied = [k for k in eligible if k == best or np.quantile(boots[best] - boots[k], alpha / 2) <= 0]
    order = {"trim": 0, "relabel": 1, "reweight": 2}
    k = min(tied, key=lambda k: (table.loc[rows[k], "action"] == "reweight", table.loc[rows[k], "budget"],
                                 order[table.loc[rows[k], "action"]], -table.loc[rows[k], "gain"]))
    return int(rows[k])


def _evaluate(cands: list[Candidate], results: list[Any], valid: Split, metric: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The candidates table (without intervals) and (m, n_valid) per-sample differences to "none" in the
    metric's gain units."""
    y = np.asarray(valid.y).astype(str)
    nv = len(valid)
    rows, per = [], []
    for c, r in zip(cands, results):
        if r is None:
            per.append(np.full(nv, np.nan))
            rows.append({"action": c.action, "budget": c.budget, "n_changed": len(c.positions), "accuracy": np.nan,
                         "log_loss": np.nan, "note": c.note})
            continue
        correct = (np.asarray(r["pred"]).astype(str) == y).astype(np.float64)
        loss = np.asarray(r["loss"], dtype=np.float64)
        per.append(100 * correct if metric == "accuracy" else -loss)
        per_loss = loss
        rows.append({"action": c.action, "budget": c.budget, "n_changed": len(c.positions),
                     "accuracy": float(correct.mean()), "log_loss": float(per_loss.mean()), "note": c.note})
    P = np.vstack(per)
    diffs = P - P[0]
    table = pd.DataFrame(rows)
    table["gain"] = diffs.mean(1)
    table["gain_low"] = np.nan
    table["gain_high"] = np.nan
    table["accuracy_gain"] = 100 * (table["accuracy"] - table.loc[0, "accuracy"])
    table["log_loss_change"] = table["log_loss"] - table.loc[0, "log_loss"]
    table["chosen"] = False
    return table[list(CANDIDATE_COLUMNS)], diffs
