"""Nothing a user types loses data: outputs never replace inputs, existing outputs only with --force,
files with the umask's modes, Ctrl-C / SIGTERM exit 130 / 143 with one line and leave nothing half-written,
run folders work from any directory; and the hostile inputs of issue 12 each get a one-line error."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import noisy_table, run, run_cli, score_args  # noqa: F401 (run: a fixture)

SRC = str(Path(__file__).resolve().parents[1] / "src")




def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture()
def files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for name, n, seed in (("train", 80, 0), ("valid", 40, 1), ("test", 40, 2)):
        noisy_table(n, seed).to_csv(d / f"{name}.csv", index=False)
    return d


@pytest.mark.parametrize("action, extra", [("trim", ["--budget", "5"]), ("relabel", ["--budget", "5"]),
                                           ("reweight", ["--temperature", "1"]), ("coreset", ["--budget", "0.5"])])
def test_an_output_never_replaces_the_training_file(action, extra, files, run, capsys):
    train = files / "train.csv"
    before = sha(train)
    link = files.parent / "link.csv"
    link.symlink_to(train)
    for target in (train, files / ".." / "data" / "train.csv", link):
        code, _, err = run_cli([action, "--scores", run, *extra, "--out", target, "--force"], capsys)
        assert code == 2 and "is the input --train" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli([action, "--scores", run, *extra, "--out", files / "x.csv", "--log", run / "scores.parquet",
                            "--force"], capsys)
    assert code == 2 and "input" in err
    assert sha(train) == before


def test_existing_outputs_are_replaced_only_with_force(files, run, tmp_path, capsys):
    before = {p.name: sha(p) for p in run.iterdir()}
    code, _, err = run_cli(score_args(files, run), capsys)
    assert code == 2 and "--force" in err
    assert {p.name: sha(p) for p in run.iterdir()} == before
    code, _, err = run_cli(score_args(files, run, "--force", "--method", "ip"), capsys)
    assert code == 0, err
    assert sha(run / "scores.parquet") != before["scores.parquet"]
    out = tmp_path / "clean.csv"
    out.write_text("keep me")
    code, _, err = run_cli(["trim", "--scores", run, "--budget", "3", "--out", out], capsys)
    assert code == 2 and "--force" in err and out.read_text() == "keep me"
    code, _, err = run_cli(["trim", "--scores", run, "--budget", "3", "--out", out, "--force"], capsys)
    assert code == 0 and len(pd.read_csv(out)) == 77
    # select: the pool is an input
    code, _, err = run_cli(["select", "--train", files / "train.csv", "--pool", files / "test.csv", "--label", "y",
                            "--budget", "3", "--out", files / "test.csv", "--force"], capsys)
    assert code == 2 and "is the input --pool" in err


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_get_the_umasks_mode(umask, mode, files, tmp_path, capsys):
    old = os.umask(umask)
    try:
        out = tmp_path / f"run{umask:o}"
        assert run_cli(score_args(files, out), capsys)[0] == 0
        assert run_cli(["trim", "--scores", out, "--budget", "2", "--out", tmp_path / f"c{umask:o}.csv"], capsys)[0] == 0
    finally:
        os.umask(old)
    written = [out / "scores.parquet", out / "run.json", out / "report.html", tmp_path / f"c{umask:o}.csv",
               tmp_path / f"c{umask:o}.changes.csv"]
    assert [oct(p.stat().st_mode & 0o777) for p in written] == [oct(mode)] * len(written)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_trim_works_from_another_directory(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(files)
    assert run_cli(["score", "--train", "train.csv", "--valid", "valid.csv", "--label", "y", "--no-curve",
                    "--out", "../rel-run"], capsys)[0] == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli(["trim", "--scores", tmp_path / "rel-run", "--budget", "4", "--out", "t.csv"], capsys)
    assert code == 0, err
    assert len(pd.read_csv(elsewhere / "t.csv")) == 76


SLOW_MODEL = '''
import pathlib, torch
def make(train):
    pathlib.Path(__file__).with_name("started").write_text("1")
    return torch.nn.Sequential(torch.nn.Linear(5, 64), torch.nn.Tanh(), torch.nn.Linear(64, 2))
'''


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_an_interrupt_exits_130_or_143_with_one_line_and_keeps_the_old_outputs(sig, code, name, files, run, tmp_path):
    model = tmp_path / "slow.py"
    model.write_text(SLOW_MODEL)
    before = {p.name: sha(p) for p in run.iterdir()}
    fresh = tmp_path / "fresh"
    for out, extra in ((run, ["--force"]), (fresh, [])):
        (tmp_path / "started").unlink(missing_ok=True)
        args = [sys.executable, "-m", "influent.cli", *map(str, score_args(files, out, "--model", f"{model}:make",
                                                                         "--epochs", "10000000", *extra))]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # as in `cmd &`
        deadline = time.time() + 120
        while not (tmp_path / "started").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert proc.returncode == code, err
        assert len(lines) == 1 and name in lines[0] and "no output was written" in lines[0], err
        assert "Traceback" not in err
    assert {p.name: sha(p) for p in run.iterdir()} == before
    assert not fresh.exists()


# ---- hostile inputs (issue 12, item 7): one line, exit 2, no traceback, nothing written ----------------------
def _continuous_label(d, run, tmp):
    df = noisy_table(80, 0)
    df["y"] = np.random.default_rng(0).uniform(size=80)
    df.to_csv(tmp / "cont.csv", index=False)
    return _score_args(tmp / "cont.csv", d / "valid.csv", tmp / "o"), "continuous"


def _score_args(train, valid, out, *extra):
    return ["score", "--train", train, "--valid", valid, "--label", "y", "--no-curve", "--out", out, *extra]


def _damping_nan(d, run, tmp):
    return _score_args(d / "train.csv", d / "valid.csv", tmp / "o", "--damping", "nan"), "damping"


def _solver_options_not_json(d, run, tmp):
    return _score_args(d / "train.csv", d / "valid.csv", tmp / "o", "-o", "solver_options=tol:1e-3"), "JSON object"


def _solver_options_unknown_key(d, run, tmp):
    return _score_args(d / "train.csv", d / "valid.csv", tmp / "o", "--solver", "cg", "-o",
                       'solver_options={"tolerance": 1e-3}'), "tolerance"


def _truncated_scores(d, run, tmp):
    data = (run / "scores.parquet").read_bytes()
    (run / "scores.parquet").write_bytes(data[: len(data) // 2])
    return ["trim", "--scores", run, "--budget", "3", "--out", tmp / "c.csv"], "truncated"


def _model_output_size(d, run, tmp):
    (tmp / "m.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(5, 3)\n")
    return (_score_args(d / "train.csv", d / "valid.csv", tmp / "o", "--model", f"{tmp / 'm.py'}:make"),
            "3 output")


def _test_label_never_seen(d, run, tmp):
    df = noisy_table(40, 2)
    df.loc[0, "y"] = 7
    df.to_csv(tmp / "t.csv", index=False)
    return _score_args(d / "train.csv", d / "valid.csv", tmp / "o", "--test", tmp / "t.csv", "--curve"), "unknown label"


def _budget_above_one_fraction(d, run, tmp):
    return ["trim", "--scores", run, "--budget", "1.5", "--out", tmp / "c.csv"], "budget"


HOSTILE = [_continuous_label, _damping_nan, _solver_options_not_json, _solver_options_unknown_key, _truncated_scores,
           _model_output_size, _test_label_never_seen, _budget_above_one_fraction]


@pytest.mark.parametrize("case", HOSTILE, ids=[c.__name__.strip("_") for c in HOSTILE])
def test_hostile_input_is_one_line_exit_2(case, files, run, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    args, message = case(files, run, work)
    before = sorted(p.name for p in work.iterdir())
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.lstrip().startswith(("✓", "⠋", "•"))]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in work.iterdir()) == before  # nothing written


def test_report_on_a_read_only_folder_is_one_line(run, capsys, monkeypatch):
    """Root ignores permission bits, so the read-only folder is simulated where the write fails."""
    import influent.runs.record as report

    def denied(path, write):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(report, "atomic_write", denied)
    before = sha(run / "report.html")
    code, _, err = run_cli(["report", run], capsys)
    assert code == 2 and err.count("\n") == 1 and "cannot write" in err and "Permission denied" in err, err
    assert sha(run / "report.html") == before


@pytest.mark.parametrize("text, count", [("5", 5), ("0.25", 20), ("1", 1)])
def test_budget_count_or_fraction(text, count, run, tmp_path, capsys):
    out = tmp_path / f"b{text}.csv"
    code, _, err = run_cli(["trim", "--scores", run, "--budget", text, "--out", out], capsys)
    assert code == 0, err
    assert len(pd.read_csv(out)) == 80 - count


@pytest.mark.parametrize("text", ["1.0", "1.5", "-2", "nan", "5%", "0"])
def test_budget_anything_else_is_an_error(text, run, tmp_path, capsys):
    code, _, err = run_cli(["trim", "--scores", run, "--budget", text, "--out", tmp_path / "b.csv"], capsys)
    assert code == 2 and "count" in err and not (tmp_path / "b.csv").exists(), err


def test_mlp_default_and_params_are_recorded_in_the_run(files, tmp_path, capsys):
    import json

    out = tmp_path / "mlp"
    code, _, err = run_cli(score_args(files, out, "--model", "mlp", "--hidden", "8", "--epochs", "50"), capsys)
    assert code == 0, err
    rec = json.loads((out / "run.json").read_text())
    settings = rec["method"]["settings"]
    assert settings["solver"] == "ekfac" and settings["damping"] > 0 and "damping_rule" in settings
    last = tmp_path / "mlp-last"
    code, _, err = run_cli(score_args(files, last, "--model", "mlp", "--hidden", "8", "--epochs", "50", "--params", "last"),
                           capsys)
    assert code == 0, err
    rec = json.loads((last / "run.json").read_text())
    assert rec["config"]["params"] == "last" and rec["method"]["settings"]["model"]["params"] == "last"
    assert rec["method"]["settings"]["solver"] == "exact" and rec["method"]["settings"]["damping"] == 0.0  # convex
    code, _, err = run_cli(score_args(files, tmp_path / "x", "--model", "mlp", "--params", "nope"), capsys)
    assert code == 2 and "match no parameter" in err


def test_standardize_report_shows_the_data_as_given(files, tmp_path, capsys):
    import json

    df = noisy_table(80, 0)
    df["f1"] = df["f1"] * 50 + 1000  # far from z-scores
    df.to_csv(tmp_path / "tr.csv", index=False)
    out = tmp_path / "std"
    code, _, err = run_cli(["score", "--train", tmp_path / "tr.csv", "--valid", files / "valid.csv", "--label", "y",
                            "--no-curve", "--standardize", "--out", out], capsys)
    assert code == 0, err
    rec = json.loads((out / "run.json").read_text())
    shown = 0
    for s in rec["results"]["samples"]["harmful"]:
        for name, value, z in s["features"]:
            assert value == pytest.approx(float(np.float32(df.loc[s["position"], name])), rel=1e-6)
            shown += name == "f1"
    assert shown > 0


def test_label_quality_flags_labels_more_likely_wrong(tmp_path, capsys):
    """The Tukey fence flags nothing on a [0, 1] statistic mostly near 1; the method's own rule flags the
    samples whose given label has out-of-sample probability below 1/2 (here most of the flipped ones)."""
    pytest.importorskip("cleanlab")
    import json

    rng = np.random.default_rng(0)
    df = noisy_table(300, 0, label_noise=0.2)
    flip = rng.choice(300, 30, replace=False)
    df["clean"] = df["y"]
    df.loc[flip, "y"] = 1 - df.loc[flip, "y"]
    df.to_csv(tmp_path / "noisy.csv", index=False)
    noisy_table(60, 1).to_csv(tmp_path / "v.csv", index=False)
    out = tmp_path / "lq"
    code, _, err = run_cli(["score", "--train", tmp_path / "noisy.csv", "--valid", tmp_path / "v.csv", "--label", "y",
                            "--clean-label", "clean", "--method", "label-quality", "--no-curve", "--out", out], capsys)
    assert code == 0, err
    rec = json.loads((out / "run.json").read_text())
    s = rec["results"]["summary"]
    assert s["rule"] == "method" and s["threshold"] == 0.5
    assert s["noisy_among_harmful"] >= 20 and s["n_harmful"] <= 60, s


def test_a_gradient_store_is_reused_and_an_interrupt_says_what_it_keeps(files, tmp_path, capsys):
    import influent as inf
    from influent import cli
    from influent.grads.source import GradientSource

    store = tmp_path / "grads"
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--method", "ip", "--chunk-size", "16", "--store", store]
    assert run_cli(score_args(files, a, *args), capsys)[0] == 0
    assert run_cli(score_args(files, b, *args), capsys)[0] == 0
    np.testing.assert_array_equal(inf.Scores.load(a / "scores.parquet").values, inf.Scores.load(b / "scores.parquet").values)
    assert cli.store_progress(store) == (5, 5)  # 80 rows in chunks of 16, all finished
    # a store left half-filled (as by an interrupt) is reported by the one line
    train = inf.from_arrays(np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2)
    half = tmp_path / "half"
    src = GradientSource(inf.models.SklearnLogistic().fit(train), train, 8, half)
    src.fill_store(stop_after=2)
    cli._STORES[:] = [half]
    cli._WRITTEN.clear()
    line = cli._interrupted_line("Ctrl-C")
    assert "keeps 2 of 5 finished chunks" in line and "no output was written" in line and "\n" not in line
    cli._STORES.clear()
