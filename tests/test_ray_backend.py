"""The Ray backend on a two-node `ray.cluster_utils.Cluster` (one CPU each) on this machine: the same scores
as the local backend, work on both nodes, and a worker killed mid-run changes nothing."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import influent as inf
from influent.data.validate import InputError

ray = pytest.importorskip("ray", reason='the Ray backend tests need Ray: pip install "influent[ray]"')
import sys  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this module's kernels travel by value

SRC = str(Path(inf.__file__).resolve().parents[1])
PATH = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    env = {"PYTHONPATH": PATH, "OMP_NUM_THREADS": "1"}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    ray.init(address=c.address, runtime_env={"env_vars": env}, log_to_driver=False)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def test_ray_scores_equal_local_scores_and_ran_on_both_nodes(cluster, small_mlp, digits_small, monkeypatch):
    """Every distributing method family: shard products (ip, if, self-if, self-tracin), gathered gradients
    (outlier), refit tasks (loo), the last layer's Hessian sums and leverage blocks (mislabel, its rounds with
    exact and with stale leverages); the same values as the local backend, work on both nodes, and only the
    gathered-gradient method brings per-sample gradients to the driver."""
    train, valid = digits_small
    cases = [("ip", {}), ("if", {"solver": "exact", "solver_options": {"curvature": "ggn"}, "damping": 0.01}),
             ("self-if", {"solver": "exact", "solver_options": {"curvature": "ggn"}, "damping": 0.01}),
             ("self-tracin", {}), ("outlier", {"params": "all"}), ("loo", {"subset": [0, 5, 9, 20]}),
             ("mislabel", {"precision": "float64", "refresh": 1, "check_rounds": False}),
             ("mislabel", {"precision": "float64", "refresh": 3, "check_rounds": False})]
    y = np.asarray(train.y).copy()
    y[:40] = (y[:40] + 1) % 4  # 40 of 160 labels moved: the rounds' first Hessian update is a shard sum
    noisy = inf.from_arrays(np.asarray(train.X), y)
    from influent.curvature import last_layer

    maps, shard_map = [], last_layer.Shards.map
    monkeypatch.setattr(last_layer.Shards, "map", lambda self, mode, rest=(): maps.append(
        mode if mode != "hessian" else ("update" if rest[0][0] == 0 else "build")) or shard_map(self, mode, rest))
    for method, opts in cases:
        target = None if method in ("outlier", "self-if", "self-tracin", "mislabel") else valid
        data = noisy if method == "mislabel" else train
        local = inf.score(small_mlp, data, target, method=method, chunk_size=20, **opts)
        dist = inf.score(small_mlp, data, target, method=method, chunk_size=20, backend="ray",
                         backend_options={"shards": 4}, **opts)
        a, b = np.nan_to_num(local.values), np.nan_to_num(dist.values)
        assert np.allclose(b, a, rtol=1e-8, atol=1e-10 * np.abs(a).max()), method
        ran = dist.settings["backend"]
        assert ran["backend"] == "ray" and ran["tasks"] >= 4, (method, ran)
        assert len(ran["nodes"]) == 2, (method, ran)  # work ran on both nodes
        assert (ran["gradient_bytes"] > 0) == (method == "outlier"), (method, ran)
        assert "backend" not in local.settings
    assert {"features", "build", "update", "leverage"} <= set(maps), maps  # mislabel's products ran on the shards
    A = inf.attribute(small_mlp, train, valid, method="ip", backend="ray", chunk_size=40)
    assert np.allclose(A, inf.attribute(small_mlp, train, valid, method="ip"), atol=1e-10)


def _slow_kernel(adapter, shard, payload):
    """A shard kernel that takes `payload` seconds; the shard's first labels as the result."""
    import time

    time.sleep(payload)
    return np.asarray(shard.y[:2], dtype=np.float64)


def test_a_node_lost_mid_run_changes_nothing(small_mlp, digits_small):
    """A worker node removed while its tasks run: Ray retries them on the other node; the results are complete
    and in order."""
    import threading

    from ray.cluster_utils import Cluster

    from influent.backends.ray import RayExecutor

    train, _ = digits_small
    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    node = c.add_node(num_cpus=1)
    env = {"PYTHONPATH": PATH}
    try:
        ray.init(address=c.address, runtime_env={"env_vars": env}, log_to_driver=False)
        c.wait_for_nodes()
        ex = RayExecutor(train, shards=8, task_timeout=60)
        ex._start()  # the cluster check done: the node goes while the kernels run
        timer = threading.Timer(2.5, lambda: c.remove_node(node, allow_graceful=False))
        timer.start()
        out = ex.map_shards(_slow_kernel, small_mlp, train, 1.0)
        timer.join()
        want = [np.asarray(train.y[a:a + 2], dtype=np.float64) for a in ex.bounds[:-1]]
        assert all(np.array_equal(o, w) for o, w in zip(out, want))
        assert len(ex.describe()["nodes"]) >= 1
    finally:
        timer.cancel() if "timer" in locals() else None
        ray.shutdown()
        c.shutdown()


def _hang_once(adapter, shard, marker):
    """Hangs (as a stuck worker would) the first time it runs anywhere, then returns at once."""
    import time

    try:  # atomic: of tasks that start together, exactly one hangs
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        pass
    else:
        time.sleep(600)
    return np.asarray([len(shard)], dtype=np.float64)


