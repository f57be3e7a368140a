"""The `influent score` pipeline: read the data, build and fit the model, check the memory plan, score,
and assemble the run record with the report's data."""

from __future__ import annotations

import datetime as _dt
import inspect
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from ..data.validate import InputError
from ..data.scores import Scores, jsonable
from .inputs import Data, check_valid_given
from .config import RUN_FORMAT, RunConfig, versions
from .steps import Steps
from ..targets import TARGETS, make_target
from ..models.factory import build_model, model_label
from ..models.sklearn_logistic import BadlyScaledWarning


# ---- the pipeline --------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What a run produced: the scores, the `run.json` record, the report's HTML and the fitted model."""

    scores: Scores
    record: dict[str, Any]
    html: str
    model: Any = None
    attribution: Path | None = None  # a staged `attribute_stream` folder (``--topk``), moved into the run folder


def run_score(cfg: RunConfig, data: Data, steps: Steps | None = None, *, command: str = "score",
              extra_results: dict[str, Any] | None = None, model: Any = None, stage: Path | None = None) -> Outcome:
    """Fit the model, score every training sample, measure the removal curve and build the report.

    Parameters
    ----------
    cfg : the run's settings
    data : from `load_data` (or built in memory, e.g. by the demo)
    steps : timing and progress display (default: silent)
    command : recorded in run.json
    stage : a folder on the output's filesystem where ``--topk`` stages its attribution (default: the system's
        temporary folder), so that moving it into the run folder is a rename, not a copy
    extra_results : more results for run.json and the report (e.g. the demo's method comparison)
    model : an adapter to use instead of building one from ``cfg.model`` (fitted or not)
    """
    from ..api.verbs import score
    from ..methods import METHODS
    from .summary import report_data

    steps = steps or Steps()
    METHODS.check(cfg.method)
    TARGETS.check(cfg.target)
    check_valid_given(cfg, data.valid)
    own = {p.name for p in inspect.signature(score).parameters.values() if p.kind is not p.VAR_KEYWORD}
    clash = sorted(set(cfg.method_options or {}) & own)
    if clash:
        raise InputError(f"option {clash[0]!r} is a setting of the run, not a method option; set it with its own "
                         f"flag (--{clash[0].replace('_', '-')})")
    model, label = fit_model(cfg, data, steps, model)
    target = None if data.valid is None else make_target(cfg.target, data.valid)
    from ..api.plan import plan
    from ..backends.planner import check_plan

    try:
        estimate = plan(model, data.train, target, cfg.method, chunk_size=cfg.chunk_size, store=cfg.store,
                        **cfg.method_options)
    except (ValueError, TypeError, AttributeError, KeyError):
        estimate = None  # a model the planner cannot size: scoring itself reports any bad option
    if estimate is not None:
        check_plan(estimate)  # a run above the available memory is refused before any work
    from ..backends import executor_for
    from ..data.executor import using

    with using(executor_for(cfg.backend, data.train, cfg.backend_options(), cfg.chunk_size)):  # scores, curve refits
        with steps.step(f"score ({cfg.method})") as tick:
            scores = score(model, data.train, target, method=cfg.method, chunk_size=cfg.chunk_size, seed=cfg.seed,
                           progress=tick, store=cfg.store, backend=cfg.backend, ensemble=cfg.ensemble or None,
                           **cfg.method_options)
        scores.columns = prediction_columns(model, data.train, cfg.chunk_size)
        results = report_data(cfg, data, model, scores, steps)
    results["model_label"] = label
    staged = None
    if cfg.topk > 0:
        with steps.step("top-k attribution"):
            results["attribution"], staged = topk_step(cfg, data, model, stage)
    try:
        return _finish(cfg, data, model, scores, results, steps, command, extra_results, staged)
    except BaseException:
        if staged is not None:  # nothing of an unfinished run is left behind
            import shutil

            shutil.rmtree(staged, ignore_errors=True)
        raise


