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

SRC = str(Path(inf.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    env = {"PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p),
           "OMP_NUM_THREADS": "1"}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)
    ray.init(address=c.address, runtime_env={"env_vars": env}, log_to_driver=False)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def _kill_once(marker: str, chunk: int):
    def hook(ci: int) -> None:
        if ci == chunk and not os.path.exists(marker):
            Path(marker).write_text("killed")
            os._exit(1)  # the worker process dies mid-run
    return hook


def test_ray_scores_equal_local_scores_and_ran_on_both_nodes(cluster, small_mlp, digits_small, tmp_path):
    train, valid = digits_small
    cases = [("ip", {}), ("if", {"solver": "exact", "solver_options": {"curvature": "ggn"}, "damping": 0.01}),
             ("outlier", {"params": "all"})]
    for k, (method, opts) in enumerate(cases):
        target = None if method == "outlier" else valid
        local = inf.score(small_mlp, train, target, method=method, chunk_size=20, **opts)
        dist = inf.score(small_mlp, train, target, method=method, chunk_size=20, backend="ray",
                         store=tmp_path / f"s{k}", **opts)
        assert np.allclose(dist.values, local.values, rtol=1e-8, atol=1e-12 * np.abs(local.values).max()), method
        ran = dist.settings["backend"]
        assert ran["backend"] == "ray" and ran["chunks_computed"] == 8
        assert len(ran["nodes"]) == 2, ran  # work ran on both nodes
        assert "backend" not in local.settings
    A = inf.attribute(small_mlp, train, valid, method="ip", backend="ray", chunk_size=40)
    assert np.allclose(A, inf.attribute(small_mlp, train, valid, method="ip"), atol=1e-10)


def test_a_worker_killed_mid_run_is_restarted_with_unchanged_scores(cluster, small_mlp, digits_small, tmp_path):
    train, valid = digits_small
    marker = str(tmp_path / "killed")
    local = inf.score(small_mlp, train, valid, method="ip", chunk_size=20)
    dist = inf.score(small_mlp, train, valid, method="ip", chunk_size=20, backend="ray", store=tmp_path / "s",
                     backend_options={"on_chunk": _kill_once(marker, 3)})
    assert Path(marker).exists()  # a worker did die
    assert np.allclose(dist.values, local.values, rtol=1e-8, atol=1e-14)
    assert dist.settings["backend"]["chunks_computed"] == 8


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
              "--method", "ip", "--chunk-size", "20", "--no-curve", "--backend", backend, "--out", str(tmp_path / backend)])
        outs[backend] = pd.read_parquet(tmp_path / backend / "scores.parquet")
    capsys.readouterr()
    col = [c for c in outs["local"].columns if c not in ("id",)][0]
    assert np.allclose(outs["ray"][col], outs["local"][col], atol=1e-12)