def test_a_stuck_task_is_submitted_again_after_the_timeout(cluster, small_mlp, digits_small, tmp_path):
    from influent.backends.ray import RayExecutor

    train, _ = digits_small
    ex = RayExecutor(train, shards=2, task_timeout=4, retries=25)  # rounds enough for workers to start under load
    out = ex.map_shards(_hang_once, small_mlp, train, str(tmp_path / "stuck"))
    assert [int(o[0]) for o in out] == [80, 80]
    assert ex.describe()["resubmitted"] >= 1


def _sleep_by_shard(adapter, shard, seconds):
    """Sleeps seconds[0] on the shard that starts at row 0, seconds[1] on the other."""
    import time

    time.sleep(seconds[0] if shard.ids[0] == 0 else seconds[1])
    return np.asarray([len(shard)], dtype=np.float64)


def test_a_task_longer_than_the_timeout_is_not_taken_for_stuck_once_others_show_the_pace(cluster, small_mlp,
                                                                                       digits_small):
    """Tasks grow with their shard: after a 3 s task has finished, a 7.5 s one is within twice the longest
    (the patience), although the timeout is 2 s and only one resubmission round is allowed."""
    from influent.backends.ray import RayExecutor

    train, _ = digits_small
    RayExecutor(train, shards=2).map_shards(_sleep_by_shard, small_mlp, train, (0.0, 0.0))  # both workers up
    ex = RayExecutor(train, shards=2, task_timeout=2, retries=1)
    out = ex.map_shards(_sleep_by_shard, small_mlp, train, (3.0, 7.5))
    assert [int(o[0]) for o in out] == [80, 80]


def _refuse(adapter, shard, payload):
    raise InputError("a kernel's own one-line error")


def test_a_kernels_input_error_arrives_as_itself(cluster, small_mlp, digits_small):
    from influent.backends.ray import RayExecutor

    train, _ = digits_small
    with pytest.raises(InputError, match="a kernel's own one-line error"):
        RayExecutor(train, shards=2).map_shards(_refuse, small_mlp, train, None)


def test_methods_that_cannot_distribute_refuse_ray_in_one_line(small_mlp, digits_small, tmp_path):
    from influent.methods import METHODS

    train, valid = digits_small
    local_only = METHODS.names(lambda s: bool(s.local_only))
    assert local_only  # the declaration is read, not a list kept here
    for name in local_only:
        with pytest.raises(InputError, match=f"method {name!r} cannot run on backend 'ray'"):
            inf.score(small_mlp, train, valid, method=name, backend="ray")
    with pytest.raises(InputError, match="cannot run on a distributed backend"):  # FI's seeded variants
        inf.score(small_mlp, train, valid, method="fi", backend="ray", subsample=0.5)
    with pytest.raises(InputError, match="store is a gradient cache"):
        inf.score(small_mlp, train, valid, method="ip", backend="ray", store=tmp_path / "s")
    with pytest.raises(InputError, match=r"unknown \['worker'\]"):
        inf.score(small_mlp, train, valid, method="ip", backend="ray", backend_options={"worker": 2})


def test_every_method_that_distributes_equals_the_local_backend(cluster):
    """The conformance suite's backend check (`evaluation.conformance.check_backend`) with "ray", over every
    registered method that does not declare itself local-only (`MethodSpec.local_only`), on its tiny problem."""
    from test_conformance import case_of

    from influent.evaluation import conformance as conf
    from influent.methods import METHODS

    problem = conf.make_problem()
    names = METHODS.names(lambda s: not s.local_only)
    assert len(names) >= 12
    for name in names:
        conf.check_backend(problem, name, case_of(name), "ray", {"shards": 3})


def test_unknown_backend_is_a_one_line_error(small_mlp, digits_small):
    train, valid = digits_small
    with pytest.raises(InputError, match="unknown backend 'spark'"):
        inf.score(small_mlp, train, valid, method="ip", backend="spark")


def test_cli_backend_ray_writes_the_local_scores(cluster, tmp_path, capsys):
    import pandas as pd

    from influent.cli import main

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(120, 4)), columns=list("abcd"))
    df["y"] = (df.a + 0.5 * rng.normal(size=120) > 0).astype(int)
    df.iloc[:80].to_csv(tmp_path / "train.csv", index=False)
    df.iloc[80:].to_csv(tmp_path / "valid.csv", index=False)
    outs = {}
    for backend in ("local", "ray"):
        main(["score", "--train", str(tmp_path / "train.csv"), "--valid", str(tmp_path / "valid.csv"), "--label", "y",
              "--method", "ip", "--chunk-size", "20", "--backend", backend, "--out", str(tmp_path / backend)])
        outs[backend] = pd.read_parquet(tmp_path / backend / "scores.parquet")
    capsys.readouterr()
    col = [c for c in outs["local"].columns if c not in ("id",)][0]
    assert np.allclose(outs["ray"][col], outs["local"][col], atol=1e-12)


def test_starting_ray_keeps_the_callers_sigterm_handler_and_an_unreachable_address_is_one_line(tmp_path):
    """ray.init installs its own SIGTERM handler (exit 15); the CLI's (exit 143) must survive it. A cluster
    address that accepts no connection is a `ClusterError` at once, not minutes of Ray's retries."""
    import subprocess
    import sys

    code = ("import signal, influent.backends.ray as r\n"
            "h = lambda *a: None\n"
            "signal.signal(signal.SIGTERM, h)\n"
            "try:\n"
            "    r.connect('127.0.0.1:1')\n"
            "except r.ClusterError as e:\n"
            "    print('refused:', e)\n"
            "r.connect()\n"
            "print('kept', signal.getsignal(signal.SIGTERM) is h)\n")
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": PATH, "RAY_ADDRESS": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300).stdout
    assert "refused: cannot reach the Ray cluster at '127.0.0.1:1'" in out
    assert "kept True" in out
