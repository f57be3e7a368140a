"""Backend choice without a cluster: a missing Ray is a one-line error naming the install command."""

import sys

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
    """What a Ray worker imports to run the shard kernels of the gradient, curvature and last-layer products
    (the cluster check imports `influent.grads.source`) leaves scikit-learn, SciPy's statistics and pandas
    unloaded: each costs every starting worker a second or more."""
    import subprocess

    code = ("import influent.grads.source, influent.curvature.last_layer, influent.curvature.kfac, "
            "influent.models.torch_adapter, sys; "
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
