"""Typed method options: every method's options dataclass, its checks, the saved settings, `influent methods NAME`."""

from dataclasses import MISSING, fields, is_dataclass

import numpy as np
import pytest
from sklearn.datasets import load_iris

import influent as inf
from helpers import run_cli
from influent.methods import METHODS
from influent.methods.options import MethodOptions, build_options


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(X))
    tr, va = idx[:100], idx[100:]
    return inf.Split(X[tr], y[tr]), inf.Split(X[va], y[va])




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
    from influent.methods.options import ProjectionOptions
    takes = sorted(k for k, s in METHODS.items() if "projection" in {f.name for f in fields(s.options)})
    assert takes == sorted(k for k, s in METHODS.items() if issubclass(s.options, ProjectionOptions))
    assert {"ip", "if", "tracin", "self-tracin", "outlier"} <= set(takes)


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
    # the checked values are what is saved: plain Python numbers, not the numpy or string forms given
    h = inf.score(model, train, valid, method="gex", members=np.int64(3), lr="0.01", batch_size=np.float64(32))
    assert [type(h.settings[k]) for k in ("members", "lr", "batch_size")] == [int, float, int]
    assert np.array_equal(h.values, g.values)


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


# every value that once reached a plain int()/float() or a library's own error: (method, options, key words)
BAD_OPTIONS = [
    ("mislabel", {"rounds": "a"}, r"mislabel: rounds must be an integer in \[0, inf\], got 'a'"),
    ("mislabel", {"rounds": -1}, r"mislabel: rounds must be an integer in \[0"),
    ("mislabel", {"newton_steps": 0}, r"mislabel: newton_steps must be an integer in \[1"),
    ("mislabel", {"refresh": 1.5}, r"mislabel: refresh must be an integer in \[1"),
    ("mislabel", {"calibrate": "yes"}, r"mislabel: calibrate must be one of \[False, True\], got 'yes'"),
    ("mislabel", {"params": [1]}, r"mislabel: params must be 'auto', 'all', 'last' or module names, got \[1\]"),
    ("outlier", {"n_estimators": 0}, r"n_estimators must be an integer in \[1"),
    ("outlier", {"detector": "ocsvm", "nu": 2.0}, r"nu must be a number in \(0, 1\], got 2\.0"),
    ("outlier", {"detector": "ocsvm", "nu": 0}, r"nu must be a number in \(0, 1\]"),
    ("outlier", {"detector": "ocsvm", "kernel": "cubic"},
     r"kernel must be one of \['linear', 'poly', 'rbf', 'sigmoid'\]"),
    ("outlier", {"detector": "ocsvm", "gamma": "x"}, r"gamma \('scale', 'auto' or a number\) must be a number in \[0"),
    ("outlier", {"detector": "ocsvm", "gamma": -1.0}, r"gamma .* must be a number in \[0, inf\], got -1\.0"),
    ("outlier", {"max_samples": 0}, r"max_samples \('auto', a count or a fraction\) must be an integer in \[1"),
    ("outlier", {"max_samples": 1.5}, r"max_samples \(a fraction\) must be a number in \(0, 1\], got 1\.5"),
    ("outlier", {"max_samples": "all"}, r"max_samples .* must be an integer in \[1, inf\], got 'all'"),
    ("outlier", {"normalize": "no"}, r"normalize must be one of \[True, False\]"),
    ("outlier", {"params": -1}, r"params must be 'auto', 'all', 'last' or module names, got -1"),
    ("ip-ensemble", {"members": "a"}, r"members must be an integer in \[1"),
    ("ip-ensemble", {"noise": -0.1, "mode": "noise"}, r"noise must be a number in \[0"),
    ("ip-ensemble", {"rate": "a"}, r"rate must be a number in \[0, 1\), got 'a'"),
    ("ip-ensemble", {"rate": 1.0}, r"rate must be a number in \[0, 1\), got 1\.0"),
    ("ip-ensemble", {"rate": [0.2, 0.1]}, r"rate \(lo, hi\) must have lo <= hi"),
    ("ip-ensemble", {"rate": [0.1, 0.2, 0.3]}, r"rate must be a number in \[0, 1\) or a pair \(lo, hi\)"),
    ("ip-ensemble", {"dropout_points": 5}, r"dropout_points must be None, a module name or a list of module names"),
    ("gex", {"steps": 0}, r"steps must be an integer in \[1"),
    ("gex", {"lr": 0}, r"lr must be a number in \(0, inf\]"),
    ("gex", {"batch_size": "big"}, r"batch_size must be an integer in \[1"),
    ("fi", {"approx": "kfsvd", "rank": "a"}, r"rank must be an integer in \[1"),
    ("fi", {"approx": "kfsvd", "power_iters": -1}, r"power_iters must be an integer in \[0"),
    ("fi", {"subsample": 0.5, "n_estimators": 0}, r"n_estimators must be an integer in \[1"),
    ("fi", {"subsample": 0.5, "keep_exact": "yes"}, r"keep_exact must be one of \[False, True\]"),
    ("fi", {"damping": -1}, r"damping must be >= 0"),
    ("fi-paired", {"max_n": "a"}, r"fi-paired: max_n must be an integer in \[1, inf\], got 'a'"),
    ("fi-paired", {"max_n": 0}, r"fi-paired: max_n must be an integer in \[1"),
    ("tmc-shapley", {"tolerance": -0.1}, r"tmc-shapley: tolerance must be a number in \[0"),
    ("tmc-shapley", {"tolerance": "a"}, r"tmc-shapley: tolerance must be a number"),
    ("tmc-shapley", {"patience": 0}, r"tmc-shapley: patience must be an integer in \[1"),
    ("loo", {"subset": "a"}, r"loo: subset must be a list of positions, got 'a'"),
    ("loo", {"subset": [1.5]}, r"loo: subset positions must be an integer in \[0, inf\], got 1\.5"),
    ("loo", {"subset": [500]}, r"loo: subset positions must be below the 100 training samples, got 500"),
    ("loo", {"warm_start": "no"}, r"loo: warm_start must be one of \[True, False\]"),
    ("label-quality", {"cv": 1}, r"cv must be 0 \(in-sample\) or a fold count >= 2, got 1"),
    ("tracin", {"checkpoints": 5}, r"checkpoints must be a TrainingRecorder or a list of Checkpoint.*got int"),
    ("diffin", {"checkpoints": [1, 2]}, r"checkpoints must be a TrainingRecorder or a list of Checkpoint.*got list"),
    ("self-tracin", {"over": "checkpoints", "checkpoints": "abc"}, r"checkpoints must be .*, got str"),
]


@pytest.mark.parametrize("method, opts, match", BAD_OPTIONS, ids=[f"{m}-{'-'.join(o)}" for m, o, _ in BAD_OPTIONS])
def test_bad_option_values_are_one_line_input_errors(method, opts, match, iris):
    train, valid = iris
    model = inf.models.SklearnLogistic().fit(train)
    with pytest.raises(inf.InputError, match=match) as exc:
        inf.score(model, train, valid, method=method, **opts)
    assert "\n" not in str(exc.value)
