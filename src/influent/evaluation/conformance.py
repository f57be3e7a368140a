"""Conformance checks for a registered scoring method, in the spirit of scikit-learn's `check_estimator`.

Every method in `influent.methods.METHODS` promises the same things (docs/design.md, "How the promises are
kept"); `check_method(name)` checks them on a tiny problem (`make_problem`: a logistic problem with a few
flipped labels) and raises an `AssertionError` naming the method, the check and what differed:

- `check_values`: `influent.score` gives one finite value per training sample, in the input order, with the
  training ids; a deterministic method's values follow the rows when the split is permuted;
- `check_pairwise`: `influent.attribute` gives a finite (n_train, n_test) matrix; where the method says so
  (``Case.pairwise``), its column j is the score with test sample j's loss as the target, and its row mean
  the score with the whole test set's mean loss;
- `check_sign`: higher = more valuable. Against the exact leave-one-out effect of each sample on the
  validation loss (every sample removed and the model refit, `models.refit.refit_many`): a positive rank
  correlation (``Case.sign="loo"``); or, for a method without a signed target, the flipped samples rank lower
  than the clean ones (``Case.sign="flipped"``: the area under the ROC curve of "lowest first");
- `check_refuses_nonfinite`: NaN or infinity in the training, target or test features is a one-line
  `InputError` before the method runs;
- `check_determinism`: the same seed gives identical values whatever the global random state; another seed
  gives other values exactly when the method is random (``Case.seeded``);
- `check_options`: every field of the method's options dataclass is documented, listed by ``describe()``
  and saved in the scores' settings; an unknown option is an `InputError` naming it, before the method
  runs; every option given at its documented default gives the values of the call without it;
- `check_inputs_unchanged`: the user's splits, model (state, training mode) and checkpoints are left as they
  were;
- `check_backend`: a backend's values equal the in-process ones ("local": with an on-disk gradient store).

A user registering a method runs ``check_method("my-method", Case(...))``; the `Case` says which model it
runs on and which sign convention it follows.
"""

from __future__ import annotations

import ast
import contextlib
import re
import tempfile
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Callable, Iterator

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from ..api import attribute, score
from ..data import Split
from ..data.validate import InputError
from ..methods import METHODS
from ..models import SklearnLogistic, TorchAdapter, TrainConfig, TrainingRecorder
from ..models.base import ModelAdapter
from ..models.refit import TargetValue, refit_many
from ..targets import Utility

MODELS = ("logistic", "recorded", "mlp")
SIGNS = ("loo", "flipped", None)
PAIRWISE = ("mean", "column", None)


@dataclass(frozen=True)
class Case:
    """How a method runs in the conformance checks.

    model : "logistic" (`SklearnLogistic` at its optimum), "recorded" (a linear torch model trained by
        full-batch SGD with recorded checkpoints and a training record: the methods that read the training
        run) or "mlp" (the same for a 4-5-2 tanh network: non-convex)
    options : the method's options on the tiny problem (e.g. fewer Monte Carlo permutations)
    sign : "loo" (values rank-correlate with the leave-one-out effect), "flipped" (flipped labels rank low:
        a method without a signed target, or whose values are minus an unsigned magnitude), or None (no
        orientation: say why in `why`)
    threshold : the Spearman correlation ("loo") or ROC AUC ("flipped") the values must reach
    seeded : the values depend on the seed (another seed gives other values)
    pairwise : how the pairwise form relates to the score: "column" (column j of ``attribute(..., test)`` is
        the score with target ``test.subset([j])``), "mean" (that, and the row mean is the score with target
        `test`: a method linear in the target's gradient), or None (no relation promised: say why)
    network : run the checks without ground truth (values, pairwise, determinism, inputs unchanged) on the
        "mlp" model as well (`NETWORK_CHECKS`; False: say why, e.g. a method that only refits)
    permutable : the method scores the training split in another row order (False: it needs the very split
        the model was fitted on, e.g. to replay training, and refuses another order with an `InputError`)
    why : the reason for a lower threshold or for ``sign=None``
    """

    model: str = "logistic"
    options: dict[str, Any] = field(default_factory=dict)
    sign: str | None = "loo"
    threshold: float = 0.7
    seeded: bool = False
    pairwise: str | None = None
    permutable: bool = True
    network: bool = True
    why: str = ""

    def __post_init__(self) -> None:
        if self.model not in MODELS or self.sign not in SIGNS or self.pairwise not in PAIRWISE:
            raise ValueError(f"Case: model must be one of {MODELS}, sign one of {SIGNS}, pairwise one of {PAIRWISE}")


