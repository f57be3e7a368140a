"""Named benchmark suites: ``influent bench NAME [--quick]`` prints one table per suite.

A suite is a callable ``run(quick: bool) -> pandas.DataFrame``; where a paper has a number for a row, the
table has a ``paper`` column beside ours (missing elsewhere). ``quick=True`` sizes the suite for CI (well
under two minutes on two cores). Notes (skipped methods, what the paper column refers to) travel in
``df.attrs["notes"]`` and are printed under the table.

Suites implemented in other modules are registered as lazy imports, so a missing module gives a clear
"not available yet" error instead of breaking the registry:

- ``noisy-labels`` -> ``influent.evaluation.noisy.noisy_labels_suite(quick)``
- ``oga-moons`` -> ``influent.evaluation.noisy.oga_moons_suite(quick)``
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..data.registry import Entry, Registry
from ..data.validate import InputError

SuiteFn = Callable[[bool], pd.DataFrame]


@dataclass(frozen=True)
class Suite(Entry):
    """A registered suite: ``obj`` is ``run(quick: bool) -> DataFrame``, or None for a suite whose code
    lives in ``module``.``function`` and is imported only when the suite runs."""

    module: str = ""
    function: str = ""

    def resolve(self) -> SuiteFn:
        """The suite's function (importing its module for a lazy suite), else a one-line `InputError`."""
        if self.obj is not None:
            return self.obj
        try:
            mod = importlib.import_module(self.module)
        except ModuleNotFoundError as exc:
            if exc.name and self.module.startswith(exc.name):
                raise InputError(f"suite {self.name!r} is not available yet: module {self.module} is missing") from None
            raise
        fn = getattr(mod, self.function, None)
        if not callable(fn):
            raise InputError(f"suite {self.name!r} is not available yet: {self.module}.{self.function} is missing")
        return fn

    def run(self, quick: bool = False) -> pd.DataFrame:
        return self.resolve()(quick=quick)


SUITES: Registry[Suite] = Registry("suite")


def register_suite(name: str, summary: str = "") -> Callable[[SuiteFn], SuiteFn]:
    """Decorator adding ``fn(quick: bool) -> DataFrame`` to the registry under `name`."""
    return SUITES.register(name, Suite, summary=summary)


def lazy_suite(name: str, module: str, function: str, summary: str) -> None:
    """Register a suite whose code lives in `module`.`function`, imported only when the suite runs."""
    SUITES.add(Suite(name, None, summary=summary, module=module, function=function))


def run_suite(name: str, quick: bool = False) -> pd.DataFrame:
    """Run a registered suite and return its table (seconds in ``df.attrs["seconds"]``); an unknown name
    is the registry's one-line `InputError` with the choices."""
    suite = SUITES[name]
    t0 = time.perf_counter()
    df = suite.run(quick)
    df.attrs["seconds"] = time.perf_counter() - t0
    return df


def _note(df: pd.DataFrame, *notes: str) -> pd.DataFrame:
    df.attrs.setdefault("notes", [])
    df.attrs["notes"] = list(df.attrs["notes"]) + [n for n in notes if n]
    return df


# ---- convex exactness -------------------------------------------------------------------------------
SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "identity": {},
    "cg": {"tol": 1e-10},
    "lissa": {"depth": 1000, "scale": "auto", "batch_size": None},
    "arnoldi": {"rank": 50},
    "kfac": {},
    "ekfac": {},
    "datainf": {},
}


