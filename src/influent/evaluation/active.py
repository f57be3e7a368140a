"""Active-learning experiments: every strategy starts from the same labeled set and pool in each repeat;
test accuracy is recorded against the labeled-set size, then summarised (mean and spread) and plotted.

`make_sets(repeat)` returns the splits ``labeled``, ``pool`` and ``test``, and optionally ``valid`` (given to
every strategy that takes a ``valid`` option and was not given one, e.g. ``iv``); `make_model(repeat)` an
unfitted adapter. A strategy is given as ``(name or callable, options)``; see `influent.actions.active`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from ..actions.active import ActiveLearner, Strategy, takes_valid
from ..data import Split
from ..data.validate import InputError, check_splits
from ..models.base import ModelAdapter
from ..data.atomic import atomic_write

StrategySpec = tuple[str | Strategy, dict[str, Any]]


def active_learning_experiment(make_sets: Callable[[int], dict[str, Split]], make_model: Callable[[int], ModelAdapter],
                               strategies: dict[str, StrategySpec], batch_size: int, rounds: int,
                               repeats: Iterable[int], state_dir: str | Path | None = None,
                               progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run every strategy for `rounds` acquisition rounds of `batch_size` samples in every repeat.

    With `state_dir`, each run saves its state there after every round (``<strategy>-r<repeat>.json``) and
    an interrupted experiment resumes where it stopped. Returns a long table with columns repeat, strategy,
    round, n_labeled, accuracy, seconds (the round's fit + scoring time) and score_seconds (scoring only).
    """
    if not strategies:
        raise InputError("active learning: give at least one strategy")
    rows = []
    for rep in repeats:
        sets = make_sets(rep)
        check_splits(sets, ("labeled", "pool", "test"), "active learning: make_sets")
        for name, (strategy, options) in strategies.items():
            options = dict(options)
            if "valid" in sets and "valid" not in options and takes_valid(strategy):
                options["valid"] = sets["valid"]
            state = None if state_dir is None else Path(state_dir) / f"{name}-r{rep}.json"
            if state is not None:
                state.parent.mkdir(parents=True, exist_ok=True)
            learner = ActiveLearner(make_model(rep), sets["labeled"], sets["pool"], strategy=strategy,
                                    batch_size=batch_size, rounds=rounds, test=sets["test"], state_path=state,
                                    seed=1000 * rep, options=options)
            for rec in learner.run():
                rows.append({"repeat": rep, "strategy": name, "round": rec.round, "n_labeled": rec.n_labeled,
                             "accuracy": rec.test_accuracy, "seconds": rec.seconds,
                             "score_seconds": rec.score_seconds})
            if progress is not None:
                last = rows[-1]
                progress(f"repeat {rep} {name}: final accuracy {last['accuracy']:.4f} with {last['n_labeled']} labels")
    return pd.DataFrame(rows)


def summarize_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, minimum and maximum test accuracy per strategy and labeled-set size."""
    g = frame.groupby(["strategy", "n_labeled"], sort=False)["accuracy"]
    out = g.agg(["mean", "std", "min", "max", "count"]).reset_index()
    return out.rename(columns={"count": "repeats"})


def plot_curves(summary: pd.DataFrame, path: str | Path, title: str) -> None:
    """Accuracy against labeled-set size, one line per strategy with a band of +-1 standard deviation
    (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, part in summary.groupby("strategy", sort=False):
        x, m = part["n_labeled"].to_numpy(), 100 * part["mean"].to_numpy()
        s = 100 * np.nan_to_num(part["std"].to_numpy())
        ax.plot(x, m, marker="o", ms=3, label=name)
        ax.fill_between(x, m - s, m + s, alpha=0.15)
    ax.set_xlabel("labeled samples")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)


