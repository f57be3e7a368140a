"""Conformance of every registered method (issue 24, item 8): `influent.evaluation.conformance`'s checks,
run over `influent.methods.METHODS`, so that a newly registered method is checked without a new test.

A method runs as its entry of `CASES` says (the model, fast options, its sign convention); a registered
method without an entry fails every test with a message saying to add one.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from helpers import one_thread, run_cli  # noqa: F401  (one_thread: an autouse fixture)
from influent.evaluation import conformance as conf
from influent.evaluation.conformance import Case
from influent.methods import METHODS


# One row per registered method. Thresholds are those the methods meet on `make_problem()` with margin
# (measured with seeds 0-5: Spearman with LOO >= 0.73 for the first-order estimators, AUC >= 0.79 for the
# detectors; the table in docs/evaluation.md gives seed 0's).
CASES: dict[str, Case] = {
    "random": Case(sign=None, seeded=True, why="no orientation: seeded standard normal draws, the reference "
                                               "every method must beat"),
    "loo": Case(network=False, why="retrains the model: a network adds only refits"),
    "diffin": Case(model="recorded", options={"batch_size": 16}, seeded=True),  # proxy batches < n: random
    "self-diffin": Case(model="recorded", options={"batch_size": 16}, sign="flipped", seeded=True),
    "ip-ensemble": Case(options={"rate": 0.1}, seeded=True, pairwise="mean"),  # 1% of 5 parameters: none dropped
    "gex": Case(threshold=0.4, seeded=True, pairwise="mean", why="Monte Carlo over 8 SGD members: 0.60-0.88 "
                                                                  "over seeds 0-5"),
    "self-gex": Case(sign="flipped", seeded=True),
    "fi": Case(sign="flipped", pairwise="column",  # quadratic in the target's gradient: no row mean
               why="values = -FI_util, minus an unsigned magnitude: [FI] trims the highest FI"),
    "fi-paired": Case(sign="flipped", threshold=0.6, why="minus an unsigned magnitude (the largest pair's FI); "
                                                         "AUC 0.69 here"),
    "ip": Case(pairwise="mean"),
    "tracin": Case(model="recorded", pairwise="mean"),
    "self-tracin": Case(sign="flipped"),
    "if": Case(pairwise="mean"),
    "self-if": Case(sign="flipped"),
    "iv": Case(pairwise="mean"),
    "label-quality": Case(sign="flipped", seeded=True),  # cross-validated probabilities: seeded folds
    "mislabel": Case(sign="flipped"),
    "outlier": Case(sign="flipped", seeded=True,  # Isolation Forest
                    why="pairwise form: per-class forests scoring the test gradients [OGA], not the score's forest"),
    "tmc-shapley": Case(options={"permutations": 5, "utility": "target", "empty_utility": -math.log(2)},
                        threshold=0.2, seeded=True, network=False,
                        why="Monte Carlo (5 permutations: 0.28-0.55 over seeds 0-5), and Shapley values are not "
                            "LOO effects; utility = minus the validation loss, the empty set's that of the "
                            "uniform prediction (log 2); retrains the model: a network adds only refits"),
    "unrolled": Case(model="recorded", pairwise="mean", permutable=False),  # replays the recorded batches
}

# Backends every method must agree with the in-process run on. "local" checks the on-disk gradient store;
# the Ray backend joins this list with a fixture that starts a small cluster.
BACKENDS = ["local"]


@pytest.fixture(scope="module")
def problem():
    return conf.make_problem()


def case_of(name: str) -> Case:
    if name not in CASES:
        pytest.fail(f"method {name!r} is registered but has no entry in tests/test_conformance.py CASES: add one "
                    "(its model, fast options, sign convention, whether it is random)")
    return CASES[name]


def test_every_registered_method_has_a_case():
    missing = [m for m in METHODS if m not in CASES]
    stale = [m for m in CASES if m not in METHODS]
    assert not missing, f"add {missing} to CASES in tests/test_conformance.py"
    assert not stale, f"{stale} are not registered methods: remove them from CASES"
    for name, case in CASES.items():
        if case.sign is None or case.threshold < 0.7 or not case.network or \
                (METHODS[name].pairwise and case.pairwise is None):
            assert case.why, f"{name}: say why the sign or pairwise relation is unchecked or the threshold lower"


# ---- the ground truth is independent ----------------------------------------------------------------
def test_problem_truth_is_brute_force_retraining(problem):
    """The leave-one-out effect the sign check uses equals refits outside influent: scikit-learn's own
    LogisticRegression (the same C) for the logistic model, a plain torch full-batch SGD loop for the
    recorded one."""
    tr, va = problem.train, problem.valid
    X, y, Xv, yv = tr.X, tr.y, va.X, va.y

    def sk(rows):
        est = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(X[rows], y[rows])
        return log_loss(yv, est.predict_proba(Xv))

    def sgd(rows):
        torch.manual_seed(0)
        net = torch.nn.Linear(X.shape[1], 2).double()
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        Xt, yt = torch.tensor(X[rows]), torch.tensor(y[rows])
        for _ in range(60):
            opt.zero_grad()
            reg = 0.5 * 1e-2 * sum((p ** 2).sum() for p in net.parameters())
            (torch.nn.functional.cross_entropy(net(Xt), yt) + reg).backward()
            opt.step()
        with torch.no_grad():
            return float(torch.nn.functional.cross_entropy(net(torch.tensor(Xv)), torch.tensor(yv)))

    n = len(tr)
    flipped = np.isin(np.arange(n), problem.flipped)
    rows = np.r_[problem.flipped, np.flatnonzero(~flipped)[:6]]  # every flipped sample and six clean ones
    for kind, refit, tol in (("logistic", sk, 1e-6), ("recorded", sgd, 1e-9)):
        full = refit(np.arange(n))
        truth = np.array([refit(np.delete(np.arange(n), i)) - full for i in rows])
        got = problem.loo(kind)[rows]
        assert np.abs(got - truth).max() <= tol * np.abs(truth).max(), kind
    # the flipped samples hurt the validation loss on average: the two sign rules agree on this problem
    assert problem.loo("logistic")[flipped].mean() < 0 < problem.loo("logistic")[~flipped].mean()


# ---- the checks, one test per (check, method) -------------------------------------------------------
NAMES = list(METHODS)


@pytest.mark.parametrize("name", NAMES)
def test_values_one_per_training_sample_in_input_order(problem, name):
    conf.check_values(problem, name, case_of(name))


@pytest.mark.parametrize("name", NAMES)
def test_pairwise_shape_columns_and_row_mean(problem, name):
    conf.check_pairwise(problem, name, case_of(name))


@pytest.mark.parametrize("name", NAMES)
def test_sign_higher_is_more_valuable(problem, name):
    case = case_of(name)
    if case.sign is None:
        pytest.skip(case.why)
    conf.check_sign(problem, name, case)


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_features_refused_before_any_work(problem, name):
    conf.check_refuses_nonfinite(problem, name, case_of(name))


@pytest.mark.parametrize("name", NAMES)
def test_determinism_under_a_seed(problem, name):
    conf.check_determinism(problem, name, case_of(name))


@pytest.mark.parametrize("name", NAMES)
def test_options_listed_and_unknown_refused(problem, name):
    conf.check_options(problem, name, case_of(name))


@pytest.mark.parametrize("name", NAMES)
def test_users_objects_left_unchanged(problem, name):
    conf.check_inputs_unchanged(problem, name, case_of(name))


@pytest.mark.parametrize("name", NAMES)
def test_cli_lists_every_option(name, capsys):
    code, out, err = run_cli(["methods", name], capsys)
    assert code == 0, err
    for opt, default in conf.option_defaults(name).items():
        assert f"  {opt} (" in out and f"default {default!r})" in out, f"{name}: option {opt} not listed"


@pytest.mark.parametrize("check", conf.NETWORK_CHECKS)
@pytest.mark.parametrize("name", NAMES)
def test_on_a_network(problem, name, check):
    """The checks without ground truth on a small tanh MLP (non-convex: the default curvature, the last layer)."""
    case = case_of(name)
    if not case.network:
        pytest.skip(case.why)
    conf.CHECKS[check](problem, name, replace(case, model="mlp"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
def test_backend_equals_in_process(problem, name, backend):
    conf.check_backend(problem, name, case_of(name), backend)


# ---- the checks fail where they should ---------------------------------------------------------------
def test_checks_catch_a_broken_method(problem, monkeypatch):
    """Each check fails on a method that breaks its promise (here `ip` with its values altered)."""
    spec = METHODS["ip"]
    score = spec.score

    def flipped_sign(job):
        r = score(job)
        return type(r)(-r.values, r.raw)
    monkeypatch.setattr(spec, "score", flipped_sign)
    with pytest.raises(AssertionError, match="check_sign: Spearman correlation with the leave-one-out effect is -"):
        conf.check_sign(problem, "ip", CASES["ip"])
    with pytest.raises(AssertionError, match="column 0 of the pairwise form is not the score with test sample 0"):
        conf.check_pairwise(problem, "ip", CASES["ip"])

    def global_noise(job):
        r = score(job)
        return type(r)(r.values + 1e-3 * np.random.random(len(r.values)), r.raw)
    monkeypatch.setattr(spec, "score", global_noise)
    with pytest.raises(AssertionError, match="two calls with seed 0 differ"):
        conf.check_determinism(problem, "ip", CASES["ip"])

    def edits_the_features(job):
        job.train.X[0, 0] += 1.0
        return score(job)
    monkeypatch.setattr(spec, "score", edits_the_features)
    x00 = problem.train.X[0, 0]
    try:
        with pytest.raises(AssertionError, match=r"changed the user's \['train.X'\]"):
            conf.check_inputs_unchanged(problem, "ip", CASES["ip"])
    finally:
        problem.train.X[0, 0] = x00

    def sorted_values(job):
        r = score(job)
        return type(r)(np.sort(r.values), r.raw)
    monkeypatch.setattr(spec, "score", sorted_values)
    with pytest.raises(AssertionError, match="do not follow the rows"):
        conf.check_values(problem, "ip", CASES["ip"])


def test_check_method_runs_every_check_with_a_default_case(problem):
    assert conf.check_method("if", problem=problem) == list(conf.CHECKS)
    with pytest.raises(conf.InputError, match="unknown method 'nope'"):
        conf.check_method("nope", problem=problem)


def test_a_users_method_is_checked_and_needs_a_case(problem):
    """`check_method` on a method registered outside influent; without a row in CASES its tests fail."""
    from dataclasses import dataclass

    from influent.methods import MethodOptions, Result, opt, register_method

    @dataclass
    class NormOptions(MethodOptions):
        negate: bool = opt(True, "values = -|g|^2 (False: +|g|^2, the wrong orientation)")

    name = "user-negated-grad-norm"

    @register_method(name, needs_target=False, title="negated squared gradient norm", options=NormOptions)
    def negated_norm(job):
        """Minus the squared norm of each sample's loss gradient (high = suspicious)."""
        sq = np.asarray(job.source().sq_norms(), dtype=np.float64)
        return Result(-sq if job.options.negate else sq, sq)

    try:
        assert conf.check_method(name, Case(sign="flipped"), problem) == list(conf.CHECKS)
        with pytest.raises(pytest.fail.Exception, match="has no entry in tests/test_conformance.py CASES: add one"):
            case_of(name)
        with pytest.raises(AssertionError, match="seeds 0 and 1 give identical values"):
            conf.check_determinism(problem, name, Case(sign="flipped", seeded=True))
        # a self-influence read as a signed effect on the target: its rank correlation with LOO is about 0
        with pytest.raises(AssertionError, match="Spearman correlation with the leave-one-out effect is"):
            conf.check_sign(problem, name, Case(sign="loo"))
        # and read the wrong way round: the flipped labels rank high
        with pytest.raises(AssertionError, match=r"ROC AUC of the flipped labels ranked lowest first is 0\.[0-2]"):
            conf.check_sign(problem, name, Case(sign="flipped", options={"negate": False}))
    finally:
        METHODS._entries.pop(name)
