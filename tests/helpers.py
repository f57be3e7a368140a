"""Small helpers shared by test modules (import them: ``from helpers import rel, one_thread, run_cli``)."""

import pytest
import torch


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error in the Euclidean norm, ||a - b|| / ||b||."""
    return float((a - b).norm() / b.norm())


def rel_max(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error in the largest entry, max|a - b| / max|b|."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny problems: one intra-op thread is faster, and immune to oversubscribed CPUs. Imported into a
    module, it applies to that module's tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(args, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``influent ARGS`` run in this process (arguments made strings)."""
    from influent.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def noisy_table(n: int, seed: int, label_noise: float = 0.5):
    """A (n, 6) DataFrame: five normal features f0..f4 and a binary label y = [f0 + label_noise * noise > 0]."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    df = pd.DataFrame(X, columns=[f"f{j}" for j in range(5)])
    df["y"] = (X[:, 0] + label_noise * rng.normal(size=n) > 0).astype(int)
    return df


def score_args(d, out, *extra) -> list:
    """``influent score`` arguments on folder `d`'s train.csv/valid.csv (label y, no removal curve) into `out`."""
    return ["score", "--train", d / "train.csv", "--valid", d / "valid.csv", "--label", "y", "--no-curve",
            "--out", out, *extra]


@pytest.fixture()
def run(files, tmp_path, capsys):
    """The folder of an ``influent score`` run on the importing module's `files` fixture (train/valid CSVs)."""
    out = tmp_path / "run"
    code, _, err = run_cli(score_args(files, out), capsys)
    assert code == 0, err
    return out