# ---- the [FI] configurations -------------------------------------------------------------------
def _labeled_and_pool(parts: dict[str, Split], init: int) -> dict[str, Split]:
    """The first `init` training rows as the labeled set, the rest as the pool; valid and test as they are."""
    train = parts["train"]
    out = {"labeled": train.subset(np.arange(init), name="labeled"),
           "pool": train.subset(np.arange(init, len(train)), name="pool"), "test": parts["test"]}
    if "valid" in parts:
        out["valid"] = parts["valid"]
    return out


def adult_setup(init: int = 300, pool: int = 5000, n_valid: int = 1000, n_test: int = 5000, C: float = 1.0):
    """UCI Adult with logistic regression ([FI] section 6.2): `init` labeled, `pool` unlabeled and `n_valid`
    validation samples (the target of IV) drawn from adult.data (a fresh draw per repeat), `n_test` test
    samples from adult.test. Returns (make_sets, make_model)."""
    from ..data.datasets import load_adult
    from ..models import SklearnLogistic

    def make_sets(rep: int) -> dict[str, Split]:
        return _labeled_and_pool(load_adult(n_train=init + pool, n_valid=n_valid, n_test=n_test, seed=rep), init)

    return make_sets, lambda rep: SklearnLogistic(C=C)


def mnist_setup(init: int = 60, pool: int = 450, n_valid: int = 500, n_test: int = 1000, epochs: int = 10,
                lr: float = 3e-3, batch_size: int | None = 32, channels: tuple[int, int] = (32, 64), hidden: int = 256):
    """The 5,000-digit MNIST subset as (1, 28, 28) images with `SmallCNN` (by default [FI]'s Table 6 widths:
    32/64 channels, 256 hidden units): `init` labeled, `pool` unlabeled, `n_valid` validation (the target of
    IV) and `n_test` test images, a fresh draw per repeat; Adam (`lr`), `epochs` epochs of minibatches of
    `batch_size` (None: full batch)."""
    from ..data.datasets import load_mnist_subset
    from ..models import SmallCNN, TrainConfig

    def make_sets(rep: int) -> dict[str, Split]:
        sizes = {"train": init + pool, "valid": n_valid, "test": n_test}
        return _labeled_and_pool(load_mnist_subset(sizes, seed=rep, images=True), init)

    cfg = lambda rep: TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=rep)  # noqa: E731
    return make_sets, lambda rep: SmallCNN(channels, hidden=hidden, train=cfg(rep), init_seed=rep)


def default_strategies(bald_members: int = 10) -> dict[str, StrategySpec]:
    """FI-active, IV, BALD, entropy and random, with their default options (IV takes the set-up's "valid"
    split from `active_learning_experiment`)."""
    return {"fi": ("fi", {}), "iv": ("iv", {}), "bald": ("bald", {"members": bald_members}),
            "entropy": ("entropy", {}), "random": ("random", {})}


def round_costs(model: ModelAdapter, labeled: Split, pool: Split, strategies: dict[str, StrategySpec],
                repeats: int = 3, reference: str = "bald", valid: Split | None = None) -> pd.DataFrame:
    """Scoring time of one acquisition round (model fitted on `labeled`, the whole `pool` scored) for each
    strategy: median over `repeats`, and the ratio to `reference`. `valid` goes to the strategies that take
    a ``valid`` option and were not given one."""
    import time

    from ..actions.active import resolve_strategy

    fitted = model.clone().fit(labeled)
    rows = []
    for name, (strategy, options) in strategies.items():
        options = dict(options)
        if valid is not None and "valid" not in options and takes_valid(strategy):
            options["valid"] = valid
        fn = resolve_strategy(strategy, options)
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            fn(fitted, labeled, pool, np.random.default_rng(r), **options)
            times.append(time.perf_counter() - t0)
        rows.append({"strategy": name, "seconds": float(np.median(times))})
    out = pd.DataFrame(rows)
    if reference in set(out["strategy"]):
        out[f"x {reference}"] = out["seconds"] / float(out.loc[out["strategy"] == reference, "seconds"].iloc[0])
    return out
