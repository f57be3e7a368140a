"""Every mistake a user can make is a one-line `InputError` naming the problem, in every layer.

Each row is a user mistake (a bad argument, option, file, model or data), the call that makes it, and the
key words the message must contain. The check is the same for all: the error is an `InputError` (not a
plain ValueError/RuntimeError from deep inside torch or numpy), its message is one line, and it names the
problem.
"""

import numpy as np
import pytest
import torch
from torch import nn

import influent as inf
from influent.actions import ActiveLearner, trim
from influent.cli import main
from influent.curvature import CurvatureContext
from influent.data.scores import Scores
from influent.data.registry import UnknownName
from influent.data.validate import InputError
from influent.evaluation.attribution import lds_ground_truth
from influent.evaluation.defense import attack
from influent.evaluation.noisy import flip_labels
from influent.grads.per_sample import per_sample_grads
from influent.grads.source import GradientSource
from influent.grads.store import GradientStore
from influent.models import SklearnLogistic, TorchAdapter, TrainConfig
from influent.models.refit import random_subsets


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    y = (X[:, 0] + 0.3 * rng.standard_normal(60) > 0).astype(int)
    train, valid = inf.from_arrays(X[:40], y[:40]), inf.from_arrays(X[40:], y[40:])
    other = inf.from_arrays(X[40:, :3], y[40:])  # one feature fewer than the model was trained on
    logistic = SklearnLogistic().fit(train)
    torch.manual_seed(0)
    normed = TorchAdapter(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Tanh(), nn.Linear(3, 2)),
                          dtype=torch.float64, train=TrainConfig(epochs=5)).fit(train)
    return dict(train=train, valid=valid, other=other, logistic=logistic, normed=normed)


def _scores(d):
    return inf.score(d["logistic"], d["train"], d["valid"], "ip")


def _grouped_conv(d):
    torch.manual_seed(0)
    X = np.random.default_rng(1).standard_normal((12, 2, 5, 5))
    split = inf.from_arrays(X, np.arange(12) % 2)
    net = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(18, 2))
    model = TorchAdapter(net, dtype=torch.float64, train=TrainConfig(epochs=2)).fit(split)
    return inf.score(model, split, split, "if", solver="kfac")


