"""Backend choice without a cluster: a missing Ray is a one-line error naming the install command."""

import sys

import numpy as np

import pytest

import influent as inf
from influent.data.validate import InputError


def test_missing_ray_names_the_install_command(small_mlp, digits_small, monkeypatch):
    train, valid = digits_small
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(InputError, match=r'pip install "influent\[ray\]"'):
        inf.score(small_mlp, train, valid, method="ip", backend="ray")


def test_influent_import_does_not_import_ray():
    import subprocess

    code = "import influent, influent.api, influent.cli, sys; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_workers_kernel_modules_do_not_import_scikit_learn():
    """What a Ray worker imports to run the shard kernels of the gradient, curvature and last-layer products and
    the methods' own kernels and refit tasks (the cluster check imports `influent.grads.source`) leaves
    scikit-learn, SciPy's statistics and pandas unloaded: each costs every starting worker a second or more."""
    import subprocess

    code = ("import influent.grads.source, influent.curvature.last_layer, influent.curvature.kfac, "
            "influent.models.torch_adapter, influent.methods, sys; "
            "print(sorted(m for m in ('sklearn', 'scipy.stats', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_unknown_backend_exits_2_with_one_line(tmp_path, capsys):
    import numpy as np
    import pandas as pd

    from influent.cli import main

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    df["y"] = (df.a > 0).astype(int)
    df.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(SystemExit) as exc:
        main(["score", "--train", str(tmp_path / "d.csv"), "--valid", str(tmp_path / "d.csv"), "--label", "y",
              "--backend", "spark", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "unknown backend 'spark'" in err and len(err.splitlines()) == 1


def test_cli_ray_address_without_the_ray_backend_and_local_backend_options_are_one_line_errors(tmp_path, capsys,
                                                                                             small_mlp, digits_small):
    import numpy as np
    import pandas as pd

    from helpers import run_cli

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    df["y"] = (df.a > 0).astype(int)
    df.to_csv(tmp_path / "d.csv", index=False)
    code, _, err = run_cli(["score", "--train", tmp_path / "d.csv", "--valid", tmp_path / "d.csv", "--label", "y",
                            "--ray-address", "10.0.0.1:6379", "--out", tmp_path / "out"], capsys)
    assert code == 2 and "--ray-address needs --backend ray" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    train, valid = digits_small
    with pytest.raises(InputError, match="backend 'local' takes no backend_options"):
        inf.score(small_mlp, train, valid, method="ip", backend_options={"workers": 2})


def test_a_signal_raised_inside_rays_cython_code_reaches_the_caller_as_itself():
    """Ray's Cython wait reports an exception raised by a signal handler during the call as SystemError("...
    returned a result with an exception set") caused by it; the backend hands the caller the signal's own
    exception (the CLI then exits 130 / 143), and leaves other errors alone."""
    from influent.backends.ray import _signal_inside

    class Interrupted(BaseException):
        pass

    for inner in (KeyboardInterrupt(), Interrupted()):
        try:
            try:
                raise inner
            except BaseException as e:
                raise SystemError("<cyfunction CoreWorker.wait> returned a result with an exception set") from e
        except SystemError as exc:
            assert _signal_inside(exc) is inner
    try:
        try:
            raise ValueError("x")
        except ValueError as e:
            raise SystemError("other") from e
    except SystemError as exc:
        assert _signal_inside(exc) is None
    assert _signal_inside(KeyboardInterrupt()) is None


class _InProcessShards:
    """The Ray backend's cut of the training split (`backends.ray.shard_bounds`) run in this process."""

    name = "ray"

    def __init__(self, split, chunk_size, k=3):
        from influent.backends.ray import shard_bounds

        self.split, self.bounds = split, shard_bounds(len(split), k, chunk_size)

    def shards(self, split):
        return split is self.split

    def map_shards(self, kernel, adapter, split, payload, progress=None):
        return [kernel(adapter, split.subset(np.arange(a, b)), payload) for a, b in zip(self.bounds[:-1], self.bounds[1:])]

    def map_tasks(self, fn, items, *shared, progress=None):
        return [fn(it, *shared) for it in items]

    def describe(self):
        return {"backend": "in-process shards"}


def test_shard_bounds_are_multiples_of_the_chunk_and_cover_every_row():
    from influent.backends.ray import shard_bounds

    for n, k, align in [(20_000, 3, 512), (1200, 3, 64), (160, 4, 20), (40, 3, 512), (7, 5, 1), (1000, 3, 1)]:
        b = shard_bounds(n, k, align)
        assert b[0] == 0 and b[-1] == n and (np.diff(b) > 0).all() and len(b) - 1 <= k
        assert (b[1:-1] % align == 0).all()
        assert np.diff(b).max() - np.diff(b).min() <= align + 1 or len(b) == 2  # as equal as the chunk allows


def test_shards_cut_at_chunk_multiples_give_the_local_bits_in_float32(monkeypatch):
    """A float32 MLP: methods whose per-sample work is batched (the last layer's features, Hessian sums and
    leverage forms, gradient products, Diff-In's terms) score the same to the bit on shards cut by the Ray
    backend's rule as in one process. (On benchmarks/ray.py's 20,000-row MLP, run as a script, shards cut at
    6,667 / 13,333 rows gave GEX 1.8e-6 and Diff-In 1.1e-5 relative differences; this small case shows none
    with either cut, so it guards the rule's bit-for-bit promise, not the old cut's error.)"""
    import torch
    from sklearn.datasets import load_digits

    import influent.backends as backends

    monkeypatch.setattr(backends, "executor_for", lambda backend, split, options=None, chunk_size=None:
                        _InProcessShards(split, chunk_size))

    def same(model, train, valid, methods, chunk_size):
        for method in methods:
            target = valid if inf.methods.METHODS[method].needs_target else None
            local = inf.score(model, train, target, method=method, chunk_size=chunk_size).values
            sharded = inf.score(model, train, target, method=method, chunk_size=chunk_size, backend="ray").values
            assert np.array_equal(np.nan_to_num(sharded), np.nan_to_num(local)), method

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    train, valid = inf.from_arrays(X[:1200], y[:1200]), inf.from_arrays(X[1200:1500], y[1200:1500])
    torch.manual_seed(0)
    model = inf.models.TabularMLP(hidden=(32,), train=inf.models.TrainConfig(epochs=3, batch_size=64)).fit(
        train, recorder=inf.models.TrainingRecorder(every=5))
    same(model, train, valid, ("mislabel", "ip", "tracin", "diffin"), 64)
