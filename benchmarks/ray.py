"""The Ray backend against the local backend, on a cluster started the way an operator does: ``ray start --head``
plus ``ray start --address`` per extra node (one CPU each, each in its own process group with its own
``--temp-dir``, a private HOME for the cluster and the driver), the driver attached with ``--ray-address``.

Cases (`--cases`, comma-separated):
- ``ip1m``: IP validation scores of 1,000,000 memory-mapped rows (benchmarks/scale.py's linear softmax model,
  256 features, 10 classes, float32): local vs Ray, the bytes that crossed the object store, gradient bytes
  among them; the direct factorised computation in the same run (the local backend's reference).
- ``mlp``: an MLP (20,000 x 64, hidden 256, float32): 13 methods (`MLP_METHODS`: every distributing method
  but the four too slow at this size) on the local backend (one thread) and on Ray with `--nodes` one-CPU
  nodes; ratio local / Ray per method, max relative difference.
- ``long``: a job of a minute or more locally (EK-FAC self-influence of a wider MLP), local vs Ray on two
  one-CPU nodes.
- ``fault``: the ``long`` job with a worker node SIGKILLed a few seconds in: identical scores, time against the
  fault-free run.
- ``head``: ``influent score --backend ray --ray-address`` as a subprocess, the head node killed mid-run: the exit
  status, the lines on stderr, what is left in --out.
- ``signals``: the same run interrupted by SIGINT, then by SIGTERM: exit status (130, 143), stderr lines, --out.

Timings are single-threaded per process (``OMP_NUM_THREADS=1``; each Ray task pins one thread). This machine
has 2 cores: three one-CPU nodes oversubscribe it, so the three-node figure measures overhead, not speed-up.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/ray.py [--cases ip1m,mlp,long,fault,head,signals] [--nodes 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # this file's name would shadow the ray package
import influent as inf  # noqa: E402
from influent.methods import METHODS  # noqa: E402


def _scale():
    """benchmarks/scale.py (its data and direct computation), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("scale_benchmark", HERE / "scale.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorCluster:
    """``ray start --head`` and ``ray start --address`` processes (``--block``, one process group each) under a
    private HOME; `kill_node` SIGKILLs one node's whole group; `close` ends exactly the processes it started."""

    def __init__(self, root: Path, nodes: int, object_store_mb: int = 2048) -> None:
        self.root, self.home = root, root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "HOME": str(self.home), "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.procs: list[subprocess.Popen] = []
        mem = str(object_store_mb * 2**20)
        try:
            self._launch(nodes, mem)
        except BaseException:
            self.close()  # a node that failed to join: end what was started
            raise

    def _launch(self, nodes: int, mem: str) -> None:
        root = self.root
        self._start(["start", "--head", f"--port={self.port}", "--num-cpus=1", f"--object-store-memory={mem}",
                     f"--temp-dir={root / 'head'}", "--include-dashboard=false", "--block"])
        self._wait(1)
        for k in range(1, nodes):  # one at a time: a loaded machine times out nodes that start together
            self._start(["start", f"--address={self.address}", "--num-cpus=1", f"--object-store-memory={mem}",
                         "--block"])
            self._wait(k + 1)

    def _start(self, args: list[str]) -> None:
        log = open(self.root / f"node{len(self.procs)}.log", "w")
        self.procs.append(subprocess.Popen([RAY, *args], env=self.env, stdout=log, stderr=log, start_new_session=True))

    def _wait(self, nodes: int, timeout: float = 120) -> None:
        code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR'); "
                "print(sum(n['Alive'] for n in ray.nodes()))")
        t0 = time.time()
        while time.time() - t0 < timeout:
            r = subprocess.run([sys.executable, "-c", code, self.address], env=self.env, capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip().splitlines() and int(r.stdout.strip().splitlines()[-1]) >= nodes:
                return
            time.sleep(1)
        raise RuntimeError(f"the cluster did not reach {nodes} nodes")

    def kill_node(self, k: int) -> None:
        os.killpg(self.procs[k].pid, signal.SIGKILL)

    def close(self) -> None:
        """SIGTERM the `ray start` process groups, then SIGKILL whatever still runs from this cluster's folders
        (Ray's daemons leave the process group; every one names the cluster's temp dir in its command line)."""
        for p in reversed(self.procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        left = subprocess.run(["pgrep", "-f", str(self.root)], capture_output=True, text=True).stdout.split()
        for pid in left:
            if int(pid) != os.getpid():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def connect(cluster: OperatorCluster) -> None:
    """Attach this driver to the cluster (the private HOME holds the cluster's token)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    os.environ["HOME"] = str(cluster.home)
    from influent.backends.ray import connect as attach

    attach(cluster.address)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.nan_to_num(np.asarray(a, float)), np.nan_to_num(np.asarray(b, float))
    return float(np.abs(a - b).max() / max(1e-300, np.abs(a).max()))


def case_ip1m(cluster: OperatorCluster, tmp: Path, n: int) -> list[dict]:
    scale = _scale()
    d, K = 256, 10
    X, y, lin, model, train, valid = scale.linear_problem(tmp / "X.npy", n, d, K)
    direct_ip = scale.direct_ip
    target = inf.targets.Utility(valid)
    target.prepare(model)
    v = target.grad(model)
    vW, vb = v[:d * K].reshape(K, d), v[d * K:]
    direct_ip(lin, X, y, vW, vb, 65536)  # pages the file in
    t_direct, t_local = [], []
    for _ in range(3):  # interleaved repeats: the machine's load moves single timings by +-20%
        ref, t = timed(lambda: direct_ip(lin, X, y, vW, vb, 65536))
        t_direct.append(t)
        local, t = timed(lambda: inf.score(model, train, valid, method="ip", chunk_size=65536))
        t_local.append(t)
    connect(cluster)
    rows = [{"case": "ip1m", "run": "direct factorised (best of 3)", "seconds": min(t_direct), "rel diff": 0.0},
            {"case": "ip1m", "run": "local (best of 3)", "seconds": min(t_local), "rel diff": rel(ref, local.values),
             "vs direct": min(t_local) / min(t_direct)}]
    for k in range(4):  # the first call puts the shards and starts the workers; later calls reuse both
        dist, t = timed(lambda: inf.score(model, train, valid, method="ip", chunk_size=65536, backend="ray"))
        b = dist.settings["backend"]
        rows.append({"case": "ip1m", "run": f"ray call {k + 1}", "seconds": t, "rel diff": rel(local.values, dist.values),
                     "vs local": t / min(t_local), "MiB sent": b["bytes_sent"] / 2**20,
                     "MiB returned": b["bytes_returned"] / 2**20, "gradient MiB": b["gradient_bytes"] / 2**20,
                     "nodes": len(b["nodes"])})
    return rows


def mlp_problem(n: int, d: int, hidden: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, 10)) / np.sqrt(d)
    X = rng.normal(size=(n + 1000, d)).astype(np.float32)
    y = (X @ W + rng.gumbel(size=(n + 1000, 10))).argmax(1)
    train, valid = inf.from_arrays(X[:n], y[:n]), inf.from_arrays(X[n:], y[n:])
    torch.manual_seed(seed)
    model = inf.models.TabularMLP(hidden=(hidden,), train=inf.models.TrainConfig(epochs=3, batch_size=256))
    return model.fit(train, recorder=inf.models.TrainingRecorder(every=2)), train, valid


MLP_METHODS = [("ip", {}), ("if", {}), ("self-if", {}), ("self-tracin", {}), ("tracin", {}), ("ip-ensemble", {}),
               ("mislabel", {}), ("outlier", {"detector": "l2"}), ("iv", {"solver": "kfac"}), ("gex", {}),
               ("self-gex", {}), ("label-quality", {}), ("diffin", {})]
# Left out of the job: fi (exact per-sample local influence: over 9 minutes locally at this size), self-diffin
# (407 s locally), loo and tmc-shapley (a refit per sample or permutation), fi-paired and unrolled (local-only).


def fresh() -> None:
    """Forget label-quality's cached cross-validated probabilities (kept for the same model and data), so that
    every timed call computes them."""
    from influent.methods import label_quality

    label_quality._CACHE.clear()


def case_mlp(cluster: OperatorCluster, n: int) -> list[dict]:
    model, train, valid = mlp_problem(n, 64, 256)
    rows = []
    local = {}
    for m, o in MLP_METHODS:
        tgt = valid if METHODS[m].needs_target else None
        fresh()
        local[m] = timed(lambda: inf.score(model, train, tgt, method=m, **o))
    connect(cluster)
    for m, o in MLP_METHODS:
        tgt = valid if METHODS[m].needs_target else None
        fresh()
        dist, t = timed(lambda: inf.score(model, train, tgt, method=m, backend="ray", **o))
        b = dist.settings["backend"]
        rows.append({"case": f"mlp {n:,} x 64, {len(cluster.procs)} nodes", "run": m, "local s": local[m][1],
                     "ray s": t, "local / ray": local[m][1] / t, "rel diff": rel(local[m][0].values, dist.values),
                     "MiB returned": b["bytes_returned"] / 2**20, "gradient MiB": b["gradient_bytes"] / 2**20,
                     "tasks": b["tasks"], "task s": b["task_seconds"], "nodes": len(b["nodes"])})
    rows.append({"case": rows[0]["case"], "run": "all methods", "local s": sum(r["local s"] for r in rows),
                 "ray s": sum(r["ray s"] for r in rows), "task s": sum(r["task s"] for r in rows)})
    rows[-1]["local / ray"] = rows[-1]["local s"] / rows[-1]["ray s"]
    return rows


def long_job(n: int):
    model, train, _ = mlp_problem(n, 128, 512, seed=1)
    return lambda **kw: inf.score(model, train, None, method="self-if", chunk_size=256, **kw)


def case_long(cluster: OperatorCluster, n: int) -> tuple[list[dict], float, np.ndarray]:
    job = long_job(n)
    local, t_local = timed(job)
    connect(cluster)
    dist, t_ray = timed(lambda: job(backend="ray"))
    return ([{"case": f"long (self-if, EK-FAC, {n:,} x 128, hidden 512)", "run": f"{len(cluster.procs)} nodes",
              "local s": t_local, "ray s": t_ray, "local / ray": t_local / t_ray,
              "rel diff": rel(local.values, dist.values), "tasks": dist.settings["backend"]["tasks"],
              "task s": dist.settings["backend"]["task_seconds"]}], t_ray, dist.values)


def case_fault(cluster: OperatorCluster, n: int, t_free: float, free_values: np.ndarray) -> list[dict]:
    import threading

    job = long_job(n)
    connect(cluster)
    threading.Timer(max(2.0, 0.3 * t_free), lambda: cluster.kill_node(len(cluster.procs) - 1)).start()
    dist, t = timed(lambda: job(backend="ray", backend_options={"task_timeout": 60}))
    b = dist.settings["backend"]
    return [{"case": "fault: a worker node SIGKILLed mid-run", "run": "long job", "ray s": t,
             "vs fault-free": t / t_free, "rel diff": rel(free_values, dist.values), "resubmitted": b["resubmitted"]}]


def _cli_run(cluster: OperatorCluster, tmp: Path, out: Path, act) -> tuple[int, str, float]:
    """``influent score --backend ray --ray-address`` (an MLP, IF with CG: many rounds of shard tasks) as a
    subprocess; `act(process)` once a worker runs a shard kernel. Returns (exit status, stderr, seconds from
    the act to the exit)."""
    import threading

    rng = np.random.default_rng(0)
    X = rng.normal(size=(12_000, 16))
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(16)])
    df["y"] = (X[:, 0] + rng.normal(size=len(X)) > 0).astype(int)
    df.iloc[:10_000].to_csv(tmp / "train.csv", index=False)
    df.iloc[10_000:].to_csv(tmp / "valid.csv", index=False)
    env = {**cluster.env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [str(Path(sys.executable).with_name("influent")), "score", "--train", str(tmp / "train.csv"), "--valid",
           str(tmp / "valid.csv"), "--label", "y", "--model", "mlp", "--method", "if", "--solver", "cg", "--damping", "1",
           "-o", 'solver_options={"tol": 1e-300, "max_iter": 2000}', "--backend", "ray",
           "--ray-address", cluster.address, "--epochs", "5", "--no-curve", "--out", str(out)]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(p.stderr), daemon=True)
    reader.start()
    t0 = time.time()
    while time.time() - t0 < 300 and p.poll() is None:  # until a worker runs a shard kernel: the scoring began
        if subprocess.run(["pgrep", "-f", "ray::_run"], capture_output=True).returncode == 0:
            break
        time.sleep(0.2)
    time.sleep(2)
    acted = time.time()
    act(p)
    try:
        p.wait(timeout=300)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    reader.join(5)
    return p.returncode, "".join(err_lines), time.time() - acted


def _row(case: str, code: int, err: str, seconds: float, out: Path) -> dict:
    lines = [x for x in err.splitlines() if x.strip()]
    return {"case": case, "run": "exit status", "value": code, "seconds to exit": seconds,
            "stderr lines": len(lines), "last line": (lines or [""])[-1][:120],
            "left in --out": sorted(x.name for x in out.iterdir()) if out.exists() else []}


def case_head(cluster: OperatorCluster, tmp: Path) -> list[dict]:
    out = tmp / "out-head"
    code, err, seconds = _cli_run(cluster, tmp, out, lambda p: cluster.kill_node(0))
    return [_row("head node SIGKILLed mid-run (CLI)", code, err, seconds, out)]


def case_signals(cluster: OperatorCluster, tmp: Path) -> list[dict]:
    rows = []
    for sig, name in ((signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")):
        out = tmp / f"out-{name}"
        code, err, seconds = _cli_run(cluster, tmp, out, lambda p, sig=sig: p.send_signal(sig))
        rows.append(_row(f"{name} mid-run (CLI)", code, err, seconds, out))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="ip1m,mlp,long,fault,head,signals")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--mlp-n", type=int, default=20_000)
    ap.add_argument("--long-n", type=int, default=60_000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cases = args.cases.split(",")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in cases:
            nodes = 2 if case in ("long", "fault") else args.nodes
            cluster = OperatorCluster(tmp / f"cluster-{case}", nodes)
            try:
                if case == "ip1m":
                    rows += case_ip1m(cluster, tmp, args.n)
                elif case == "mlp":
                    rows += case_mlp(cluster, args.mlp_n)
                elif case == "long":
                    got, t_free, free_values = case_long(cluster, args.long_n)
                    rows += got
                elif case == "fault":
                    if "long" not in cases:
                        _, t_free, free_values = case_long(cluster, args.long_n)
                    rows += case_fault(cluster, args.long_n, t_free, free_values)
                elif case == "head":
                    rows += case_head(cluster, tmp)
                elif case == "signals":
                    rows += case_signals(cluster, tmp)
            finally:
                import ray

                ray.shutdown()
                cluster.close()
            print(pd.DataFrame(rows).to_string(index=False), flush=True)
    with pd.option_context("display.width", 250, "display.float_format", "{:,.4g}".format):
        print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