@register_suite("convex-exactness", "IF (exact) vs leave-one-out retraining; every solver vs the exact solver")
def convex_exactness(quick: bool = False) -> pd.DataFrame:
    """IF exact vs LOO on logistic regression, plus every registered solver vs the exact one."""
    from scipy.stats import pearsonr, spearmanr

    import influent as inf
    from ..curvature import SOLVERS
    from ..data.datasets import load_breast_cancer, load_digits
    from ..methods.registry import M
    from .attribution import loo_correlation

    notes = []
    rows = []
    # 1. exact IF against leave-one-out retraining (float64, Newton-polished optima)
    cancer = load_breast_cancer(seed=0)
    tr, va = cancer["train"], cancer["valid"]
    model = inf.models.SklearnLogistic(C=0.1).fit(tr)
    s = inf.score(model, tr, target=va, method=M.IF, solver="exact", damping=0.0)
    n_loo = 40 if quick else len(tr)
    pos = np.sort(np.random.default_rng(0).choice(len(tr), n_loo, replace=False))
    t0 = time.perf_counter()
    loo = loo_correlation(model, tr, va, s, pos)
    k = max(1, n_loo // 10)
    top = set(np.argsort(loo.predicted)[:k].tolist()) & set(np.argsort(loo.actual)[:k].tolist())
    rows.append({"check": "IF exact vs leave-one-out", "pearson": loo.pearson, "spearman": loo.spearman,
                 "top_overlap": len(top) / k, "seconds": time.perf_counter() - t0})
    notes.append(f"LOO: breast cancer, logistic regression C=0.1, {n_loo} of {len(tr)} samples refit without "
                 f"each (validation loss); top_overlap: lowest 10% by prediction vs by retraining")

    # 2. every solver against the exact solver at the same damping
    sizes = {"train": 300, "valid": 200, "test": None} if quick else {"train": 1000, "valid": 300, "test": None}
    digits = load_digits(sizes, seed=0)
    tr, va = digits["train"], digits["valid"]
    model = inf.models.SklearnLogistic(C=1.0, newton_steps=0).fit(tr)
    damping = 1e-3
    exact = inf.score(model, tr, target=va, method=M.IF, solver="exact", damping=damping)
    k = max(1, len(tr) // 20)
    top = set(exact.most_harmful(k).tolist())
    notes.append(f"solvers: digits, {len(tr)} train, {model.n_params()} parameters, damping={damping:g} for all; "
                 f"top_overlap: the {k} lowest values (5%) shared with the exact solver")
    for name in sorted(SOLVERS):
        if name == "exact":
            continue
        opts = SOLVER_OPTIONS.get(name, {})
        if name == "lissa" and quick:
            opts = {**opts, "depth": 500}
        t0 = time.perf_counter()
        s = inf.score(model, tr, target=va, method=M.IF, solver=name, damping=damping, solver_options=opts)
        rows.append({"check": f"IF {name} vs IF exact", "pearson": float(pearsonr(s.values, exact.values)[0]),
                     "spearman": float(spearmanr(s.values, exact.values)[0]),
                     "top_overlap": len(top & set(s.most_harmful(k).tolist())) / k,
                     "seconds": time.perf_counter() - t0})
    df = pd.DataFrame(rows)
    df["paper"] = np.nan
    return _note(df, *notes, "No paper column entries: exactness is checked against retraining and the exact "
                             "solver, not against a published table.")


# ---- LDS on digits ----------------------------------------------------------------------------------
def lds_methods(quick: bool) -> list[tuple[str, dict[str, Any]]]:
    """(label, attribute() options) of the LDS table (damping 0 except LiSSA, whose Neumann series needs
    it); TracIn's checkpoints are added by `lds_digits_table`."""
    from ..methods.registry import M

    lissa = {"depth": 200 if quick else 500, "scale": "auto", "batch_size": 128}
    return [
        ("IF (exact)", {"method": M.IF, "solver": "exact"}),
        ("IF (CG)", {"method": M.IF, "solver": "cg"}),
        ("IF (LiSSA)", {"method": M.IF, "solver": "lissa", "damping": 1e-3, "solver_options": lissa}),
        ("IF (EK-FAC)", {"method": M.IF, "solver": "ekfac"}),
        ("IF (K-FAC)", {"method": M.IF, "solver": "kfac"}),
        ("IF (DataInf)", {"method": M.IF, "solver": "datainf"}),
        ("IP", {"method": M.IP}),
        ("IP Ensemble", {"method": M.IP_ENSEMBLE}),
        ("TracIn", {"method": M.TRACIN}),
    ]


def lds_digits_table(n_train: int = 1000, n_test: int | None = None, n_subsets: int = 50, alpha: float = 0.5,
                     C: float = 1.0, skip: tuple[str, ...] = (), n_jobs: int = 2, seed: int = 0,
                     quick: bool = False) -> pd.DataFrame:
    """LDS of each method for logistic regression on scikit-learn digits (one set of retrained models
    shared by all methods). TracIn uses the checkpoints of an SGD run of the same objective in torch."""
    import torch

    import influent as inf
    from ..data.datasets import load_digits
    from .attribution import lds_ground_truth, lds_score
    from ..methods import METHODS
    from ..methods.registry import reads_checkpoints

    parts = load_digits({"train": n_train, "test": None}, seed=seed)
    train, test = parts["train"], parts["test"]
    if n_test is not None:
        test = test.subset(np.arange(min(n_test, len(test))))
    model = inf.models.SklearnLogistic(C=C, newton_steps=0).fit(train)
    t0 = time.perf_counter()
    truth = lds_ground_truth(model, train, test, n_subsets, alpha, n_jobs=n_jobs, seed=seed)
    retrain_s = time.perf_counter() - t0
    notes = [f"{n_subsets} retrained models on random {alpha:.0%} subsets ({retrain_s:.0f} s wall, n_jobs={n_jobs}); "
             f"{len(train)} train / {len(test)} test digits; logistic regression C={C}"]
    rows = []
    for label, opts in lds_methods(quick):
        if label in skip:
            continue
        method = opts["method"]
        if method not in METHODS or METHODS[method].pairwise is None:
            notes.append(f"{label}: method {method!r} has no registered pairwise form yet; skipped")
            continue
        kw = {k: v for k, v in opts.items() if k != "method"}
        if reads_checkpoints(method, kw):  # (TracIn) the checkpoints of an SGD run of the same objective
            torch.manual_seed(seed)
            net = torch.nn.Linear(train.n_features, len(np.unique(train.y)))
            sgd = inf.models.TorchAdapter(net, dtype=torch.float64, weight_decay=1.0 / (C * len(train)),
                                          train=inf.models.TrainConfig(optimizer="sgd", lr=0.5, epochs=30,
                                                                       batch_size=100, seed=seed))
            rec = inf.models.TrainingRecorder(every=10)
            sgd.fit(train, recorder=rec)
            kw["checkpoints"] = rec.checkpoints
            notes.append(f"{label}: {len(rec)} checkpoints of SGD (lr 0.5, batch 100, 30 epochs) on the same objective")
        t1 = time.process_time()
        A = inf.attribute(model, train, test, method=method, seed=seed, **kw)
        secs = time.process_time() - t1
        r = lds_score(A, truth)
        rows.append({"method": label, "lds": r.score, "lds_std_over_test": float(np.nanstd(r.per_test)),
                     "cpu_s": secs, "paper": 0.80 if label == "IF (exact)" else np.nan})
    df = pd.DataFrame(rows)
    return _note(df, *notes, "paper: dattri's best LDS for logistic regression on MNIST (a different data "
                             "set: the nearest published number, not a reproduction target).")


@register_suite("lds-digits", "linear datamodeling score of each method, logistic regression on digits")
def lds_digits(quick: bool = False) -> pd.DataFrame:
    if quick:
        return lds_digits_table(n_train=1000, n_test=200, n_subsets=20, skip=("IF (CG)",), quick=True)
    return lds_digits_table()


# ---- relabelling noisy digits -----------------------------------------------------------------------
@register_suite("relabel-digits", "relabel the lowest-valued 10% of noisy digits (oracle, IF, IP, Self-IF, random)")
def relabel_digits(quick: bool = False) -> pd.DataFrame:
    """Digits with 10% of the training labels flipped (logistic regression, C=1): relabel as many samples
    as were flipped, chosen by each method's lowest values, refit; how many flips are undone, how many
    clean labels are broken, and test accuracy (trimming the same samples beside it)."""
    import influent as inf
    from ..actions.edit import relabel, trim
    from sklearn.datasets import load_digits

    from .noisy import noisy_digits
    from ..methods.registry import M
    from ..models.refit import Accuracy, refit_many

    seeds = (0,) if quick else (0, 1, 2)
    rows = []
    for seed in seeds:
        train, valid, test, flipped = noisy_digits(0.1, seed)
        y_all = load_digits(return_X_y=True)[1]  # noisy_digits draws its split first from the same seed
        y_true = y_all[np.random.default_rng(seed).permutation(len(y_all))[:len(train)]]
        assert np.array_equal(y_true != train.y, flipped)
        model = inf.models.SklearnLogistic(C=1.0, newton_steps=0).fit(train)
        k = int(flipped.sum())
        candidates = [("oracle (true flipped ids)", inf.Scores(np.where(flipped, -1.0, 0.0), "oracle", train.ids)),
                      ("IF (exact)", inf.score(model, train, target=valid, method=M.IF)),
                      ("IP", inf.score(model, train, target=valid, method=M.IP)),
                      ("Self-IF", inf.score(model, train, method=M.SELF_IF)),
                      (M.RANDOM, inf.score(model, train, method=M.RANDOM, seed=seed))]
        edits = []
        for label, s in candidates:
            r, t = relabel(train, s, k, model=model), trim(train, s, k)
            chosen = s.most_harmful(k)
            rows.append({"seed": seed, "scores": label, "k": k, "precision": float(flipped[chosen].mean()),
                         "flips_undone": float(np.mean(r.split.y[flipped] == y_true[flipped])),
                         "clean_broken": int(np.sum(r.split.y[~flipped] != y_true[~flipped]))})
            edits += [r.split, t.split]
        accs = refit_many(model, train, [train] + edits, Accuracy(test), seed=seed)
        for i, row in enumerate(rows[-len(candidates):]):
            row.update(acc_before=accs[0], acc_relabel=accs[1 + 2 * i], acc_trim=accs[2 + 2 * i])
    df = pd.DataFrame(rows).groupby("scores", sort=False).mean(numeric_only=True).reset_index().drop(columns="seed")
    df["paper"] = np.nan
    return _note(df, f"digits 1000 train (10% labels flipped) / 300 valid / 497 test, logistic regression C=1; "
                     f"mean over seeds {list(seeds)}; precision: flipped among the relabelled; flips_undone: "
                     "flipped samples whose new label is the true one")


# ---- fairness and defense ---------------------------------------------------------------------------
@register_suite("fairness-adult", "fairness-aware trimming on UCI Adult (accuracy and DP gap before/after)")
def fairness_adult(quick: bool = False) -> pd.DataFrame:
    from .fairness import fairness_experiment

    if quick:
        df = fairness_experiment(("adult",), seeds=(0,), n_train=2000)
    else:
        df = fairness_experiment(("adult",), seeds=(0, 1, 2), n_train=5000)
    df["paper"] = np.nan
    return _note(df, "paper: [IV]/[IP] report fairness trimming in figures, not a table we can copy; no number.")


@register_suite("fairness-compas", "fairness-aware trimming on COMPAS (accuracy and DP gap before/after)")
def fairness_compas(quick: bool = False) -> pd.DataFrame:
    from .fairness import fairness_experiment

    df = fairness_experiment(("compas",), seeds=(0,) if quick else (0, 1, 2))
    df["paper"] = np.nan
    return df


@register_suite("defense", "[IP] Table 2: evasion attack on 5-25% of test points, trim/relabel/reweight 5%")
def defense(quick: bool = False) -> pd.DataFrame:
    from .defense import run_defense

    if quick:
        df, notes = run_defense("adult", n_train=2000, fractions=(0.10, 0.25))
    else:
        df, notes = run_defense("adult", n_train=5000)
    df["paper"] = np.nan
    return _note(df, *notes, "paper: [IP] Table 2 uses other data sets and models; its numbers are not "
                             "comparable row by row, so none are shown.")


lazy_suite("noisy-labels", "influent.evaluation.noisy", "noisy_labels_suite",
           "noisy-label detection and trimming ([IP], [OGA])")
lazy_suite("oga-moons", "influent.evaluation.noisy", "oga_moons_suite",
           "[OGA] two-moons: Isolation Forest on gradients finds flipped labels; trimming lifts accuracy")


# ---- [FI] Table 1 -----------------------------------------------------------------------------------
FI_TABLE1_PAPER = {5: (96.22, 95.77, "23/30"), 10: (96.20, 94.84, "28/30"), 20: (96.23, 93.36, "30/30")}


def fi_blobs(seed: int, sizes: tuple[int, int, int] = (150, 100, 600)) -> dict:
    """Two isotropic 2-D Gaussian blobs around (3, -3) and (1, 2), standard deviation 1.5, equal class
    probabilities: the [IV] toy data in the sizes of [FI] Table 1 (train, valid, test)."""
    from ..data import Split

    rng = np.random.default_rng(seed)
    n = sum(sizes)
    y = rng.integers(0, 2, n)
    X = np.array([[3.0, -3.0], [1.0, 2.0]])[y] + 1.5 * rng.standard_normal((n, 2))
    a, b = sizes[0], sizes[0] + sizes[1]
    cut = {"train": slice(0, a), "valid": slice(a, b), "test": slice(b, n)}
    return {k: Split(X[c], y[c], name=f"blobs-{k}") for k, c in cut.items()}


@register_suite("fi-table1", "[FI] Table 1: trimming by FI vs IV (and random) on Gaussian blobs, logistic regression")
def fi_table1(quick: bool = False) -> pd.DataFrame:
    """[FI] Table 1: remove the b lowest-valued of 150 training samples, refit, test accuracy (%) per
    method and the number of seeds where FI beats IV (30 seeds; quick: 3)."""
    from ..methods.registry import M
    from ..models.sklearn_logistic import SklearnLogistic
    from .trimming import method_scorer, random_scorer, trimming_experiment, wins_table

    seeds = 3 if quick else 30
    res = trimming_experiment(fi_blobs, lambda s: SklearnLogistic(C=1.0),
                              {M.FI: method_scorer(M.FI), M.IV: method_scorer(M.IV), M.RANDOM: random_scorer()},
                              (0, 5, 10, 20), range(seeds))
    df = wins_table(res)
    paper = [FI_TABLE1_PAPER.get(int(b), (np.nan, np.nan, "")) for b in df["budget"]]
    df["paper acc_fi"], df["paper acc_iv"], df["paper wins"] = (list(c) for c in zip(*paper))
    return _note(df, f"{seeds} seeds; accuracies in %; b=0 is the untrimmed model; wins = seeds where FI's "
                     "accuracy is above IV's",
                 "paper: [FI] Table 1 (30 seeds)" + ("; quick runs 3 seeds, so the counts are not comparable" if quick else ""))


# ---- command line -----------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            return ""
        if float(v).is_integer() and abs(v) >= 2:  # counts (means of counts over seeds stay decimal)
            return str(int(v))
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
    return str(v)


def print_table(name: str, df: pd.DataFrame, console: Any = None) -> None:
    """Print a suite's table (rich), with its notes and timing."""
    from rich.console import Console
    from rich.table import Table

    import sys

    console = console or Console(width=None if sys.stdout.isatty() else 160)
    secs = df.attrs.get("seconds")
    table = Table(title=f"{name}" + (f"  ({secs:.0f} s)" if secs is not None else ""))
    for col in df.columns:
        table.add_column(str(col), justify="right" if pd.api.types.is_numeric_dtype(df[col]) else "left")
    for row in df.itertuples(index=False):
        table.add_row(*[_fmt(v) for v in row])
    console.print(table)
    for note in df.attrs.get("notes", []):
        console.print(f"note: {note}")