def fit_model(cfg: RunConfig, data: Data, steps: Steps, model: Any = None) -> tuple[Any, str]:
    """The run's model fitted on `data.train` (built from ``cfg.model`` unless `model` is given; training
    checkpoints recorded when the method reads them), checked against valid/test and viewed with
    ``cfg.params``; returns it with its label for the display. Deterministic: `influent explain` refits the
    model of a finished run with it."""
    from ..methods.registry import reads_checkpoints
    from ..models import TrainingRecorder

    with steps.step("build model"):
        model = model if model is not None else build_model(cfg.model, cfg.model_options, data.train, cfg.seed)
    label = model_label(cfg.model, model)
    with steps.step(f"fit {label}") as tick, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BadlyScaledWarning)
        if not model.fitted:
            fit_kw: dict[str, Any] = {"progress": tick} if "progress" in inspect.signature(model.fit).parameters else {}
            if reads_checkpoints(cfg.method, cfg.method_options or {}) and "recorder" in inspect.signature(model.fit).parameters:
                fit_kw["recorder"] = TrainingRecorder(every=max(1, int(cfg.model_options.get("epochs") or 100) // 10))
            model.fit(data.train, **fit_kw)
    for w in caught:  # the library's advice, in the command line's words; other warnings as they came
        if issubclass(w.category, BadlyScaledWarning):
            data.notes.append(str(w.message).split(": standardise")[0] + ": pass --standardize (the default for "
                              "--model logistic) for a fast, well-conditioned fit")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for split in (data.valid, data.test):
        if split is not None:
            model.check_split(split)  # labels the model never saw: one line, not NaN curves
    if cfg.params is not None:
        from ..models.base import resolve_params

        model = resolve_params(model, cfg.params)
    return model, label


def _finish(cfg: RunConfig, data: Data, model: Any, scores: Any, results: dict[str, Any], steps: Steps, command: str,
            extra_results: dict[str, Any] | None, staged: Path | None) -> Outcome:
    """The run record and the report of a scored run."""
    from ..report import build_report

    if extra_results:
        results.update(jsonable(extra_results))
    record = {
        "format": RUN_FORMAT,
        "command": command,
        "argv": list(sys.argv),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
        "data": data.describe(),
        "model": jsonable(model.describe()),
        "method": {"name": cfg.method, "settings": jsonable(scores.settings), "target": jsonable(scores.target)},
        "versions": versions(),
        "timings": {},
        "progress": {},
        "results": results,
    }
    record["timings"] = {**steps.timings, "score_phases": jsonable(scores.timing)}
    with steps.step("build report"):
        html = build_report(record)  # the report leaves out its own step, so a rebuild gives the same page
    record["timings"] = {**steps.timings, "score_phases": jsonable(scores.timing)}
    record["progress"] = jsonable(steps.progress)
    return Outcome(scores, record, html, model, staged)


def prediction_columns(model: Any, train: Any, batch_size: int = 4096) -> dict[str, Any]:
    """The per-sample columns a run's scores.parquet carries beside the values: ``label`` (the given label)
    and, for a classifier, ``predicted`` (the fitted model's most probable class), ``p_predicted`` (its
    probability) and ``p_label`` (the fitted model's probability of the given label). The forward passes take
    `batch_size` rows at a time (the run's chunk size: the memory the run was planned for)."""
    import numpy as np

    cols: dict[str, Any] = {"label": np.asarray(train.y)}
    classes = getattr(model, "classes_", None)
    if classes is None:
        return cols
    P = np.asarray(model.predict_proba(train, batch_size=batch_size), dtype=np.float64)  # (n, K), columns in the order of classes_
    rows = np.arange(len(P))
    best = P.argmax(1)
    cols.update(predicted=np.asarray(classes)[best], p_predicted=P[rows, best],
                p_label=P[rows, model.class_index(train.y)])
    return cols


def pairwise_method(cfg: RunConfig) -> tuple[str, dict[str, Any], str | None]:
    """The method behind a run's train x test attributions (``--topk``, ``influent explain``): the run's own
    method when it has a pairwise form, else `methods.DEFAULT_ATTRIBUTION` ("ip") with the run's projection, if
    any. Returns (method, options, a note when that one stands in)."""
    from ..methods import DEFAULT_ATTRIBUTION, METHODS

    if METHODS[cfg.method].pairwise is not None:
        return cfg.method, dict(cfg.method_options), None
    options = {k: v for k, v in cfg.method_options.items() if k in ("projection", "grad_method")}
    return DEFAULT_ATTRIBUTION, options, (f"{cfg.method!r} has no pairwise form; the attribution uses the "
                                          f"{METHODS[DEFAULT_ATTRIBUTION].title} ({DEFAULT_ATTRIBUTION})")


EXAMPLES = 3  # test samples whose top-k training samples go into the record (and the report)
SHOWN = 10  # at most this many helpful and harmful training samples each


def topk_step(cfg: RunConfig, data: Data, model: Any, stage: Path | None = None) -> tuple[dict[str, Any], Path | None]:
    """Stream the (n_train, n_test) attribution of the test split into a staged folder (`attribute_stream`)
    and return the report's data: the method used, k, and the top-k of the first `EXAMPLES` test samples.

    The run's method is used when it has a pairwise form; otherwise "ip" (with the run's projection, if
    any). Without a test split nothing is computed and the data says why.
    """
    import numpy as np

    from ..api.stream import attribute_stream
    from ..data.atomic import staging_folder

    if data.test is None:
        return {"skipped": "no test split was given (--test FILE), so the top-k attribution of test samples was "
                           "not computed"}, None
    method, options, note = pairwise_method(cfg)
    folder = staging_folder(".influent-attribution-", stage)
    try:
        top = attribute_stream(model, data.train, data.test, folder, method=method, k=cfg.topk,
                               chunk_size=cfg.chunk_size, seed=cfg.seed, check_options=False, **options)
    except BaseException:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        raise
    train_y, test_y = np.asarray(data.train.y), np.asarray(data.test.y)

    def rows(index: np.ndarray, value: np.ndarray) -> list[dict[str, Any]]:
        return [{"id": top.train_ids[i].item(), "label": str(train_y[i]), "value": float(v)}
                for i, v in zip(index[:SHOWN], value[:SHOWN])]

    examples = [{"test_row": j, "test_id": top.test_ids[j].item(), "label": str(test_y[j]),
                 "helpful": rows(top.helpful_index[j], top.helpful_value[j]),
                 "harmful": rows(top.harmful_index[j], top.harmful_value[j])}
                for j in range(min(EXAMPLES, len(data.test)))]
    info = {"method": method, "k": int(top.helpful_index.shape[1]), "n_train": len(data.train),
            "n_test": len(data.test), "folder": "attribution", "examples": examples}
    if note:
        info["note"] = note
    return info, folder


