"""The `influent` command: outputs against the library, actions, select, and the bad-input table.

The command runs in-process through `influent.cli.main` (the console-script entry point), so exit codes
and stderr are the real ones without paying the import time of a subprocess per case.
"""

import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

import influent as inf
from influent.cli import main
from influent.runs.config import RunConfig
from influent.runs.inputs import load_data
from helpers import run_cli




def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def scored(data_dir, tmp_path_factory):
    """One `influent score` run with the influence function and a test split (removal curve)."""
    out = tmp_path_factory.mktemp("run") / "out"
    args = ["score", "--train", data_dir / "train.csv", "--valid", data_dir / "valid.csv", "--test", data_dir / "test.csv",
            "--label", "y", "--method", "if", "--C", "0.5", "--no-standardize", "--out", out]
    code = None
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    assert code == 0
    return out


def splits(data_dir):
    cfg = RunConfig(train=str(data_dir / "train.csv"), valid=str(data_dir / "valid.csv"), label="y")
    data = load_data(cfg)
    return data.train, data.valid


def test_score_outputs_match_the_library(scored, data_dir):
    s = inf.Scores.load(scored / "scores.parquet")
    train, valid = splits(data_dir)
    model = inf.models.SklearnLogistic(C=0.5).fit(train)
    want = inf.score(model, train, inf.targets.Utility(valid), method="if")
    np.testing.assert_allclose(s.values, want.values, rtol=1e-9, atol=1e-15)
    rec = json.loads((scored / "run.json").read_text())
    assert RunConfig.from_dict(rec["config"]) == RunConfig.from_dict(json.loads(json.dumps(rec["config"])))
    assert rec["config"]["method"] == "if" and rec["config"]["model_options"] == {"C": 0.5}
    assert rec["data"]["train"]["fingerprint"] == train.fingerprint()
    assert rec["data"]["train"]["sha256"] == hashlib.sha256((data_dir / "train.csv").read_bytes()).hexdigest()
    assert rec["data"]["train"]["rows"] == 300 and rec["data"]["test"]["rows"] == 134
    assert rec["versions"]["torch"] == torch.__version__.split("+")[0] or rec["versions"]["torch"] == torch.__version__
    assert rec["results"]["summary"]["n_harmful"] == int((want.values < 0).sum())
    assert rec["progress"]["score (if)"]["done"] == rec["progress"]["score (if)"]["total"]
    curve = rec["results"]["curve"]
    assert curve["harmful"]["accuracy"][0] == pytest.approx(model.accuracy(inf.from_arrays(*_xy(data_dir / "test.csv"))), abs=0.02)
    assert len(curve["k"]) == 7 and all(v is not None for v in curve["harmful"]["accuracy"])
    for t in ("score (if)", "fit logistic regression (C=0.5)", "removal curve"):
        assert rec["timings"][t] >= 0
    html = (scored / "report.html").read_text()
    for section in ("summary", "distribution", "samples", "removal", "settings"):
        assert f'id="{section}"' in html


def _xy(path):
    df = pd.read_csv(path)
    return df.drop(columns="y").to_numpy(), df["y"].to_numpy()


def test_run_config_round_trip():
    cfg = RunConfig(train="a.csv", valid="b.csv", method="ip", method_options={"damping": 1e-3},
                    model="mlp", model_options={"hidden": [8, 4]}, drop=["x"], image_shape=[8, 8])
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(inf.InputError, match="unknown setting"):
        RunConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_trim_writes_the_rest_and_a_change_log(scored, data_dir, tmp_path, capsys):
    out = tmp_path / "clean.csv"
    code, _, err = run_cli(["trim", "--scores", scored, "--budget", 12, "--out", out], capsys)
    assert code == 0, err
    s = inf.Scores.load(scored / "scores.parquet")
    removed = set(s.most_harmful(12).tolist())  # ids are row numbers here
    original = pd.read_csv(data_dir / "train.csv")
    clean = pd.read_csv(out)
    keep = [i for i in range(len(original)) if i not in removed]
    pd.testing.assert_frame_equal(clean, original.iloc[keep].reset_index(drop=True))
    log = pd.read_csv(tmp_path / "clean.changes.csv")
    assert log["id"].tolist() == s.most_harmful(12).tolist()
    assert (log["action"] == "trim").all()