@dataclass
class Problem:
    """A binary logistic problem with flipped training labels and the models the checks score.

    train : (n, d) training split, ids a permutation of 100..100+n-1 (not 0..n-1: ids must travel)
    valid : (n_valid, d) clean validation split (the target)
    flipped : positions of the training samples whose label was flipped
    models : "logistic", "recorded" and "mlp" (see `Case.model`), fitted on `train`
    """

    train: Split
    valid: Split
    flipped: np.ndarray
    models: dict[str, ModelAdapter]
    _loo: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _scores: dict[tuple, Any] = field(default_factory=dict, repr=False)

    def loo(self, model: str) -> np.ndarray:
        """(n,) f(theta_{-i}) - f(theta): the rise of the mean validation loss when sample i is removed and
        the model refit by its own recipe (`refit_many`, warm-started where the model supports it); the full
        model is refit the same way so that the refit procedure's error cancels."""
        if model not in self._loo:
            adapter, n = self.models[model], len(self.train)
            subsets = [np.arange(n)] + [np.delete(np.arange(n), i) for i in range(n)]
            value = TargetValue(Utility(self.valid).prepare(adapter))
            vals = np.asarray(refit_many(adapter, self.train, subsets, value, n_jobs=1, warm_start=True),
                              dtype=np.float64)
            self._loo[model] = vals[1:] - vals[0]
        return self._loo[model]


def make_problem(seed: int = 0, n: int = 40, n_valid: int = 40, d: int = 4, n_flipped: int = 4) -> Problem:
    """The conformance problem: x ~ N(0, I_d), y = [x . w + 0.3 noise > 0] with w = (2, -1, 0.5, 0, ...),
    `n_flipped` training labels flipped; float64 models (a few tenths of a second to build): the torch
    models are trained by 60 full-batch SGD steps (lr 0.5, weight decay 1e-2), checkpoints every 10."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + n_valid, d))
    w = np.zeros(d)
    w[:3] = [2.0, -1.0, 0.5][:d]
    y = (X @ w + 0.3 * rng.normal(size=n + n_valid) > 0).astype(np.int64)
    flipped = np.sort(rng.choice(n, n_flipped, replace=False))
    y[flipped] = 1 - y[flipped]
    train = Split(X[:n], y[:n], ids=100 + rng.permutation(n), name="train")
    valid = Split(X[n:], y[n:], name="valid")
    logistic = SklearnLogistic().fit(train)
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        nets = {"recorded": torch.nn.Linear(d, 2).double(),
                "mlp": torch.nn.Sequential(torch.nn.Linear(d, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()}
    finally:
        torch.set_rng_state(state)
    models: dict[str, ModelAdapter] = {"logistic": logistic}
    for kind, net in nets.items():
        models[kind] = TorchAdapter(net, weight_decay=1e-2, fitted=False,
                                    train=TrainConfig(optimizer="sgd", lr=0.5, epochs=60, seed=seed))
        models[kind].fit(train, recorder=TrainingRecorder(every=10))
    return Problem(train, valid, flipped, models)


# ---- running a method ---------------------------------------------------------------------------------
def _model(problem: Problem, case: Case) -> ModelAdapter:
    return problem.models[case.model]


_VALID = object()  # `_score`'s default target: the problem's validation split, for a method that needs a target


def _score(problem: Problem, name: str, case: Case, *, train: Split | None = None, target: Any = _VALID,
           fresh: bool = False, **call: Any):
    """`influent.score` of `name` on the problem (the validation split as target when the method needs one).
    The plain call (seed 0, the case's options) is computed once per problem unless `fresh`."""
    plain = train is None and target is _VALID and not call and not fresh
    # keyed by the score function too: a test may swap it for a broken one
    key = (name, METHODS[name].score, case.model, repr(sorted(case.options.items())))
    if plain and key in problem._scores:
        return problem._scores[key]
    if plain:
        problem._scores[key] = _score(problem, name, case, fresh=True)
        return problem._scores[key]
    if target is _VALID:
        target = problem.valid if METHODS[name].needs_target else None
    options = {**case.options, **call.pop("options", {})}
    return score(_model(problem, case), problem.train if train is None else train, target, method=name,
                 **call, **options)


@contextlib.contextmanager
def _watch(name: str) -> Iterator[list[int]]:
    """Count the calls of the method's score and pairwise functions while inside (the registry's entry is
    restored on exit): a check that must fail "before any work" asserts the count stayed 0."""
    spec = METHODS[name]
    calls: list[int] = []
    original = spec.score, spec.pairwise

    def counted(fn: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            return fn(*args, **kwargs)
        return wrapper

    spec.score = counted(original[0])
    if original[1] is not None:
        spec.pairwise = counted(original[1])
    try:
        yield calls
    finally:
        spec.score, spec.pairwise = original


def _fail(name: str, check: str, message: str) -> None:
    raise AssertionError(f"method {name!r} fails {check}: {message}")


def _close(a: np.ndarray, b: np.ndarray, rtol: float) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= rtol * max(np.abs(b).max(), 1e-300)))


