"""Every registry (methods, solvers, targets, strategies, suites, backends) is one `Registry`: an unknown
name is the one-line error with the registered choices, in the library and on the command line; every
suite resolves to a function; the report and the CLI help read names and titles from the registries."""

import dataclasses
import inspect
import re

import numpy as np
import pandas as pd
import pytest

import influent as inf
from influent.actions.active import STRATEGIES, resolve_strategy
from influent.backends import BACKENDS, check_backend
from influent.curvature import SOLVERS, make_solver
from influent.data.datasets import DATASETS, load
from influent.data.registry import Registry
from influent.evaluation.suites import SUITES, Suite, run_suite
from influent.methods import METHODS
from influent.methods.registry import reads_checkpoints
from influent.targets import TARGETS, make_target
from helpers import run_cli

REGISTRIES = {"method": METHODS, "solver": SOLVERS, "target": TARGETS, "strategy": STRATEGIES, "suite": SUITES,
              "backend": BACKENDS, "data set": DATASETS}
SPLIT = inf.Split(np.zeros((4, 2)), np.array([0, 1, 0, 1]))
LOOKUPS = {  # the public entry points that take a name of each kind
    "solver": lambda name: make_solver(name),
    "target": lambda name: make_target(name, SPLIT),
    "strategy": lambda name: resolve_strategy(name, {}),
    "suite": lambda name: run_suite(name, quick=True),
    "backend": lambda name: check_backend(name),
    "data set": lambda name: load(name),
    "method": lambda name: inf.score(inf.models.SklearnLogistic().fit(SPLIT), SPLIT, method=name),
}


def expected_line(kind, reg, name="nope"):
    return f"unknown {kind} {name!r}; choose one of {list(reg)}"


@pytest.mark.parametrize("kind", list(REGISTRIES))
def test_each_registry_is_a_registry_of_named_entries(kind):
    reg = REGISTRIES[kind]
    assert isinstance(reg, Registry) and reg.kind == kind and len(reg) >= 2
    for name, entry in reg.items():
        assert entry.name == name and isinstance(entry.summary, str)
        assert kind == "data set" or entry.title
    assert SOLVERS["cg"].summary and STRATEGIES["entropy"].summary  # first lines of the docstrings


@pytest.mark.parametrize("kind", list(LOOKUPS))
def test_unknown_name_is_the_one_line_error_with_the_registered_choices(kind):
    with pytest.raises(inf.InputError) as exc:
        LOOKUPS[kind]("nope")
    assert str(exc.value) == expected_line(kind, REGISTRIES[kind])
    assert "\n" not in str(exc.value)


def test_unhashable_name_is_the_same_error():
    with pytest.raises(inf.InputError, match=r"^unknown backend \['local'\]; choose one of \['local', 'ray'\]$"):
        check_backend(["local"])


def test_registered_entries_build_what_the_names_stand_for():
    from influent.curvature.iterative import CGSolver
    from influent.targets import Utility

    assert isinstance(make_solver("cg", tol=1e-6), CGSolver) and make_solver("cg", tol=1e-6).tol == 1e-6
    assert isinstance(make_target("utility", SPLIT), Utility)
    assert BACKENDS["local"].executor(SPLIT) is None  # local: no executor, the in-process code runs
    # a strategy entry shows its function's signature, so option checks and `valid` detection see it
    assert "valid" in inspect.signature(STRATEGIES["iv"]).parameters
    with pytest.raises(inf.InputError, match="strategy 'bald' has no option 'memebrs'; its options: \\['members'"):
        resolve_strategy("bald", {"memebrs": 3})


def test_every_registered_suite_resolves_to_a_function():
    for name, suite in SUITES.items():
        assert callable(suite.resolve()), name
        assert suite.summary, name


def test_a_suite_pointing_at_a_missing_function_is_a_one_line_error():
    suite = Suite("ghost", None, summary="x", module="influent.evaluation.noisy", function="ghost_suite")
    with pytest.raises(inf.InputError, match=r"^suite 'ghost' is not available yet: influent.evaluation.noisy."
                                             r"ghost_suite is missing$"):
        suite.resolve()
    suite = Suite("ghost", None, summary="x", module="influent.evaluation.ghost", function="run")
    with pytest.raises(inf.InputError, match="module influent.evaluation.ghost is missing"):
        suite.run(quick=True)


def test_fi_table1_suite_matches_the_trimming_protocol_run_directly():
    """The suite that pointed at a missing function: [FI] Table 1 (quick: 3 seeds); its FI accuracy at
    b = 5 equals removing the 5 lowest FI values and refitting, done by hand for each seed."""
    from influent.evaluation.suites import fi_blobs
    from influent.evaluation.trimming import method_scorer

    df = SUITES["fi-table1"].resolve()(quick=True)
    assert list(df["budget"]) == [0, 5, 10, 20] and set(df["n_seeds"]) == {3}
    assert list(df["paper wins"])[1:] == ["23/30", "28/30", "30/30"]
    s = fi_blobs(0)
    assert [len(s[k]) for k in ("train", "valid", "test")] == [150, 100, 600]
    accs = []
    for seed in range(3):
        t = fi_blobs(seed)
        m = inf.models.SklearnLogistic(C=1.0).fit(t["train"])
        o = np.argsort(method_scorer("fi")(m, t["train"], t["valid"], seed).values, kind="stable")
        accs.append(m.refit(t["train"].without(o[:5])).accuracy(t["test"]))
    assert df.loc[df["budget"] == 5, "acc_fi"].item() == pytest.approx(100 * np.mean(accs), abs=1e-9)