def test_relabel_flips_the_lowest_binary_labels(scored, data_dir, tmp_path, capsys):
    out = tmp_path / "relabelled.parquet"
    code, _, err = run_cli(["relabel", "--scores", scored, "--budget", 0.02, "--out", out, "--log", tmp_path / "log.csv"], capsys)
    assert code == 0, err
    s = inf.Scores.load(scored / "scores.parquet")
    k = round(0.02 * 300)
    original = pd.read_csv(data_dir / "train.csv")
    new = pd.read_parquet(out)
    changed = np.flatnonzero(new["y"].to_numpy() != original["y"].to_numpy())
    assert sorted(changed.tolist()) == sorted(s.most_harmful(k).tolist())
    assert (new["y"].to_numpy()[changed] == 1 - original["y"].to_numpy()[changed]).all()
    pd.testing.assert_frame_equal(new.drop(columns="y"), original.drop(columns="y"))


def test_reweight_weights_are_the_softmax_of_values(scored, tmp_path, capsys):
    out = tmp_path / "weighted.csv"
    code, _, err = run_cli(["reweight", "--scores", scored, "--temperature", 1e-3, "--out", out], capsys)
    assert code == 0, err
    s = inf.Scores.load(scored / "scores.parquet")
    w = np.exp((s.values - s.values.max()) / 1e-3)
    np.testing.assert_allclose(pd.read_csv(out)["weight"].to_numpy(), w / w.mean(), rtol=1e-9)


def test_select_picks_the_highest_entropy_pool_rows(data_dir, tmp_path, capsys):
    out = tmp_path / "next.csv"
    code, _, err = run_cli(["select", "--train", data_dir / "train.csv", "--pool", data_dir / "pool.csv", "--label", "y",
                            "--id", "key", "--budget", 15, "--out", out], capsys)
    assert code == 0, err
    train, _ = splits(data_dir)
    pool = pd.read_csv(data_dir / "pool.csv")
    p = np.clip(inf.models.SklearnLogistic().fit(train).predict_proba(pool[train.columns].to_numpy(np.float32)), 1e-12, 1)
    entropy = -(p * np.log(p)).sum(1)
    want = pool["key"].to_numpy()[np.argsort(-entropy, kind="stable")[:15]]
    got = pd.read_csv(out)
    assert got["key"].tolist() == want.tolist()
    assert got["priority"].tolist() == list(range(1, 16))
    np.testing.assert_allclose(got["entropy_score"].to_numpy(), np.sort(entropy)[::-1][:15], rtol=1e-6)