# ---- the checks ---------------------------------------------------------------------------------------
def check_values(problem: Problem, name: str, case: Case) -> None:
    """One finite value per training sample, with the training ids in input order; raw of the same shape.
    A method that is not random (``case.seeded`` False) gives the permuted values on the permuted split, or
    refuses it with a one-line `InputError` when ``case.permutable`` is False."""
    s = _score(problem, name, case)
    n = len(problem.train)
    values = np.asarray(s.values)
    if values.shape != (n,):
        _fail(name, "check_values", f"values have shape {values.shape}, expected ({n},)")
    if not np.all(np.isfinite(values)):
        _fail(name, "check_values", f"{int((~np.isfinite(values)).sum())} values are not finite")
    if not np.array_equal(s.ids, problem.train.ids):
        _fail(name, "check_values", "the scores' ids are not the training ids in input order")
    if s.raw is not None and np.shape(s.raw) != (n,):
        _fail(name, "check_values", f"raw has shape {np.shape(s.raw)}, expected ({n},)")
    if s.method != name:
        _fail(name, "check_values", f"the scores say method {s.method!r}")
    if case.seeded:
        return
    perm = np.random.default_rng(1).permutation(n)
    if not case.permutable:
        try:
            _score(problem, name, case, train=problem.train.subset(perm))
        except InputError as exc:
            if "\n" in str(exc):
                _fail(name, "check_values", f"the refusal of a permuted split is not one line: {exc}")
            return
        _fail(name, "check_values", "the case says permutable=False, but the permuted split was scored")
    p = _score(problem, name, case, train=problem.train.subset(perm))
    if not np.array_equal(p.ids, problem.train.ids[perm]):
        _fail(name, "check_values", "on a permuted split the ids do not follow the rows")
    if not _close(p.values, values[perm], 1e-6):
        err = np.abs(np.asarray(p.values) - values[perm]).max() / np.abs(values).max()
        _fail(name, "check_values", f"on a permuted split the values do not follow the rows (max rel. diff {err:.2g})")