def test_reads_checkpoints_follows_the_method_entry(monkeypatch):
    spec = METHODS["ip"]
    for how, opts, want in (("never", {"over": "checkpoints"}, False), ("always", {}, True),
                            ("option", {}, False), ("option", {"over": "final"}, False),
                            ("option", {"over": "checkpoints"}, True)):
        monkeypatch.setattr(spec, "checkpoints", how)
        assert reads_checkpoints("ip", opts) is want, (how, opts)
    assert reads_checkpoints("not-a-method", {}) is False


# ---- the command line ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("reg")
    rng = np.random.default_rng(0)
    for name, n in (("train", 60), ("valid", 30), ("pool", 20)):
        X = rng.normal(size=(n, 3))
        df = pd.DataFrame(X, columns=["a", "b", "c"])
        if name != "pool":
            df["y"] = (X[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int)
        df.to_csv(d / f"{name}.csv", index=False)
    return d


CLI_CASES = {
    "target": lambda d, o: ["score", "--train", d / "train.csv", "--valid", d / "valid.csv", "--label", "y",
                            "--target", "nope", "--out", o],
    "solver": lambda d, o: ["score", "--train", d / "train.csv", "--valid", d / "valid.csv", "--label", "y",
                            "--solver", "nope", "--no-curve", "--out", o],
    "suite": lambda d, o: ["bench", "nope"],
    "strategy": lambda d, o: ["select", "--train", d / "train.csv", "--pool", d / "pool.csv", "--label", "y",
                              "--budget", 5, "--strategy", "nope", "--out", o / "next.csv"],
    "backend": lambda d, o: ["score", "--train", d / "train.csv", "--valid", d / "valid.csv", "--label", "y",
                             "--backend", "nope", "--out", o],
    "method": lambda d, o: ["score", "--train", d / "train.csv", "--valid", d / "valid.csv", "--label", "y",
                            "--method", "nope", "--out", o],
    "data set": lambda d, o: ["demo", "--dataset", "nope", "--out", o],
}


@pytest.mark.parametrize("kind", list(CLI_CASES))
def test_cli_unknown_name_exits_2_with_the_registry_line(kind, files, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(CLI_CASES[kind](files, out), capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == "error: " + expected_line(kind, REGISTRIES[kind])
    assert "Traceback" not in err + stdout and not out.exists()


def _help_text(args, capsys):
    code, out, _ = run_cli(args, capsys)
    assert code == 0
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())  # the words, whatever the wrapping


@pytest.mark.parametrize("command, option, kind", [("score", "--solver", "solver"), ("score", "--target", "target"),
                                                   ("score", "--method", "method"), ("score", "--backend", "backend"),
                                                   ("plan", "--solver", "solver"), ("select", "--strategy", "strategy"),
                                                   ("demo", "--method", "method")])
def test_cli_help_lists_the_registered_names(command, option, kind, capsys):
    text = _help_text([command, "--help"], capsys)
    assert "{" + kind not in text  # no placeholder left
    names = list(REGISTRIES[kind])
    listed = " | ".join(sorted(names) if kind in ("method", "solver") else names)
    assert listed in text, (option, listed)


def test_bench_list_shows_every_suite_with_its_summary(capsys):
    code, out, _ = run_cli(["bench", "--list"], capsys)
    assert code == 0
    rows = out.splitlines()
    assert [r.split()[0] for r in rows] == list(SUITES)
    for r, s in zip(rows, SUITES.values()):
        assert s.summary in r


# ---- the report --------------------------------------------------------------------------------------------
def test_report_reads_method_title_and_target_text_from_the_registries(monkeypatch):
    from influent.runs.config import RunConfig
    from influent.runs.inputs import Data
    from influent.runs.pipeline import run_score
    from influent.runs.steps import Steps

    monkeypatch.setattr(METHODS["ip"], "title", "Qzx gradient product")
    monkeypatch.setitem(TARGETS._entries, "utility", dataclasses.replace(TARGETS["utility"], text="qzx target loss"))
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] > 0).astype(int)
    data = Data(inf.Split(X[:50], y[:50], name="train"), inf.Split(X[50:], y[50:], name="valid"))
    html = run_score(RunConfig(train="train.csv", valid="valid.csv", method="ip", top=3), data, Steps()).html
    assert "Qzx gradient product" in html
    assert "qzx target loss" in html
