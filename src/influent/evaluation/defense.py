"""Defense against an evasion attacker ([IP] Table 2, after [IV] section 5.3), at CPU scale.

Protocol (logistic regression, binary data):

1. Fit the model on the training split; accuracy on the clean test split is *pre-attack*.
2. The attacker moves a random fraction (5-25%) of the test points across the decision boundary with
   the linear-model projection x' = x - 1.3 (w.x + b) / (w.w) w (the construction of
   `influent.targets.Robustness`); accuracy on this attacked test split is *post-attack*.
3. The defender scores every training sample by its influence on robustness — by default the loss on an
   adversarial copy of the *validation* split built with the same projection (`Robustness(valid)`;
   the defender anticipates the attack but never sees the test points). With ``target="attacked-test"``
   the defender instead observes the attacked test split and uses its loss (the protocol of the [IV] code).
4. Three defenses, each on 5% of the training set: trim the lowest-valued, relabel them (flip), or
   reweight every sample by the softmax of its value; refit; accuracy on the same attacked test split.

Reweighting uses the temperature (max - min) / ln(100), so weights span a factor of 100 from the least
to the most valuable sample whatever the scale of the method's values (a fixed rule, not tuned).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..api.verbs import score
from ..curvature import SOLVERS
from ..data import Split
from ..data.validate import check_choice, check_number
from ..methods import METHODS, M
from ..models import SklearnLogistic
from ..models.base import ModelAdapter
from ..actions.edit import relabel, reweight, trim
from ..data.scores import Scores
from ..targets import Robustness, Utility
from ..models.refit import Accuracy, Several, refit_many

# (label, method, options); entries whose method or solver is not registered are skipped with a note
DEFENSE_METHODS: list[tuple[str, str, dict[str, Any]]] = [
    ("IF", M.IF, {"solver": "exact"}),
    ("IP", M.IP, {}),
    ("IP Ensemble", M.IP_ENSEMBLE, {}),
    ("DataInf", M.IF, {"solver": "datainf"}),
    ("Self-IF", M.SELF_IF, {"solver": "exact"}),
    ("TracIn", M.TRACIN, {}),
    ("Self-TracIn", M.SELF_TRACIN, {}),
    (M.RANDOM, M.RANDOM, {}),
]
ACTIONS = ("trim", "relabel", "reweight")


def attack(model: ModelAdapter, test: Split, fraction: float, seed: int = 0) -> tuple[Split, np.ndarray]:
    """Project a random `fraction` of `test` across the model's linear decision boundary (30% overshoot).
    Returns the attacked split (same ids and labels) and the attacked positions."""
    check_number(fraction, "attack fraction", low=0, low_open=True, high=1)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(test), max(1, int(round(fraction * len(test)))), replace=False))
    adv = Robustness(test.subset(idx))
    adv.prepare(model)
    X = test.X.copy()
    X[idx] = adv.adversarial_.X.astype(X.dtype)
    return Split(X, test.y, test.group, test.ids, f"{test.name}-attacked", test.columns), idx


def available(entries: Sequence[tuple[str, str, dict[str, Any]]]) -> tuple[list, list[str]]:
    """The entries whose method (and solver) is registered, and a note for each one skipped."""
    keep, notes = [], []
    for label, method, opts in entries:
        if method not in METHODS:
            notes.append(f"{label}: method {method!r} is not registered yet; skipped")
        elif "solver" in opts and opts["solver"] not in SOLVERS:
            notes.append(f"{label}: solver {opts['solver']!r} is not registered yet; skipped")
        else:
            keep.append((label, method, opts))
    return keep, notes


def _edits(train: Split, s: Scores, budget: float) -> list[tuple[str, Any]]:
    span = float(np.nanmax(s.values) - np.nanmin(s.values))
    temperature = span / np.log(100.0) if span > 0 else 1.0
    return [("trim", trim(train, s, budget)), ("relabel", relabel(train, s, budget)),
            ("reweight", reweight(train, s, temperature=temperature))]


def defense_experiment(model: ModelAdapter, train: Split, valid: Split, test: Split, *,
                       fractions: Sequence[float] = (0.05, 0.10, 0.15, 0.20, 0.25), budget: float = 0.05,
                       methods: Sequence[tuple[str, str, dict[str, Any]]] | None = None,
                       target: str = "robustness", n_jobs: int = 2, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Run the protocol of the module docstring for each attack fraction and method.

    Returns the table (attack, method, pre_attack, post_attack, trim, relabel, reweight; accuracies on
    test) and the notes on skipped methods. TracIn's checkpoints come from `training_checkpoints` (SGD on
    the same objective) unless an entry passes its own.
    """
    check_choice(target, ("robustness", "attacked-test"), "defense target")
    from .noisy import needs_checkpoints, training_checkpoints

    entries, notes = available(methods if methods is not None else DEFENSE_METHODS)
    if any(needs_checkpoints(m, o) for _, m, o in entries):  # TracIn: one SGD run of the same objective
        ckpts = training_checkpoints(model, train, seed)
        entries = [(lab, m, {**o, "checkpoints": ckpts} if needs_checkpoints(m, o) else o) for lab, m, o in entries]
    attacked = [attack(model, test, f, seed + i)[0] for i, f in enumerate(fractions)]
    pre = model.accuracy(test)
    post = [model.accuracy(a) for a in attacked]
    metric = Several({str(i): Accuracy(a) for i, a in enumerate(attacked)})

    # one set of scores per method (per fraction when the defender observes the attacked test split)
    views = [None] if target == "robustness" else list(range(len(fractions)))
    jobs, keys = [], []
    for label, method, opts in entries:
        needs = METHODS[method].needs_target
        for v in views:
            tgt = None if not needs else (Robustness(valid) if v is None else Utility(attacked[v]))
            s = score(model, train, target=tgt, method=method, seed=seed, **opts)
            for action, e in _edits(train, s, budget):
                jobs.append(e)
                keys.append((label, v, action))
    res = refit_many(model, train, [e.split for e in jobs], metric, weights=[e.weights for e in jobs],
                     n_jobs=n_jobs, seed=seed)
    acc = {k: r for k, r in zip(keys, res)}
    rows = []
    for i, f in enumerate(fractions):
        for label, _, _ in entries:
            v = None if target == "robustness" else i
            row = {"attack": f, "method": label, "pre_attack": pre, "post_attack": post[i]}
            row.update({a: acc[(label, v, a)][str(i)] for a in ACTIONS})
            rows.append(row)
    return pd.DataFrame(rows), notes


def run_defense(dataset: str = "adult", *, n_train: int = 5000, C: float = 1.0, seed: int = 0, **kwargs: Any
                ) -> tuple[pd.DataFrame, list[str]]:
    """`defense_experiment` on a bundled data set with logistic regression: "adult" (`n_train` train,
    1,000 valid, 5,000 test) or "compas" (4,000 / 1,000 / 1,172)."""
    from ..data import datasets as ds

    parts = ds.load_group_set(dataset, n_train, seed, "defense")
    model = SklearnLogistic(C=C, newton_steps=0).fit(parts["train"])
    df, notes = defense_experiment(model, parts["train"], parts["valid"], parts["test"], seed=seed, **kwargs)
    df.insert(0, "dataset", dataset)
    return df, notes