def check_pairwise(problem: Problem, name: str, case: Case) -> None:
    """A finite (n_train, n_test) `attribute` matrix on the validation split as test set; with
    ``case.pairwise``, two of its columns equal the scores with those test samples as the target, and with
    "mean" its row mean equals the score with the whole set as the target."""
    spec = METHODS[name]
    if spec.pairwise is None:
        if case.pairwise is not None:
            _fail(name, "check_pairwise", f"the case says pairwise={case.pairwise!r}, but the method has no "
                                          "pairwise form")
        return
    test = problem.valid
    A = np.asarray(attribute(_model(problem, case), problem.train, test, method=name, **case.options))
    want = (len(problem.train), len(test))
    if A.shape != want:
        _fail(name, "check_pairwise", f"attribute has shape {A.shape}, expected {want}")
    if not np.all(np.isfinite(A)):
        _fail(name, "check_pairwise", "attribute holds values that are not finite")
    if case.pairwise is None:
        return
    for j in (0, len(test) // 2):
        col = np.asarray(_score(problem, name, case, target=test.subset([j])).values)
        if not _close(A[:, j], col, 1e-6):
            err = np.abs(A[:, j] - col).max() / np.abs(col).max()
            _fail(name, "check_pairwise", f"column {j} of the pairwise form is not the score with test sample {j} as "
                                          f"the target (max rel. diff {err:.2g})")
    if case.pairwise == "mean":
        values = np.asarray(_score(problem, name, case).values)
        if not _close(A.mean(1), values, 1e-6):
            err = np.abs(A.mean(1) - values).max() / np.abs(values).max()
            _fail(name, "check_pairwise", f"the score is not the row mean of the pairwise form "
                                          f"(max rel. diff {err:.2g})")


def sign_statistic(problem: Problem, name: str, case: Case) -> float:
    """The statistic `check_sign` compares with ``case.threshold``: Spearman(values, leave-one-out effect) for
    ``sign="loo"``, ROC AUC of the flipped samples ranked lowest-first for ``sign="flipped"``."""
    values = np.asarray(_score(problem, name, case).values)
    if case.sign == "loo":
        return float(spearmanr(values, problem.loo(case.model))[0])
    is_flipped = np.zeros(len(values), dtype=bool)
    is_flipped[problem.flipped] = True
    return float(roc_auc_score(is_flipped, -values))


def check_sign(problem: Problem, name: str, case: Case) -> None:
    """Higher = more valuable: the statistic of `sign_statistic` reaches ``case.threshold``."""
    if case.sign is None:
        return
    stat = sign_statistic(problem, name, case)
    what = "Spearman correlation with the leave-one-out effect" if case.sign == "loo" else \
        "ROC AUC of the flipped labels ranked lowest first"
    if not stat >= case.threshold:
        _fail(name, "check_sign", f"{what} is {stat:.3f}, below {case.threshold}")


def check_refuses_nonfinite(problem: Problem, name: str, case: Case) -> None:
    """NaN or infinity in the training features, in the target's (a split or a `Target`) for a method with a
    target, and in the test features of `attribute` for a method with a pairwise form, is a one-line
    `InputError` saying so, raised before the method runs. The value is written into a copy of the split's
    array after the split was built, as an in-place edit of the user's array would be (building a split from
    such an array already fails)."""
    def spoiled(split: Split, value: float) -> Split:
        out = Split(split.X.copy(), split.y, split.group, split.ids, split.name, split.columns)
        out.X[len(split) // 2, 1] = value
        return out

    model = _model(problem, case)
    calls_of = {
        "training": lambda: _score(problem, name, case, train=spoiled(problem.train, np.nan)),
        "training (inf)": lambda: _score(problem, name, case, train=spoiled(problem.train, np.inf)),
    }
    if METHODS[name].needs_target:
        calls_of["target"] = lambda: _score(problem, name, case, target=spoiled(problem.valid, np.nan))
        calls_of["Target object's"] = lambda: _score(problem, name, case,
                                                     target=Utility(spoiled(problem.valid, -np.inf)))
    if METHODS[name].pairwise is not None:
        calls_of["test"] = lambda: attribute(model, problem.train, spoiled(problem.valid, np.nan), method=name,
                                             **case.options)
    for where, call in calls_of.items():
        with _watch(name) as calls:
            try:
                call()
            except InputError as exc:
                msg = str(exc)
                if "\n" in msg or not re.search(r"NaN|infinite", msg):
                    _fail(name, "check_refuses_nonfinite", f"the error for a non-finite {where} feature does not "
                                                           f"say so in one line: {msg!r}")
            except Exception as exc:
                first = str(exc).splitlines()[0] if str(exc) else ""
                _fail(name, "check_refuses_nonfinite",
                      f"a non-finite {where} feature raised {type(exc).__name__}: {first}")
            else:
                _fail(name, "check_refuses_nonfinite", f"a non-finite {where} feature was scored without an error")
        if calls:
            _fail(name, "check_refuses_nonfinite", f"the method ran before the non-finite {where} feature was refused")


def _snapshot(problem: Problem, model: ModelAdapter) -> dict[str, Any]:
    """Copies of everything of the user's a method could change: the splits' arrays, the model's whole state
    (not only the analysed parameters), every submodule's training flag, the recorded checkpoints."""
    snap: dict[str, Any] = {}
    for split in (problem.train, problem.valid):
        for attr in ("X", "y", "ids"):
            snap[f"{split.name}.{attr}"] = np.array(getattr(split, attr), copy=True)
    module = model.module
    snap["state"] = {k: v.detach().clone() for k, v in module.state_dict().items()}
    snap["modes"] = [m.training for m in module.modules()]
    for c, ck in enumerate(getattr(getattr(model, "recorder_", None), "checkpoints", None) or []):
        snap[f"checkpoint {c}"] = {k: v.detach().clone() for k, v in ck.params.items()}
    return snap


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    return a == b


def check_inputs_unchanged(problem: Problem, name: str, case: Case) -> None:
    """The user's objects are theirs: `score` (and `attribute`) leave the splits' arrays, the model's state,
    its checkpoints and its modules' training flags (the model is put in training mode first: scoring runs
    in evaluation mode and must restore it) as they were."""
    model = _model(problem, case)
    module = model.module
    modes = [m.training for m in module.modules()]
    module.train()
    try:
        before = _snapshot(problem, model)
        _score(problem, name, case, fresh=True)
        if METHODS[name].pairwise is not None:
            attribute(model, problem.train, problem.valid, method=name, **case.options)
        after = _snapshot(problem, model)
    finally:
        for m, mode in zip(module.modules(), modes):
            m.training = mode
    changed = [k for k in before if not _same(before[k], after[k])]
    if changed:
        _fail(name, "check_inputs_unchanged", f"the call changed the user's {changed}")


@contextlib.contextmanager
def _other_global_random_state() -> Iterator[None]:
    """Draw from numpy's and torch's global generators (a method must use its `seed`, not them); restored."""
    np_state, torch_state = np.random.get_state(), torch.get_rng_state()
    try:
        np.random.seed(12345)
        torch.manual_seed(54321)
        np.random.random(7)
        torch.rand(7)
        yield
    finally:
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def check_determinism(problem: Problem, name: str, case: Case) -> None:
    """The same seed gives identical values under another global random state; seed 1 gives other values
    than seed 0 when ``case.seeded``, the same values otherwise."""
    a = np.asarray(_score(problem, name, case).values)
    with _other_global_random_state():
        b = np.asarray(_score(problem, name, case, fresh=True).values)
    if not np.array_equal(a, b):
        _fail(name, "check_determinism", f"two calls with seed 0 differ (max abs. diff {np.abs(a - b).max():.3g})")
    c = np.asarray(_score(problem, name, case, seed=1).values)
    if case.seeded and np.array_equal(a, c):
        _fail(name, "check_determinism", "seeds 0 and 1 give identical values, but the case says the method is random")
    if not case.seeded and not np.array_equal(a, c):
        _fail(name, "check_determinism", f"seeds 0 and 1 give other values (max abs. diff {np.abs(a - c).max():.3g}), "
                                         "but the case says the method is not random")


def option_defaults(name: str) -> dict[str, Any]:
    """{option: documented default} of the method's options dataclass."""
    out = {}
    for f in fields(METHODS[name].options):
        out[f.name] = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    return out


def check_options(problem: Problem, name: str, case: Case) -> None:
    """Every option is documented, listed and saved with the scores; an unknown one is refused by name before
    any work; every option given explicitly at its documented default gives the values of the call without it
    (an option only another variant of the method reads is refused after the run, by design, and left out)."""
    spec = METHODS[name]
    names = [f.name for f in fields(spec.options)]
    listed = [row["name"] for row in spec.options.describe()]
    if listed != names:
        _fail(name, "check_options", f"describe() lists {listed}, the options are {names}")
    undocumented = [f.name for f in fields(spec.options) if not f.metadata.get("doc")]
    if undocumented:
        _fail(name, "check_options", f"options without a doc: {undocumented}")
    unknown = "no_such_option"
    with _watch(name) as calls:
        try:
            _score(problem, name, case, options={unknown: 1})
        except InputError as exc:
            if unknown not in str(exc) or "\n" in str(exc):
                _fail(name, "check_options", f"the unknown option's error does not name it in one line: {exc}")
        else:
            _fail(name, "check_options", f"the unknown option {unknown!r} was accepted")
    if calls:
        _fail(name, "check_options", "the method ran before the unknown option was refused")
    plain = _score(problem, name, case)
    unsaved = [k for k in names if k != "checkpoints" and k not in plain.settings]
    if unsaved:
        _fail(name, "check_options", f"options not saved in the scores' settings: {unsaved}")
    base = np.asarray(plain.values)
    given = {**option_defaults(name), **case.options}
    try:
        explicit = _score(problem, name, case, options=given)
    except InputError as exc:
        m = re.search(r"does not take option\(s\) (\[.*\])$", str(exc))
        unread = ast.literal_eval(m.group(1)) if m else None
        if not unread or not set(unread) <= set(names) - set(case.options):
            _fail(name, "check_options", f"the options at their documented defaults are refused: {exc}")
        explicit = _score(problem, name, case, options={k: v for k, v in given.items() if k not in unread})
    if not np.array_equal(np.asarray(explicit.values), base):
        _fail(name, "check_options", "the options given at their documented defaults change the values")


def check_backend(problem: Problem, name: str, case: Case, backend: str = "local",
                  backend_options: dict[str, Any] | None = None, rtol: float = 1e-6) -> None:
    """`backend`'s values equal the in-process values to `rtol`; "local" is checked with an on-disk gradient
    store (written by this call, then read back) against the in-memory run."""
    base = np.asarray(_score(problem, name, case).values)
    with tempfile.TemporaryDirectory(prefix="influent-conformance-") as tmp:
        if backend == "local":
            other = _score(problem, name, case, store=f"{tmp}/grads")
        else:
            # chunks of 8 rows: a distributed backend cuts its shards at multiples of the chunk, so the 40 rows
            # make several shards (with the default 512 they would be one)
            other = _score(problem, name, case, backend=backend, backend_options=backend_options, chunk_size=8)
    if not _close(np.asarray(other.values), base, rtol):
        err = np.abs(np.asarray(other.values) - base).max() / np.abs(base).max()
        _fail(name, f"check_backend[{backend}]", f"values differ from the in-process run (max rel. diff {err:.2g})")


CHECKS: dict[str, Callable[[Problem, str, Case], None]] = {
    "values": check_values, "pairwise": check_pairwise, "sign": check_sign,
    "refuses_nonfinite": check_refuses_nonfinite, "determinism": check_determinism, "options": check_options,
    "inputs_unchanged": check_inputs_unchanged, "backend": check_backend,
}


NETWORK_CHECKS = ("values", "pairwise", "determinism", "inputs_unchanged")  # also run on "mlp" (`Case.network`)


def check_method(name: str, case: Case | None = None, problem: Problem | None = None) -> list[str]:
    """Run every check of `CHECKS` on the registered method `name` (and those of `NETWORK_CHECKS` on the "mlp"
    model when ``case.network``); returns the names of `CHECKS`, or raises the first failure's `AssertionError`.

    case : how the method runs (default `Case()`: the logistic model, the leave-one-out sign for a method
        with a target, the flipped-label sign without one)
    problem : the problem (default `make_problem()`)
    """
    METHODS.check(name)
    if case is None:
        case = Case(sign="loo" if METHODS[name].needs_target else "flipped")
    problem = make_problem() if problem is None else problem
    for check in CHECKS.values():
        check(problem, name, case)
    if case.network and case.model != "mlp":
        net = replace(case, model="mlp")
        for check in NETWORK_CHECKS:
            CHECKS[check](problem, name, net)
    return list(CHECKS)


__all__ = ["CHECKS", "NETWORK_CHECKS", "Case", "Problem", "check_backend", "check_determinism", "check_inputs_unchanged",
           "check_method", "check_options",
           "check_pairwise", "check_refuses_nonfinite", "check_sign", "check_values", "make_problem",
           "option_defaults", "sign_statistic"]