def test_user_model_file(data_dir, tmp_path, capsys):
    code_file = tmp_path / "my_model.py"
    code_file.write_text(
        "import torch\n"
        "def make(train):\n"
        "    torch.manual_seed(3)\n"
        "    net = torch.nn.Sequential(torch.nn.Linear(train.n_features, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))\n"
        "    return {'module': net, 'loss': 'cross_entropy', 'params': 'last', 'weight_decay': 0.01}\n")
    out = tmp_path / "out"
    code, _, err = run_cli(["score", "--train", data_dir / "train.csv", "--valid", data_dir / "valid.csv", "--label", "y",
                            "--model", f"{code_file}:make", "--epochs", 30, "--method", "ip", "--out", out], capsys)
    assert code == 0, err
    train, valid = splits(data_dir)
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(30, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    model = inf.models.TorchAdapter(net, params="last", weight_decay=0.01,
                                    train=inf.models.TrainConfig(epochs=30, seed=0)).fit(train)
    want = inf.score(model, train, valid, method="ip")
    np.testing.assert_allclose(inf.Scores.load(out / "scores.parquet").values, want.values, rtol=1e-5, atol=1e-9)
    rec = json.loads((out / "run.json").read_text())
    assert rec["model"]["params"] == "last" and rec["model"]["n_params"] == 10


def test_datasets_lists_bundled_sets(capsys):
    code, out, _ = run_cli(["datasets"], capsys)
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    assert "digits" in rows and "yes" in rows["digits"]
    assert "breast-cancer" in rows


def test_report_rebuilds_the_same_page(scored, capsys):
    before = (scored / "report.html").read_bytes()
    (scored / "report.html").unlink()
    code, _, err = run_cli(["report", scored], capsys)
    assert code == 0, err
    assert (scored / "report.html").read_bytes() == before


def test_no_arguments_prints_help(capsys):
    code, out, _ = run_cli([], capsys)
    assert code == 0 and "score" in out and "demo" in out


def test_method_defaults_are_the_registry_roles(capsys, monkeypatch):
    """`influent score`, `plan` and `demo` take their --method defaults from `methods.registry` (read when the
    command is parsed, so `influent --help` imports no torch) and their help shows them."""
    import typer.main

    from influent.cli import app
    from influent.methods import DEFAULT_DETECTOR, DEFAULT_METHOD

    monkeypatch.setenv("COLUMNS", "200")
    cmd = typer.main.get_command(app)
    args = {"score": ["--out", "o", "--train", "t.csv", "--label", "y"], "plan": ["--train", "t.csv", "--label", "y"],
            "demo": []}
    want = {"score": DEFAULT_METHOD, "plan": DEFAULT_METHOD, "demo": DEFAULT_DETECTOR}
    for name, a in args.items():
        assert cmd.commands[name].make_context(name, a).params["method"] == want[name]
        code, out, _ = run_cli([name, "--help"], capsys)
        assert code == 0 and f"[default: {want[name]}]" in out, out


# ---- the bad-input table -------------------------------------------------------------------------------
def _write(d, name, df):
    p = d / name
    if name.endswith(".npz"):
        np.savez(p, **df)
    else:
        df.to_csv(p, index=False)
    return p


def _frame(data_dir, name="train.csv"):
    return pd.read_csv(data_dir / name)


def _score(train, valid, *extra, out):
    return ["score", "--train", train, "--valid", valid, "--label", "y", "--method", "ip", *extra, "--out", out]


def _case_nonnumeric(d, dd, out):
    df = _frame(dd)
    df["f3"] = df["f3"].map(lambda v: "high" if v > 0 else "low")
    df.loc[4, "f3"] = None  # text columns are one-hot encoded; a missing value in one is still an error
    return _score(_write(d, "t.csv", df), dd / "valid.csv", out=out)


def _case_nan_feature(d, dd, out):
    df = _frame(dd)
    df.loc[7, "f2"] = np.nan
    return _score(_write(d, "t.csv", df), dd / "valid.csv", out=out)


def _case_nan_label(d, dd, out):
    df = _frame(dd).astype({"y": float})
    df.loc[4, "y"] = np.nan
    return _score(_write(d, "t.csv", df), dd / "valid.csv", out=out)


def _case_one_class(d, dd, out):
    df = _frame(dd)
    df["y"] = 1
    return _score(_write(d, "t.csv", df), dd / "valid.csv", out=out)


def _case_valid_missing_feature(d, dd, out):
    return _score(dd / "train.csv", _write(d, "v.csv", _frame(dd, "valid.csv").drop(columns="f5")), out=out)


def _case_valid_unknown_label(d, dd, out):
    df = _frame(dd, "valid.csv")
    df.loc[0, "y"] = 7
    return _score(dd / "train.csv", _write(d, "v.csv", df), out=out)


def _case_empty(d, dd, out):
    return _score(_write(d, "t.csv", _frame(dd).iloc[:0]), dd / "valid.csv", out=out)


def _case_npz_no_x(d, dd, out):
    return _score(_write(d, "t.npz", {"features": np.zeros((5, 2)), "y": np.arange(5) % 2}), dd / "valid.csv", out=out)


def _case_npz_shape(d, dd, out):
    p = _write(d, "t.npz", {"X": np.random.default_rng(0).random((20, 3)), "y": np.arange(20) % 2})
    return _score(p, dd / "valid.csv", out=out)


def _case_model_no_function(d, dd, out):
    (d / "m.py").write_text("def other():\n    return 1\n")
    return _score(dd / "train.csv", dd / "valid.csv", "--model", f"{d / 'm.py'}:make", out=out)


def _case_model_wrong_return(d, dd, out):
    (d / "m.py").write_text("def make():\n    return 42\n")
    return _score(dd / "train.csv", dd / "valid.csv", "--model", f"{d / 'm.py'}:make", out=out)


def _case_unwritable_out(d, dd, out):
    blocker = d / "a-file"
    blocker.write_text("not a folder")
    return _score(dd / "train.csv", dd / "valid.csv", out=blocker / "out")


def _case_trim_budget(d, dd, out, scored):
    return ["trim", "--scores", scored, "--budget", 301, "--out", out / "clean.csv"]


def _case_trim_changed_data(d, dd, out, scored):
    import shutil

    run = d / "run"
    shutil.copytree(scored, run)
    rec = json.loads((run / "run.json").read_text())
    df = _frame(dd)
    df.loc[0, "f0"] += 1.0
    rec["config"]["train"] = str(_write(d, "t.csv", df))
    (run / "run.json").write_text(json.dumps(rec))
    return ["trim", "--scores", run, "--budget", 3, "--out", out / "clean.csv"]


def _case_select_budget(d, dd, out):
    return ["select", "--train", dd / "train.csv", "--pool", dd / "pool.csv", "--label", "y", "--id", "key",
            "--budget", 10_000, "--out", out / "next.csv"]


BAD = [
    ("missing train file", lambda d, dd, o: _score(d / "nope.csv", dd / "valid.csv", out=o), "file not found"),
    ("unsupported file type", lambda d, dd, o: _score(_write(d, "t.xlsx", _frame(dd)), dd / "valid.csv", out=o),
     "unsupported file type"),
    ("wrong label column", lambda d, dd, o: ["score", "--train", dd / "train.csv", "--valid", dd / "valid.csv",
                                             "--label", "target", "--out", o], "unknown column(s) ['target']"),
    ("wrong group column", lambda d, dd, o: _score(dd / "train.csv", dd / "valid.csv", "--group", "sex", out=o),
     "unknown column(s) ['sex']"),
    ("text feature with a missing value", _case_nonnumeric, "missing values in text column 'f3' at row 4"),
    ("NaN in a feature", _case_nan_feature, "missing values (NaN) in column(s) ['f2']"),
    ("NaN label", _case_nan_label, "label column 'y' has missing values at row 4"),
    ("label with one class", _case_one_class, "only one class"),
    ("valid lacks a feature", _case_valid_missing_feature, "valid: unknown column(s) ['f5']"),
    ("valid label unknown to the model", _case_valid_unknown_label, "unknown label(s) [7]"),
    ("empty training file", _case_empty, "the set is empty"),
    ("NPZ without X", _case_npz_no_x, "unknown column(s) ['X']"),
    ("NPZ with other features", _case_npz_shape, "use the same feature columns"),
    ("unknown method", lambda d, dd, o: ["score", "--train", dd / "train.csv", "--valid", dd / "valid.csv", "--label", "y",
                                         "--method", "magic", "--out", o], "unknown method 'magic'"),
    ("option the method does not take", lambda d, dd, o: _score(dd / "train.csv", dd / "valid.csv", "-o", "rank=3", out=o),
     "does not take option(s) ['rank']"),
    ("option without a value", lambda d, dd, o: _score(dd / "train.csv", dd / "valid.csv", "-o", "damping", out=o),
     "is not KEY=VALUE"),
    ("negative damping", lambda d, dd, o: ["score", "--train", dd / "train.csv", "--valid", dd / "valid.csv", "--label", "y",
                                           "--method", "if", "--damping", "-1", "--out", o], "damping must be >= 0"),
    ("unknown model", lambda d, dd, o: _score(dd / "train.csv", dd / "valid.csv", "--model", "svm", out=o), "unknown model 'svm'"),
    ("model file missing", lambda d, dd, o: _score(dd / "train.csv", dd / "valid.csv", "--model", f"{d}/none.py:f", out=o),
     "model file not found"),
    ("model file without the function", _case_model_no_function, "has no function 'make'"),
    ("model function returns junk", _case_model_wrong_return, "must return an influent ModelAdapter"),
    ("option of another model", lambda d, dd, o: _score(dd / "train.csv", dd / "valid.csv", "--epochs", 5, out=o),
     "--epochs do(es) not apply to --model logistic"),
    ("unknown target", lambda d, dd, o: _score(dd / "train.csv", dd / "valid.csv", "--target", "speed", out=o),
     "unknown target 'speed'"),
    ("fairness target without a group", lambda d, dd, o: _score(dd / "train.csv", dd / "valid.csv", "--target",
                                                                 "demographic-parity", out=o), "needs a group attribute"),
    ("output folder under a file", _case_unwritable_out, "is a file, not a folder"),
    ("missing required option", lambda d, dd, o: ["score", "--train", dd / "train.csv", "--valid", dd / "valid.csv",
                                                   "--out", o], "Missing option '--label'"),
    ("method with a target without --valid", lambda d, dd, o: ["score", "--train", dd / "train.csv", "--label", "y",
                                                               "--out", o], "measures its target on validation data: pass --valid FILE"),
    ("trim budget larger than the data", _case_trim_budget, "trim budget: 301 is larger than the 300 samples"),
    ("trim a folder that is not a run", lambda d, dd, o: ["trim", "--scores", d / "nothing", "--budget", 3, "--out",
                                                           o / "c.csv"], "run folder not found"),
    ("trim after the data changed", _case_trim_changed_data, "changed since it was scored"),
    ("trim to an unknown file type", lambda d, dd, o, s: ["trim", "--scores", s, "--budget", 3, "--out", o / "c.xlsx"],
     "use a .csv, .parquet or .npz file name"),
    ("reweight with a negative temperature", lambda d, dd, o, s: ["reweight", "--scores", s, "--temperature", "-2",
                                                                   "--out", o / "w.csv"], "temperature must be a positive"),
    ("select budget larger than the pool", _case_select_budget, "is larger than the 134 samples"),
    ("select with an unknown strategy", lambda d, dd, o: ["select", "--train", dd / "train.csv", "--pool", dd / "pool.csv",
                                                          "--label", "y", "--budget", 5, "--strategy", "oracle",
                                                          "--out", o / "next.csv"], "unknown strategy 'oracle'"),
    ("select with a misspelt strategy option", lambda d, dd, o: ["select", "--train", dd / "train.csv", "--pool",
                                                                 dd / "pool.csv", "--label", "y", "--budget", 5,
                                                                 "--strategy", "fi", "-o", "subsampel=0.2",
                                                                 "--out", o / "next.csv"],
     "strategy 'fi' has no option 'subsampel'"),
    ("select --valid with a strategy that ignores it", lambda d, dd, o: ["select", "--train", dd / "train.csv", "--pool",
                                                                         dd / "pool.csv", "--label", "y", "--budget",
                                                                         5, "--valid", dd / "valid.csv",
                                                                         "--out", o / "next.csv"],
     "--valid is used only by --strategy iv"),
    ("report of a folder without run.json", lambda d, dd, o: ["report", d], "has no run.json"),
    ("demo with an unknown data set", lambda d, dd, o: ["demo", "--dataset", "cifar", "--out", o], "unknown data set 'cifar'"),
    ("demo with a noise level of 1.5", lambda d, dd, o: ["demo", "--noise", 1.5, "--out", o], "noise must be a fraction"),
]


@pytest.mark.parametrize("case, make, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_with_one_line_and_no_output(case, make, message, data_dir, scored, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "out"
    nargs = make.__code__.co_argcount
    args = make(work, data_dir, out) if nargs == 3 else make(work, data_dir, out, scored)
    before = listing(tmp_path)
    code, stdout, err = run_cli(args, capsys)
    assert code == 2, (case, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, (case, err)
    assert lines[0].startswith("error: ") and message in lines[0], (case, lines[0])
    assert "Traceback" not in err + stdout
    assert not out.exists(), case
    assert listing(tmp_path) == before, case
    assert listing(scored) == sorted(["report.html", "run.json", "scores.parquet"]), case


def test_debug_shows_the_traceback(data_dir, tmp_path, capsys):
    with pytest.raises(inf.InputError, match="file not found"):
        main(["score", "--train", str(tmp_path / "nope.csv"), "--valid", str(data_dir / "valid.csv"), "--label", "y",
              "--out", str(tmp_path / "o"), "--debug"])


@pytest.mark.slow
def test_score_20000_rows_progress_reaches_100_percent(tmp_path, capsys):
    rng = np.random.default_rng(1)
    n, d = 20_000, 20
    w = rng.standard_normal(d)
    cols = [f"f{j}" for j in range(d)]
    for name, m in (("train", n), ("valid", 2_000)):
        X = rng.standard_normal((m, d))
        df = pd.DataFrame(X, columns=cols)
        df["y"] = (X @ w + 0.5 * rng.standard_normal(m) > 0).astype(int)
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["score", "--train", tmp_path / "train.csv", "--valid", tmp_path / "valid.csv",
                                 "--label", "y", "--method", "ip", "--out", out], capsys)
    assert code == 0, err
    bar = [line for line in err.splitlines() if "score (ip)" in line]
    assert len(bar) == 1 and re.search(r"100%\s+40/40", bar[0]), err
    rec = json.loads((out / "run.json").read_text())
    assert rec["progress"]["score (ip)"] == {"done": 40, "total": 40, "updates": 40}
    s = inf.Scores.load(out / "scores.parquet")
    assert len(s) == n and np.isfinite(s.values).all()
    assert "of 20,000 training samples look harmful" in stdout
