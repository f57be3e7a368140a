"""Typed method options: every method's options dataclass, its checks, the saved settings, `influent methods NAME`."""

from dataclasses import MISSING, fields, is_dataclass

import numpy as np
import pytest
from sklearn.datasets import load_iris

import influent as inf
from influent.cli import main
from influent.methods import METHODS
from influent.methods.options import MethodOptions, build_options


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(X))
    tr, va = idx[:100], idx[100:]
    return inf.Split(X[tr], y[tr]), inf.Split(X[va], y[va])


def run_cli(args, capsys):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_method_declares_typed_documented_options():
    assert len(METHODS) >= 19
    for name, spec in METHODS.items():
        assert spec.title and spec.title != name, name  # a title a person reads
        assert is_dataclass(spec.options) and issubclass(spec.options, MethodOptions), name
        for f in fields(spec.options):
            assert f.metadata.get("doc"), f"{name}.{f.name} has no doc"
            assert f.default is not MISSING or f.default_factory is not MISSING, f"{name}.{f.name} has no default"
        assert spec.options() is not None  # the defaults pass the checks
    ckpt = {k: s.checkpoints for k, s in METHODS.items() if s.checkpoints != "never"}
    assert ckpt == {"tracin": "always", "diffin": "always", "self-diffin": "always", "self-tracin": "option"}
    assert all("checkpoints" in {f.name for f in fields(METHODS[k].options)} for k in ckpt)
    from influent.grads.projection import PROJECTABLE
    takes = sorted(k for k, s in METHODS.items() if "projection" in {f.name for f in fields(s.options)})
    assert takes == sorted(PROJECTABLE)


def test_unknown_options_fail_before_any_work_and_checks_are_one_line(iris):
    train, valid = iris
    model = inf.models.SklearnLogistic().fit(train)
    with pytest.raises(inf.InputError, match=r"^method 'if' does not take option\(s\) \['depth', 'rank'\]$"):
        build_options("if", METHODS["if"].options, {"rank": 3, "depth": 1, "damping": 0.1})
    for method, opts, match in [("if", {"damping": -1}, "damping must be >= 0"),
                                ("ip", {"grad_method": "magic"}, "grad_method must be one of"),
                                ("if", {"solver_options": 3}, "solver_options must be a JSON object"),
                                ("fi", {"approx": "svd"}, "approx must be one of"),
                                ("fi", {"rank": 0, "approx": "kfsvd"}, "rank must be an integer in \\[1"),
                                ("ip-ensemble", {"members": 0}, "members must be an integer in \\[1"),
                                ("gex", {"sampling": "walk"}, "sampling must be one of"),
                                ("tmc-shapley", {"n_jobs": 1.5}, "n_jobs must be an integer")]:
        with pytest.raises(inf.InputError, match=match) as exc:
            inf.score(model, train, valid, method=method, **opts)
        assert "\n" not in str(exc.value)
    # an option of another variant of the method is rejected after the run, as before typed options
    with pytest.raises(inf.InputError, match=r"does not take option\(s\) \['rank'\]"):
        inf.score(model, train, valid, method="fi", rank=3)  # rank belongs to approx="kfsvd"
    # recorded checkpoints handed to a method that reads none are ignored (suites pass them to every entry)
    s = inf.score(model, train, valid, method="ip", checkpoints=[])
    assert "checkpoints" not in s.settings


def test_saved_settings_are_every_option_plus_the_facts_of_the_run(iris):
    train, valid = iris
    model = inf.models.SklearnLogistic().fit(train)
    s = inf.score(model, train, valid, method="if")
    want = {f.name: f.default for f in fields(METHODS["if"].options)}
    for key in ("grad_method", "projection", "solver_options"):
        assert s.settings[key] == want[key]
    # the model-dependent defaults (None) are saved as the values used on this convex model
    assert want["solver"] is None and want["damping"] is None
    assert s.settings["solver"] == "exact" and s.settings["damping"] == 0.0
    assert s.settings["curvature_rule"] == "convex model: exact Hessian"
    g = inf.score(model, train, valid, method="gex", members=3)
    assert {k: g.settings[k] for k in ("members", "steps", "lr", "batch_size", "sampling")} == \
        {"members": 3, "steps": 10, "lr": 0.01, "batch_size": 32, "sampling": "independent"}


def test_fi_builds_its_solver_with_the_one_solver_function(iris):
    from influent.methods import fi, registry

    train, _ = iris
    model = inf.models.SklearnLogistic().fit(train)
    assert fi.fit_solver is registry.fit_solver
    with pytest.raises(inf.InputError, match=r"^solver 'cg': .*unexpected keyword argument 'bogus'$"):
        fi.fit_solver(model, train, "cg", bogus=1)
    with pytest.raises(inf.InputError, match="unknown solver"):
        fi.fit_solver(model, train, "magic")


def test_cli_methods_name_prints_the_options_with_defaults_and_docs(capsys):
    code, out, _ = run_cli(["methods", "if"], capsys)
    assert code == 0
    assert "influence function" in out and "grad f^T (H + damping I)^-1 g_i" in out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}
    for name in ("solver", "damping", "solver_options", "grad_method", "projection"):
        assert name in lines, out
    assert lines["solver"].startswith("  solver (str | None, default None): ") and "'exact' on a convex" in lines["solver"]
    assert "default None" in lines["damping"] and "damping rule" in lines["damping"]
    assert "(dict | None, default None): keyword options of the solver" in lines["solver_options"]
    assert "(str, default 'auto')" in lines["grad_method"]
    code, out, err = run_cli(["methods", "nope"], capsys)
    assert code == 2 and "unknown method 'nope'; choose one of [" in err and "'if'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, out, _ = run_cli(["methods"], capsys)
    assert code == 0 and "tmc-shapley" in out and "label-quality" in out
