"""The memory planner: its estimate against the measured peak of three runs, refusal, and `influent plan`."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import influent as inf
from influent.data.validate import InputError
from influent.backends.planner import Plan, check_plan, plan

SRC = str(Path(inf.__file__).resolve().parents[1])

# Each configuration is measured in a fresh process: the peak resident memory a `score` call adds (a thread
# samples /proc/self/statm every 2 ms, and the high-water mark VmHWM) after a warm-up call, next to the
# planner's estimate.
MEASURE = textwrap.dedent('''
    import json, os, sys, threading, time
    import numpy as np, torch
    import influent as inf
    from influent.backends.planner import plan
    torch.set_num_threads(1)

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    rng = np.random.default_rng(0)
    cfg = sys.argv[1]
    if cfg == "ip-vmap":  # per-sample gradient rows of an MLP (vmap path)
        X = rng.normal(size=(4000, 100)).astype(np.float32); y = rng.integers(0, 10, 4000)
        tr, target = inf.from_arrays(X[:3000], y[:3000]), inf.from_arrays(X[3000:], y[3000:])
        m = inf.models.TabularMLP(hidden=(256,), train=inf.models.TrainConfig(epochs=2)).fit(tr)
        kw = dict(method="ip", chunk_size=768, grad_method="vmap")
    elif cfg == "if-exact":  # the explicit Hessian of a 10-class logistic model on 250 features
        X = rng.normal(size=(1300, 200)); y = rng.integers(0, 10, 1300)
        tr, target = inf.from_arrays(X[:1000], y[:1000]), inf.from_arrays(X[1000:], y[1000:])
        m = inf.models.SklearnLogistic(C=1.0).fit(tr)
        kw = dict(method="if", solver="exact")
    else:  # the Isolation Forest on the whole gradient matrix
        X = rng.normal(size=(6000, 100)).astype(np.float32); y = rng.integers(0, 10, 6000)
        tr, target = inf.from_arrays(X, y), None
        m = inf.models.TabularMLP(hidden=(64,), train=inf.models.TrainConfig(epochs=2)).fit(tr)
        kw = dict(method="outlier", params="all")
    estimate = plan(m, tr, target, **kw).memory_bytes
    inf.score(m, tr, target, **{**kw, "chunk_size": 8})
    base = rss(); peak = [base]; stop = [False]  # (fit and warm-up peaks stay below the scoring peak)
    def loop():
        while not stop[0]:
            peak[0] = max(peak[0], rss()); time.sleep(0.002)
    t = threading.Thread(target=loop); t.start()
    inf.score(m, tr, target, **kw)
    stop[0] = True; t.join()
    # the exact high-water mark of this process's memory: VmHWM, which starts afresh at exec (ru_maxrss does
    # not: Linux carries the parent's peak across fork and exec, so a large pytest process would inflate it)
    with open("/proc/self/status") as f:
        high = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024
    print(json.dumps({"measured": max(peak[0], high) - base, "estimate": estimate}))
''')


@pytest.mark.slow
@pytest.mark.parametrize("cfg", ["ip-vmap", "if-exact", "iforest"])
def test_estimate_within_30_percent_of_the_measured_peak(cfg):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1",
           "MALLOC_MMAP_THRESHOLD_": "65536"}  # large blocks are mmapped and given back when freed: a clean baseline
    results = []
    for _ in range(2):  # one repeat: a measurement on a loaded, shared machine (both results shown on failure)
        out = subprocess.run([sys.executable, "-c", MEASURE, cfg], capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        r = json.loads(out.stdout.strip().splitlines()[-1])
        assert r["measured"] > 50 * 2**20  # the configuration is large enough to measure
        results.append(r)
        if 0.7 <= r["estimate"] / r["measured"] <= 1.3:
            break
    assert 0.7 <= results[-1]["estimate"] / results[-1]["measured"] <= 1.3, results


def test_refusal_names_the_option_to_change():
    p = Plan(10 * 2**30, 0, {"gradient chunk (rows)": 9 * 2**30, "results": 2**30}, available_bytes=2**30)
    with pytest.raises(InputError, match="lower --chunk-size"):
        check_plan(p)
    p = Plan(10 * 2**30, 0, {"exact solver (p x p)": 10 * 2**30}, available_bytes=2**30)
    with pytest.raises(InputError, match="--solver cg"):
        check_plan(p)
    check_plan(Plan(2**20, 0, {"results": 2**20}, available_bytes=2**30))  # fits: no error


def test_plan_scales_with_chunk_and_store(small_mlp, digits_small):
    train, valid = digits_small
    a = plan(small_mlp, train, valid, "ip", chunk_size=16, grad_method="vmap")
    b = plan(small_mlp, train, valid, "ip", chunk_size=32, grad_method="vmap")
    assert b.terms["gradient chunk (rows)"] == 2 * a.terms["gradient chunk (rows)"]
    s = plan(small_mlp, train, valid, "ip", chunk_size=16, store="x")
    assert s.disk_bytes == len(train) * small_mlp.n_params() * 8 and a.disk_bytes == 0


def test_cli_plan_prints_the_estimate_and_writes_nothing(tmp_path, capsys):
    import pandas as pd

    from influent.cli import main

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(120, 4)), columns=list("abcd"))
    df["y"] = (df.a > 0).astype(int)
    df.to_csv(tmp_path / "d.csv", index=False)
    main(["plan", "--train", str(tmp_path / "d.csv"), "--valid", str(tmp_path / "d.csv"), "--label", "y",
          "--method", "if", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "peak memory (estimate)" in out and "exact solver (p x p)" in out
    assert not (tmp_path / "out").exists()


def test_cli_score_refuses_a_run_above_the_available_memory(tmp_path, capsys, monkeypatch):
    import pandas as pd

    import influent.backends.planner as planner
    from influent.cli import main

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(120, 4)), columns=list("abcd"))
    df["y"] = (df.a > 0).astype(int)
    df.to_csv(tmp_path / "d.csv", index=False)
    monkeypatch.setattr(planner, "available_memory", lambda: 1024)
    with pytest.raises(SystemExit) as exc:
        main(["score", "--train", str(tmp_path / "d.csv"), "--valid", str(tmp_path / "d.csv"), "--label", "y",
              "--method", "if", "--solver", "exact", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "available: lower --chunk-size" in err[-1]
    assert not (tmp_path / "out" / "scores.parquet").exists()
