"""End-to-end demo on bundled data: flip some training labels, score every sample, find the likely mislabelled
ones, let `influent.clean` choose and measure what to do about them (trim, relabel, reweight or nothing), and
write the same outputs as `influent score` (scores.parquet, run.json, report.html), headed by that
recommendation.

The demo writes its data to ``OUT/data/{train,valid,test}.csv`` (the training file keeps the true label in a
``clean_label`` column) and then runs exactly the `influent score` pipeline on those files, so every other
command works on its output: ``influent trim --scores OUT --budget 100 --out clean.csv``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data import Split
from ..data.validate import InputError, check_output_dir
from ..report import build_report
from .config import RunConfig
from .steps import Steps
from ..models.factory import fast_refit_model
from .inputs import load_data
from .pipeline import run_score
from .record import write_outputs
from ..data.scores import jsonable
from ..data.atomic import atomic_write
from ..evaluation.noisy import noisy_digits, noisy_splits
from ..methods.registry import DEFAULT_DETECTOR, M

IMAGE_SHAPES = {"digits": [8, 8], "mnist": [28, 28]}


def _frame(split: Split, clean: np.ndarray | None = None) -> pd.DataFrame:
    X = split.X.reshape(len(split), -1)
    width = len(str(X.shape[1] - 1))
    cols = split.columns or [f"px{j:0{width}d}" for j in range(X.shape[1])]
    df = pd.DataFrame(X, columns=cols)
    df.insert(0, "id", split.ids)
    df["label"] = split.y
    if clean is not None:
        df["clean_label"] = clean
    return df


def write_demo_data(folder: str | Path, parts: dict[str, Split], clean: np.ndarray) -> dict[str, Path]:
    """Write train/valid/test as CSV files under `folder` (atomically); returns their paths."""
    folder = Path(folder)
    paths = {}
    for role in ("train", "valid", "test"):
        df = _frame(parts[role], clean if role == "train" else None)
        paths[role] = atomic_write(folder / f"{role}.csv", lambda p, df=df: df.to_csv(p, index=False))
    return paths


def demo_config(data_dir: Path, dataset: str, method: str, seed: int, C: float = 0.1) -> RunConfig:
    return RunConfig(train=str(data_dir / "train.csv"), valid=str(data_dir / "valid.csv"), test=str(data_dir / "test.csv"),
                     label="label", id_column="id", clean_label_column="clean_label",
                     image_shape=IMAGE_SHAPES.get(dataset), model="logistic", model_options={"C": C}, method=method,
                     seed=seed, title=f"Noisy {dataset}: which training labels are wrong?")


def run_demo(out: str | Path | None = "influent-demo", noise: float = 0.1, seed: int = 0, dataset: str = "digits",
             method: str = DEFAULT_DETECTOR, compare: tuple[str, ...] = (M.IF, M.IP, M.SELF_IF, M.RANDOM),
             budget: int | None = None, steps: Steps | None = None, echo: Any = None) -> dict[str, Any]:
    """Flip labels of a bundled data set, score with `method`, compare with other methods, write the outputs.

    Parameters
    ----------
    out : output folder (scores.parquet, run.json, report.html, data/); None: a temporary folder
    noise : fraction of training labels flipped (uniformly to another class)
    dataset : a name from `influent.data.datasets.list_datasets()`
    method : the method of the report; `compare` are scored too, for the comparison table
    budget : samples trimmed in the comparison (default: as many as were flipped)
    steps : timing and progress display
    echo : optional callable for a one-line message per finished step

    Returns
    -------
    dict with base_accuracy, budget, rows (one per method: seconds, auc, precision_at_budget,
    test_acc_after_trim), out, and the run `record`.
    """
    import tempfile

    steps = steps or Steps()
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="influent-demo-"))
    out = Path(out)
    check_output_dir(out)
    if not 0 < noise < 1:
        raise InputError(f"noise must be a fraction in (0, 1), got {noise}")
    from ..methods import METHODS

    for m in (method, *compare):
        METHODS.check(m)
    created = not out.exists()
    try:
        return _run(out, noise, seed, dataset, method, compare, budget, steps, echo)
    except BaseException:
        if created and out.exists():  # no partial output
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise


def _run(out: Path, noise: float, seed: int, dataset: str, method: str, compare: tuple[str, ...],
         budget: int | None, steps: Steps, echo: Any) -> dict[str, Any]:
    from ..api.verbs import score
    from ..evaluation.curves import removal_curve
    from ..evaluation.detection import detection
    from ..models.refit import Accuracy, refit_many

    with steps.step(f"prepare {dataset} with {noise:.0%} flipped labels"):
        parts, clean = noisy_splits(dataset, noise, seed)
        data_dir = out / "data"
        write_demo_data(data_dir, parts, clean)
        cfg = demo_config(data_dir, dataset, method, seed)
        data = load_data(cfg)
    outcome = run_score(cfg, data, steps, command="demo")
    model, train, test = outcome.model, data.train, data.test
    flipped = np.asarray(data.clean).astype(str) != train.y.astype(str)
    budget = int(flipped.sum()) if budget is None else int(budget)
    refit = fast_refit_model(model)
    base_acc = model.accuracy(test)
    rows = []
    metric = Accuracy(test)
    methods = [method] + [m for m in compare if m != method]
    with steps.step("compare methods", total=len(methods) + 1) as tick:
        for i, m in enumerate(methods):
            if m == method:
                s, secs = outcome.scores, outcome.record["timings"].get(f"score ({method})", 0.0)
            else:
                t0 = time.perf_counter()
                s = score(model, train, target=valid_target(data), method=m, seed=seed)
                secs = time.perf_counter() - t0
            d = detection(s, flipped, budget)
            acc = removal_curve(refit, train, s, [budget], metric, seed=seed).curves["lowest"][0]
            rows.append({"method": m, "seconds": secs, "auc": d.auc, "precision_at_budget": d.precision_at_k,
                         "test_acc_after_trim": acc})
            tick(i + 1, len(methods) + 1)
        # fixed sets rather than a ranking: 3 random trims (unless the random method is compared) and the oracle
        rng = np.random.default_rng(seed)
        drops = [] if M.RANDOM in methods else [rng.choice(len(train), budget, replace=False) for _ in range(3)]
        *accs, oracle = refit_many(refit, train, [train.without(d) for d in drops + [np.flatnonzero(flipped)]],
                                   metric, n_jobs=1, seed=seed)
        if drops:
            rows.append({"method": M.RANDOM, "seconds": 0.0, "auc": 0.5, "precision_at_budget": float(flipped.mean()),
                         "test_acc_after_trim": float(np.mean(accs))})
        tick(len(methods) + 1, len(methods) + 1)
    with steps.step("clean: choose an action and measure it"):
        cleaned = demo_clean(cfg, data, model, out, seed)
    record = outcome.record
    record["results"].update(comparison=rows, comparison_budget=budget, comparison_base_accuracy=base_acc,
                             comparison_oracle_accuracy=oracle, dataset=dataset, noise=noise, clean=cleaned)
    record["timings"] = {**steps.timings, "score_phases": record["timings"].get("score_phases", {})}
    record["progress"] = jsonable(steps.progress)
    outcome.html = build_report(record)
    write_outputs(out, outcome, replace=True)  # the demo checked --force
    if echo is not None:
        echo(f"wrote {out}/report.html")
    return {"base_accuracy": base_acc, "budget": budget, "rows": rows, "oracle_accuracy": oracle, "out": out,
            "clean": cleaned,
            "record": outcome.record, "n_flipped": int(flipped.sum()), "n_train": len(train), "n_test": len(test)}


def demo_clean(cfg: RunConfig, data: Any, model: Any, out: Path, seed: int) -> dict[str, Any]:
    """`influent.clean` on the demo's data (the loop from scores to a better model): its record, with the test
    accuracy of the model refit on what it recommends beside the model as trained, and the `influent clean`
    command that repeats it on the demo's files."""
    import dataclasses

    from ..actions.clean import clean
    from ..models.factory import model_label
    from .clean import clean_record, reproduce_command

    res = clean(model, data.train, data.valid, n_jobs=1, seed=seed)
    ccfg = dataclasses.replace(cfg, train=str(Path(cfg.train).resolve()), valid=str(Path(cfg.valid).resolve()),
                               test=None, drop=[cfg.clean_label_column], clean_label_column=None)
    command = reproduce_command(ccfg, out / "clean", None, None, res.metric, 2000, res.level, {}, None, res.holdout)
    rec = clean_record(res, ccfg, data, model_label(cfg.model, model), command, {}, kind="demo")
    before = model.accuracy(data.test)
    after = before if res.action == "none" else model.refit(res.train, sample_weight=res.weights).accuracy(data.test)
    rec.update(test_before=before, test_after=after, n_test=len(data.test))
    rec.pop("versions", None)
    rec.pop("config", None)
    return rec


def valid_target(data: Any) -> Any:
    from ..targets import Utility

    return Utility(data.valid)


__all__ = ["run_demo", "noisy_digits", "noisy_splits", "write_demo_data"]