def _cli(tmp_path, capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    raise InputError(err.strip().removeprefix("error: "))  # the one line the user sees, checked like the rest


def _csv(d, tmp_path):
    """train.csv and valid.csv of the module's data in `tmp_path`; their paths."""
    import pandas as pd

    paths = []
    for name in ("train", "valid"):
        frame = pd.DataFrame(d[name].X, columns=[f"f{j}" for j in range(4)]).assign(y=d[name].y)
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        paths.append(tmp_path / f"{name}.csv")
    return paths


def _bad_priorities(model, labeled, pool, rng):
    return np.zeros(len(pool) + 1)


MISTAKES = [
    # models
    ("unfitted model", lambda d, t, c: inf.score(SklearnLogistic(), d["train"], d["valid"]),
     ["SklearnLogistic", "not fitted", ".fit(train)"]),
    ("bad optimizer name", lambda d, t, c: TrainConfig(optimizer="rmsprop"), ["optimizer", "'rmsprop'", "adam", "sgd"]),
    ("negative learning rate", lambda d, t, c: TrainConfig(lr=-0.1), ["lr", "-0.1"]),
    ("negative C", lambda d, t, c: SklearnLogistic(C=-1.0), ["C must be", "-1.0"]),
    ("validation data that is not a split", lambda d, t, c: inf.score(d["logistic"], d["train"], "valid.csv", "if"),
     ["target must be", "Split", "str"]),
    ("test data that is not a split", lambda d, t, c: inf.attribute(d["logistic"], d["train"], d["valid"].X, "ip"),
     ["test must be", "Split", "ndarray"]),
    ("seed as text", lambda d, t, c: inf.score(d["logistic"], d["train"], d["valid"], "ip", seed="zero"),
     ["seed", "'zero'"]),
    ("valid split with another feature count", lambda d, t, c: inf.score(d["logistic"], d["train"], d["other"], "if"),
     ["features has shape (20, 3), expected (any, 4)"]),
    ("test split with another feature count", lambda d, t, c: inf.attribute(d["logistic"], d["train"], d["other"], "ip"),
     ["features has shape (20, 3), expected (any, 4)"]),
    ("torch model on another feature count", lambda d, t, c: inf.attribute(d["normed"], d["train"], d["other"], "ip"),
     ["cannot take features of shape (3,)", "1x3 and 4x3"]),
    ("model dtype as text", lambda d, t, c: TorchAdapter(nn.Linear(4, 2), dtype="float64"), ["dtype", "'float64'"]),
    ("MLP with a hidden layer of 0 units", lambda d, t, c: inf.models.TabularMLP(hidden=(8, 0)),
     ["hidden layer size", "got 0"]),
    ("empty refit subset size", lambda d, t, c: random_subsets(10, 0, 3), ["subset size", "[1, 10]", "got 0"]),
    # grads
    ("bad grad_method", lambda d, t, c: inf.score(d["logistic"], d["train"], d["valid"], "ip", grad_method="fast"),
     ["grad_method", "'fast'", "vmap"]),
    ("bad per-sample gradient path", lambda d, t, c: per_sample_grads(d["logistic"], *d["logistic"].tensors(d["train"]),
                                                                      method="jit"), ["grad_method", "'jit'"]),
    ("factorised path on a LayerNorm", lambda d, t, c: GradientSource(d["normed"], d["train"], method="factorised"),
     ["factorised", "nn.Linear"]),
    ("negative chunk_size", lambda d, t, c: inf.score(d["logistic"], d["train"], d["valid"], "ip", chunk_size=-4),
     ["chunk_size", "-4"]),
    ("bad projection kind", lambda d, t, c: inf.score(d["logistic"], d["train"], d["valid"], "ip",
                                                      projection={"kind": "fourier", "dim": 8}), ["projection kind", "'fourier'"]),
    ("bad projection dim", lambda d, t, c: inf.score(d["logistic"], d["train"], d["valid"], "ip", projection={"dim": 0}),
     ["projection dim", "positive"]),
    ("projection nnz above its dim", lambda d, t, c: inf.score(d["logistic"], d["train"], d["valid"], "ip",
                                                               projection={"dim": 4, "nnz": 9}), ["projection nnz", "[1, 4]", "9"]),
    ("gradient store of other settings", lambda d, t, c: (GradientStore(t, "k", 10, 3, 5), GradientStore(t, "k", 10, 4, 5)),
     ["gradient store", "other settings"]),
    # backends
    ("unknown backend", lambda d, t, c: inf.score(d["logistic"], d["train"], d["valid"], "ip", backend="spark"),
     ["backend", "'spark'"]),
    ("backend with 0 workers", lambda d, t, c: inf.score(d["logistic"], d["train"], d["valid"], "ip", backend="ray",
                                                         backend_options={"workers": 0}), ["workers", "got 0"]),
    ("unknown backend option", lambda d, t, c: inf.score(d["logistic"], d["train"], d["valid"], "ip", backend="ray",
                                                         backend_options={"cpus": 2}), ["backend_options", "cpus"]),
    # curvature
    ("exact solver on a model too large for it", lambda d, t, c: inf.score(
        d["logistic"], d["train"], d["valid"], "if", solver="exact", solver_options={"max_params": 2}),
     ["exact solver", "max_params=2"]),
    ("K-FAC on a LayerNorm", lambda d, t, c: inf.score(d["normed"], d["train"], d["valid"], "if", solver="kfac"),
     ["kfac", "'1.weight'", "nn.Linear or nn.Conv2d"]),
    ("K-FAC on a grouped convolution", lambda d, t, c: _grouped_conv(d), ["kfac", "groups=2"]),
    ("exact solver with an unknown curvature", lambda d, t, c: inf.score(
        d["logistic"], d["train"], d["valid"], "if", solver="exact", solver_options={"curvature": "fisher"}),
     ["curvature", "'fisher'", "ggn"]),
    ("exact solver with max_params as text", lambda d, t, c: inf.score(
        d["logistic"], d["train"], d["valid"], "if", solver="exact", solver_options={"max_params": "many"}),
     ["exact: max_params", "an integer", "'many'"]),
    ("cg with a negative tolerance", lambda d, t, c: inf.score(
        d["logistic"], d["train"], d["valid"], "if", solver="cg", solver_options={"tol": -1}), ["cg: tol", "-1"]),
    ("arnoldi of rank 0", lambda d, t, c: inf.score(
        d["logistic"], d["train"], d["valid"], "if", solver="arnoldi", solver_options={"rank": 0}), ["arnoldi: rank", "0"]),
    ("lissa of depth 0", lambda d, t, c: inf.score(
        d["logistic"], d["train"], d["valid"], "if", solver="lissa", solver_options={"depth": 0}), ["lissa: depth"]),
    ("datainf with an unknown lambda rule", lambda d, t, c: inf.score(
        d["logistic"], d["train"], d["valid"], "if", solver="datainf", solver_options={"lam": "big"}),
     ["datainf: lam", "'big'"]),
    ("hvp block of 0", lambda d, t, c: CurvatureContext(d["logistic"], d["train"], hvp_block=0), ["hvp_block", "got 0"]),
    ("bad hvp_kind", lambda d, t, c: CurvatureContext(d["logistic"], d["train"], hvp_kind="both"), ["hvp_kind", "'both'"]),
    # data
    ("scores with other ids", lambda d, t, c: Scores(np.zeros(3), "ip", np.arange(4)), ["scores", "(3,)", "(4,)"]),
    # actions
    ("trim budget larger than the data", lambda d, t, c: trim(d["train"], _scores(d), 400), ["trim budget", "400"]),
    ("active learning batch of 0", lambda d, t, c: ActiveLearner(d["logistic"], d["train"].subset(range(10)),
                                                                 d["train"].subset(range(10, 40)), batch_size=0),
     ["batch_size", "got 0"]),
    ("strategy with the wrong priorities", lambda d, t, c: ActiveLearner(
        d["logistic"], d["train"].subset(range(10)), d["train"].subset(range(10, 40)), _bad_priorities,
        batch_size=2, rounds=1).step(), ["_bad_priorities", "(31,)", "(30,)"]),
    # evaluation
    ("attack fraction above 1", lambda d, t, c: attack(d["logistic"], d["valid"], 1.5), ["attack fraction", "1.5"]),
    ("noise fraction of 1", lambda d, t, c: flip_labels(d["train"].y, 1.0), ["noise fraction", "1.0"]),
    ("lds with alpha 0", lambda d, t, c: lds_ground_truth(d["logistic"], d["train"], d["valid"], alpha=0, n_jobs=1),
     ["lds: alpha", "got 0"]),
    # CLI
    ("CLI chunk size 0", lambda d, t, c: _cli(t, c, "score", "--train", t / "t.csv", "--valid", t / "v.csv", "--label", "y",
                                              "--chunk-size", 0, "--out", t / "o"), ["--chunk-size", "got 0"]),
    ("CLI run setting given as a method option", lambda d, t, c: _cli(
        t, c, "score", "--train", _csv(d, t)[0], "--valid", t / "valid.csv", "--label", "y", "--method", "ip",
        "-o", "chunk_size=3", "--out", t / "o"), ["'chunk_size'", "not a method option", "--chunk-size"]),
]


@pytest.mark.parametrize("case, make, words", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_user_mistake_is_a_one_line_input_error_that_names_it(case, make, words, data, tmp_path, capsys):
    with pytest.raises(InputError) as exc:
        make(data, tmp_path, capsys)
    message = str(exc.value)
    assert type(exc.value) in (InputError, UnknownName), case  # not a subclass raised by a library
    assert message and "\n" not in message, (case, message)
    for word in words:
        assert word in message, (case, word, message)
    assert not (tmp_path / "o").exists(), case
