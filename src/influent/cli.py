"""The `influent` command: score, act on scores (trim, relabel, reweight, coreset), clean, select, report, demo.

Every user mistake exits with code 2 and one line on stderr naming the problem and the fix (add
``--debug`` for the traceback); outputs are written atomically at the end, so a failed run leaves none.
"""

from __future__ import annotations

import inspect
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from typer.core import TyperCommand

from .data.validate import InputError, check_number, parse_budget

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Training-data influence: which samples help, which hurt, and what to do about it.")


# ---- option help that lists registered names ---------------------------------------------------------------
_REGISTRIES = {"methods": ("influent.methods", "METHODS"), "targets": ("influent.targets", "TARGETS"),
               "solvers": ("influent.curvature", "SOLVERS"), "strategies": ("influent.actions.active", "STRATEGIES"),
               "backends": ("influent.backends", "BACKENDS")}
_SORTED = ("methods", "solvers")  # registered module by module: listed alphabetically


def registry_names(kind: str, sep: str = " | ") -> str:
    """The names registered under `kind` (a key of `_REGISTRIES`), joined by `sep`."""
    import importlib

    module, attr = _REGISTRIES[kind]
    names = list(getattr(importlib.import_module(module), attr))
    return sep.join(sorted(names) if kind in _SORTED else names)


class _Declared:
    """An option default the method registry declares: ``_Declared("DEFAULT_METHOD")`` stands for
    `influent.methods.registry.DEFAULT_METHOD` and is read when its command is parsed or its help shown."""

    def __init__(self, name: str) -> None:
        self.name = name

    def value(self) -> Any:
        from .methods import registry

        return getattr(registry, self.name)


class _RegistryHelp(TyperCommand):
    """A command whose option help may name a registry as ``{methods}``, ``{targets}``, ``{solvers}``,
    ``{strategies}`` or ``{backends}``, and whose option defaults may be `_Declared` by the method registry: the
    registered names are filled in when the help is shown, the defaults when the command is parsed, so
    ``influent --help`` imports no registry (and no torch)."""

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        for p in self.params:
            if isinstance(p.default, _Declared):
                p.default = p.default.value()
        return super().make_context(info_name, args, parent, **extra)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for p in self.params:
            for kind in _REGISTRIES:
                if p.help and "{" + kind + "}" in p.help:
                    p.help = p.help.replace("{" + kind + "}", registry_names(kind))
        return super().format_help(ctx, formatter)


# ---- what a command has written (for the one line printed when it is interrupted) -------------------------
_WRITTEN: list[str] = []
_STORES: list[Path] = []  # gradient stores in use: an interrupted run keeps their finished chunks


def store_progress(root: Path) -> tuple[int, int]:
    """(finished, total) chunks over the gradient stores under `root` (one sub-folder per model/data key)."""
    import numpy as np

    done = total = 0
    for flags in sorted(Path(root).glob("*/done")):
        try:
            import zarr

            arr = np.asarray(zarr.open_array(str(flags), mode="r")[:])
        except Exception:  # noqa: BLE001 - a store being created: nothing finished in it
            continue
        done, total = done + int(arr.sum()), total + int(arr.size)
    return done, total


def _wrote(what: str) -> None:
    _WRITTEN.append(what)


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM, raised in the main thread; every `except BaseException` clean-up runs."""

    def __init__(self, name: str, code: int) -> None:
        super().__init__(name)
        self.name, self.code = name, code


def _on_signal(signum: int, frame: Any) -> None:
    import signal

    raise Interrupted("Ctrl-C", 130) if signum == signal.SIGINT else Interrupted("SIGTERM", 143)


def _interrupted_line(signal_name: str) -> str:
    kept = ""
    for root in _STORES:
        done, total = store_progress(root)
        if total:
            kept += (f"; the gradient store {root} keeps {done} of {total} finished chunks (run the same command "
                     "again to resume)")
    if _WRITTEN:
        return (f"interrupted ({signal_name}) after its outputs were complete: {'; '.join(_WRITTEN)} "
                f"(each written whole){kept}")
    return (f"interrupted ({signal_name}): no output was written or changed (outputs are moved into place "
            f"only when complete){kept}; run the command again")


# ---- display ---------------------------------------------------------------------------------------------
def _consoles():
    from rich.console import Console

    return Console(), Console(stderr=True)


@contextmanager
def _progress(err_console) -> Iterator[Any]:
    """Rich progress bars on stderr; on an error they vanish, so that the error stays one line."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn)

    bars = Progress(SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description:<36}"),
                    BarColumn(bar_width=30), TaskProgressColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console)
    bars.start()
    try:
        yield bars
    except BaseException:
        bars.live.transient = True
        bars.stop()
        raise
    bars.stop()


def _parse_options(items: list[str]) -> dict[str, Any]:
    """`-o key=value` pairs; values are JSON when they parse as JSON (numbers, true, lists, {...}), else text."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"option {item!r} is not KEY=VALUE; write e.g. -o damping=0.001")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise InputError(f"option {item!r} has no name; write e.g. -o damping=0.001")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _shape(text: Optional[str]) -> Optional[list[int]]:
    if not text:
        return None
    try:
        dims = [int(v) for v in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise InputError(f"--image-shape {text!r} is not like 8x8 or 3x32x32") from None
    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"--image-shape {text!r} needs positive sizes, e.g. 8x8")
    return dims


def _hidden(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--hidden {text!r} is not a list of layer sizes like 64,32") from None
    if not sizes or any(h <= 0 for h in sizes):
        raise InputError(f"--hidden {text!r} needs positive layer sizes, like 64,32")
    return sizes


def _abs(path: Path) -> str:
    """The absolute path of an input file, so that the run folder works from any directory."""
    return str(Path(path).expanduser().absolute())


def _abs_model(spec: str) -> str:
    if ":" in spec and spec.rsplit(":", 1)[0].endswith(".py"):
        file, func = spec.rsplit(":", 1)
        return f"{_abs(Path(file))}:{func}"
    return spec


def _params(text: str) -> Any:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise InputError("--params is empty; use all, last, or module names such as 0,2")
    if len(names) == 1 and names[0] in ("all", "last", "auto"):
        return names[0]
    return names


# The model's training options, one definition for every command that fits a model (read by _model_options).
C_OPTION = typer.Option(None, "--C", help="logistic: inverse regularisation strength (default 1.0)")
HIDDEN_OPTION = typer.Option(None, "--hidden", help="mlp: hidden layer sizes, e.g. 64,32 (default 64)")
EPOCHS_OPTION = typer.Option(None, "--epochs", help="mlp/torch: training epochs (default 100)")
LR_OPTION = typer.Option(None, "--lr", help="mlp/torch: learning rate (default 0.01)")
BATCH_SIZE_OPTION = typer.Option(None, "--batch-size", help="mlp/torch: batch size (default: full batch)")
WEIGHT_DECAY_OPTION = typer.Option(None, "--weight-decay", help="mlp/torch: L2 coefficient")
RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", help="with --backend ray: the cluster to attach to, e.g. "
                                  "10.0.0.1:6379 (default: RAY_ADDRESS, else a Ray on this machine)")


def _backend(backend: str, ray_address: str | None) -> str:
    """`backend` if registered, else the registry's one-line error; --ray-address only with --backend ray."""
    from .backends import check_backend

    backend = check_backend(backend)
    if ray_address and backend != "ray":
        raise InputError("--ray-address needs --backend ray")
    return backend


def _model_options(model: str, C: Optional[float], hidden: Optional[str], epochs: Optional[int], lr: Optional[float],
                   batch_size: Optional[int], weight_decay: Optional[float]) -> dict[str, Any]:
    given = {"C": C, "hidden": _hidden(hidden), "epochs": epochs, "lr": lr, "batch_size": batch_size,
             "weight_decay": weight_decay}
    given = {k: v for k, v in given.items() if v is not None}
    if model == "logistic":
        wrong = sorted(set(given) - {"C"})
    else:
        wrong = sorted({"C"} & set(given))
    if wrong:
        flags = ", ".join("--" + w.replace("_", "-") for w in wrong)
        raise InputError(f"{flags} do(es) not apply to --model {model}; logistic takes --C, mlp and torch models "
                         "take --hidden --epochs --lr --batch-size --weight-decay")
    if model != "mlp" and "hidden" in given:
        raise InputError("--hidden applies to --model mlp only")
    return given


def _finish(console, out: Path, extra: str = "") -> None:
    console.print(f"[bold]wrote[/] {out}/scores.parquet, {out}/run.json, {out}/report.html{extra}")
    console.print(f"open [link=file://{(out / 'report.html').resolve()}]{out / 'report.html'}[/link] in a browser")


# ---- score -------------------------------------------------------------------------------------------------
@app.command(cls=_RegistryHelp)
def score(
    train: Path = typer.Option(..., "--train", help="training data: CSV, Parquet or NPZ (arrays X and the label)"),
    valid: Optional[Path] = typer.Option(None, "--valid", help="validation data; the target is measured on it "
                                         "(methods without a target, e.g. self-influence, do not need it)"),
    test: Optional[Path] = typer.Option(None, "--test", help="test data; enables the removal curve in the report"),
    label: str = typer.Option(..., "--label", help="label column (NPZ: array name)"),
    group: Optional[str] = typer.Option(None, "--group", help="group/sensitive attribute column (fairness targets)"),
    id_column: Optional[str] = typer.Option(None, "--id", help="sample id column (default: row numbers)"),
    text: Optional[str] = typer.Option(None, "--text", "--text-column", help="column with each row's raw text: not a "
                                       "feature (unless --encoder embeds it), shown in the report"),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="embed the --text-column with this sentence encoder "
                                          "(all-MiniLM-L6-v2 or a local folder; nothing downloaded): the embeddings "
                                          "are the features"),
    embed_cache: Optional[Path] = typer.Option(None, "--embed-cache", help="folder caching the embeddings by encoder "
                                               "and text (default ~/.cache/influent/embeddings)"),
    clean_label: Optional[str] = typer.Option(None, "--clean-label", help="column with known clean labels (noisy-label "
                                              "experiments): not a feature; the report measures detection"),
    drop: list[str] = typer.Option([], "--drop", help="a column that is not a feature (repeatable)"),
    standardize: Optional[bool] = typer.Option(None, "--standardize/--no-standardize", help="z-score features with "
                                               "the training mean and deviation (default: on for logistic and mlp)"),
    image_shape: Optional[str] = typer.Option(None, "--image-shape", help="show rows as images of this shape, e.g. 8x8"),
    model: str = typer.Option("logistic", "--model", help="logistic | mlp | lora (fine-tune --encoder with LoRA on "
                              "--text-column) | path/to/file.py:function"),
    C: Optional[float] = C_OPTION,
    hidden: Optional[str] = HIDDEN_OPTION,
    epochs: Optional[int] = EPOCHS_OPTION,
    lr: Optional[float] = LR_OPTION,
    batch_size: Optional[int] = BATCH_SIZE_OPTION,
    weight_decay: Optional[float] = WEIGHT_DECAY_OPTION,
    method: str = typer.Option(_Declared("DEFAULT_METHOD"), "--method", help="scoring method: {methods} (see influent methods)"),
    solver: Optional[str] = typer.Option(None, "--solver", help="curvature solver: {solvers}"),
    damping: Optional[float] = typer.Option(None, "--damping", help="damping added to the Hessian (absolute)"),
    option: list[str] = typer.Option([], "--option", "-o", help="method option KEY=VALUE (repeatable; JSON values)"),
    target: str = typer.Option("utility", "--target", help="{targets}"),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", help="samples per gradient chunk (memory ~ chunk x "
                                             "parameters); default 512, for --model lora 8,192 tokens' worth"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    top: int = typer.Option(12, "--top", help="how many of the most harmful samples the report shows"),
    curve: bool = typer.Option(True, "--curve/--no-curve", help="measure the removal curve (needs --test; refits the model)"),
    title: Optional[str] = typer.Option(None, "--title", help="the report's title"),
    params: Optional[str] = typer.Option(None, "--params", help="analysed parameters: all | last | module names "
                                         "separated by commas (default: the method's own choice)"),
    out: Path = typer.Option(..., "--out", help="output folder: scores.parquet, run.json, report.html"),
    force: bool = typer.Option(False, "--force", help="replace the outputs of an earlier run in --out"),
    store: Optional[Path] = typer.Option(None, "--store", help="folder of an on-disk gradient store: reused by later "
                                         "runs, and an interrupted run resumes from its finished chunks"),
    backend: str = typer.Option("local", "--backend", help="{backends} (ray: the method's shard kernels and the "
                                "curve's refits as Ray tasks; needs pip install \"influent\\[ray]\")"),
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    topk: int = typer.Option(0, "--topk", help="with --test: keep the K most helpful and most harmful training "
                             "samples of every test sample (streamed attribution in --out/attribution; read with "
                             "influent explain; the method's pairwise form, else ip)"),
    ensemble: int = typer.Option(0, "--ensemble", help="average the scores over K models of the model's kind, each "
                                 "trained with its own seed (0: the one model); scores.parquet gets a stderr column"),
) -> None:
    """Score every training sample; write scores.parquet, run.json and report.html to --out."""
    from .data.validate import check_output_dir, check_outputs
    from .runs.config import ATTRIBUTION_DIR, OUTPUT_FILES, RunConfig, default_standardize
    from .runs.steps import Steps
    from .runs.record import input_paths, write_outputs
    from .runs.inputs import load_data
    from .runs.pipeline import run_score

    check_output_dir(out, "--out")
    method_options = _parse_options(option)
    if solver is not None:
        method_options["solver"] = solver
    if damping is not None:
        method_options["damping"] = damping
    check_number(top, "--top", kind=int, low=0)
    check_number(chunk_size, "--chunk-size", kind=int, low=1, none=True)
    if topk < 0:
        raise InputError(f"--topk must be >= 0, got {topk}")
    check_number(ensemble, "--ensemble", kind=int, low=0)
    backend = _backend(backend, ray_address)
    model_options = _model_options(model, C, hidden, epochs, lr, batch_size, weight_decay)
    if encoder and Path(encoder).exists():
        encoder = _abs(Path(encoder))
    if model == "lora" and encoder:
        model_options["encoder"] = encoder
    cfg = RunConfig(train=_abs(train), valid=_abs(valid) if valid else None, test=_abs(test) if test else None, label=label, group=group,
                    id_column=id_column, text_column=text, clean_label_column=clean_label, drop=list(drop),
                    standardize=default_standardize(model, encoder) if standardize is None else standardize, image_shape=_shape(image_shape), model=_abs_model(model),
                    model_options=model_options, method=method,
                    method_options=method_options, target=target, chunk_size=chunk_size or 512, seed=seed, top=top, curve=curve,
                    title=title, params=_params(params) if params is not None else None,
                    store=_abs(store) if store is not None else None, backend=backend,
                    ray_address=ray_address,
                    encoder=encoder, embed_cache=_abs(embed_cache) if embed_cache else None, topk=topk,
                    ensemble=ensemble)
    outputs = [out / f for f in OUTPUT_FILES] + [out / ATTRIBUTION_DIR]  # an earlier --topk run's too
    check_outputs({"--out": outputs}, input_paths(cfg), force)
    if store is not None:
        check_output_dir(store, "--store")
        _STORES.append(Path(store))
    console, err = _consoles()
    with _progress(err) as bars:
        steps = Steps(bars)
        with steps.step("read data") as tick:
            data = load_data(cfg, progress=tick)  # embedding texts: rows done
        if chunk_size is None and cfg.model == "lora":  # activations grow with chunk x tokens
            from .models.hf import default_chunk_size

            cfg.chunk_size = default_chunk_size(data.train.X.shape[1])
        for line in data.notes:
            err.print(f"note: {line}", markup=False, highlight=False, soft_wrap=True)
        stage = next(p for p in (out, *out.parents) if p.is_dir())  # same filesystem as --out: a rename
        shown = len(data.notes)
        if _PLAN_ONLY[0]:
            raise _Planned(cfg, data)  # `influent plan` takes over: the data is read, nothing built or written
        outcome = run_score(cfg, data, steps, stage=stage)
        for line in data.notes[shown:]:  # notes of the fit (e.g. badly scaled features)
            err.print(f"note: {line}", markup=False, highlight=False, soft_wrap=True)
        with steps.step("write outputs"):
            written = write_outputs(out, outcome, replace=force)
            _wrote(f"{out}/scores.parquet, run.json and report.html"
                   + (f" and {ATTRIBUTION_DIR}/" if out / ATTRIBUTION_DIR in written else ""))
    s = outcome.record["results"]["summary"]
    verb = {"negative": f"look harmful (target {cfg.target})",
            "count": "look mislabelled (the estimated number of wrong labels, confident learning)",
            "method": "are flagged (the given label is more likely wrong than right)"}.get(
        s["rule"], "look unusual (outliers of a statistic without a target, not shown to be harmful)")
    console.print(f"[bold]{s['n_harmful']:,}[/] of {s['n_train']:,} training samples {verb} ({cfg.method})")
    if s.get("n_nan"):
        err.print(f"warning: {s['n_nan']:,} of {s['n_train']:,} scores are NaN; trim, relabel, reweight and coreset "
                  "refuse them: check the model and the method's options", markup=False, highlight=False)
    att = outcome.record["results"].get("attribution")
    if att is not None:
        console.print(f"top-k attribution skipped: {att['skipped']}" if "skipped" in att else
                      f"top-{att['k']} training samples of each of {att['n_test']:,} test samples ({att['method']}) in "
                      f"{out / ATTRIBUTION_DIR}: influent explain --scores {out} --test-row J")
    _finish(console, out, f", {out / ATTRIBUTION_DIR}/" if out / ATTRIBUTION_DIR in written else "")


# ---- acting on scores -----------------------------------------------------------------------------------
def _log_path(out: Path, log: Optional[Path]) -> Path:
    return log if log is not None else out.with_name(out.stem + ".changes.csv")


def _check_file_out(path: Path, name: str) -> None:
    from .data.validate import check_output_dir, check_path

    check_path(path, name)
    if path.exists() and path.is_dir():
        raise InputError(f"{name}: {path} is a folder; give a file name such as {path / 'clean.csv'}")
    check_output_dir(path.parent if str(path.parent) else Path("."), name)


def _act(action: str, scores_dir: Path, out: Path, log: Optional[Path], force: bool = False, **kw: Any) -> None:
    import numpy as np

    from .actions import edit as actions
    from .data.validate import check_outputs
    from .runs.config import OUTPUT_FILES
    from .runs.record import absolute_inputs, input_paths, load_run, reload_train, write_rows
    from .models.factory import build_model
    from .runs.inputs import frame_rows
    from .data.atomic import atomic_group

    log_path = _log_path(out, log)
    _check_file_out(out, "--out")
    _check_file_out(log_path, "--log")
    if out.suffix.lower() not in (".csv", ".parquet", ".pq", ".npz"):
        raise InputError(f"--out {out}: use a .csv, .parquet or .npz file name")
    if log_path.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise InputError(f"--log {log_path}: use a .csv or .parquet file name")
    if log_path.resolve() == out.resolve():
        raise InputError("--log and --out name the same file")
    record, cfg0 = load_run(scores_dir)
    inputs = {**input_paths(absolute_inputs(record, cfg0)),
              **{f"--scores ({name})": scores_dir / name for name in OUTPUT_FILES}}
    check_outputs({"--out": out, "--log": log_path}, inputs, force)
    console, err = _consoles()
    with _progress(err) as bars:
        from .runs.steps import Steps

        steps = Steps(bars)
        with steps.step("read scores and training data"):
            record, cfg, data, scores = reload_train(scores_dir)
        train = data.train
        if action == "trim":
            result = actions.trim(train, scores, kw["budget"])
        elif action == "coreset":
            result = actions.coreset(train, scores, kw["budget"])
        elif action == "reweight":
            result = actions.reweight(train, scores, kw["temperature"])
        else:
            from .data.validate import check_budget

            check_budget(kw["budget"], len(train), "relabel budget")
            model = None
            if len(np.unique(train.y)) > 2:
                with steps.step("fit model (picks the new labels)"):
                    model = build_model(cfg.model, cfg.model_options, train, cfg.seed)
                    if not model.fitted:
                        model.fit(train)
            result = actions.relabel(train, scores, kw["budget"], model=model)
        pos_of = {str(v): i for i, v in enumerate(np.asarray(train.ids))}
        kept = np.array([pos_of[str(v)] for v in np.asarray(result.split.ids)], dtype=np.int64)
        rows = frame_rows(data, kept)
        if action == "relabel":
            rows = _with_labels(rows, cfg.label, result.split.y)
        if action == "reweight":
            rows = _with_column(rows, "weight", result.weights)
        with steps.step("write"), atomic_group(replace=force):  # both files or neither (never replaced without --force)
            write_rows(out, rows)
            result.save(log_path)
        _wrote(f"{out} and {log_path}")
    verb = {"trim": f"removed {len(result.log):,}", "coreset": f"kept {len(result.split):,}",
            "relabel": f"relabelled {len(result.log):,}", "reweight": f"weighted {len(result.split):,}"}[action]
    console.print(f"{verb} of {len(train):,} samples; wrote {out} ({len(result.split):,} rows) and the change log {log_path}")


def _with_labels(rows: Any, label: str, y: Any) -> Any:
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        rows = rows.copy()
        rows[label] = pd.Series(y).astype(rows[label].dtype, errors="ignore") if len(rows) else y
        return rows
    return {**rows, label: y}


def _with_column(rows: Any, name: str, values: Any) -> Any:
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        if name in rows.columns:
            raise InputError(f"the training data already has a {name!r} column; rename it first")
        rows = rows.copy()
        rows[name] = values
        return rows
    return {**rows, name: values}


SCORES = typer.Option(..., "--scores", help="the --out folder of `influent score` (scores.parquet, run.json)")
OUT_FILE = typer.Option(..., "--out", help="the edited data set: .csv, .parquet (tables) or .npz")
LOG = typer.Option(None, "--log", help="change log file (default: OUT with .changes.csv)")
FORCE = typer.Option(False, "--force", help="replace --out and --log if they exist (never an input of the run)")


@app.command()
def trim(scores: Path = SCORES, budget: str = typer.Option(..., "--budget", help="how many to remove: a count, or a fraction in (0, 1)"),
         out: Path = OUT_FILE, log: Optional[Path] = LOG, force: bool = FORCE) -> None:
    """Remove the BUDGET lowest-valued training samples; write the rest and a change log."""
    _act("trim", scores, out, log, force, budget=parse_budget(budget))


@app.command()
def relabel(scores: Path = SCORES, budget: str = typer.Option(..., "--budget", help="how many to relabel: a count, or a fraction in (0, 1)"),
            out: Path = OUT_FILE, log: Optional[Path] = LOG, force: bool = FORCE) -> None:
    """Give the BUDGET lowest-valued samples a new label (binary: flipped; else the model's best other class)."""
    _act("relabel", scores, out, log, force, budget=parse_budget(budget))


@app.command()
def reweight(scores: Path = SCORES,
             temperature: float = typer.Option(..., "--temperature", help="softmax temperature on the scale of the values "
                                               "(weights ~ exp(value / T), mean 1)"),
             out: Path = OUT_FILE, log: Optional[Path] = LOG, force: bool = FORCE) -> None:
    """Write every training row with a `weight` column, weights ~ exp(value / temperature), mean 1."""
    _act("reweight", scores, out, log, force, temperature=temperature)


@app.command()
def coreset(scores: Path = SCORES, budget: str = typer.Option(..., "--budget", help="how many to keep: a count, or a fraction in (0, 1)"),
            out: Path = OUT_FILE, log: Optional[Path] = LOG, force: bool = FORCE) -> None:
    """Keep the BUDGET highest-valued training samples."""
    _act("coreset", scores, out, log, force, budget=parse_budget(budget))


# ---- clean --------------------------------------------------------------------------------------------------
@app.command(name="clean")
def clean_command(
    train: Path = typer.Option(..., "--train", help="training data: CSV, Parquet or NPZ (arrays X and the label)"),
    valid: Path = typer.Option(..., "--valid", help="validation data: every candidate is measured on it"),
    label: str = typer.Option(..., "--label", help="label column (NPZ: array name)"),
    id_column: Optional[str] = typer.Option(None, "--id", help="sample id column (default: row numbers)"),
    group: Optional[str] = typer.Option(None, "--group", help="a group column that is not a feature"),
    drop: list[str] = typer.Option([], "--drop", help="a column that is not a feature (repeatable)"),
    standardize: Optional[bool] = typer.Option(None, "--standardize/--no-standardize", help="z-score features with "
                                               "the training mean and deviation (default: on for logistic and mlp; the "
                                               "written files keep the values as given)"),
    model: str = typer.Option("logistic", "--model", help="logistic | mlp | path/to/file.py:function"),
    C: Optional[float] = C_OPTION,
    hidden: Optional[str] = HIDDEN_OPTION,
    epochs: Optional[int] = EPOCHS_OPTION,
    lr: Optional[float] = LR_OPTION,
    batch_size: Optional[int] = BATCH_SIZE_OPTION,
    weight_decay: Optional[float] = WEIGHT_DECAY_OPTION,
    holdout: str = typer.Option("valid+cv", "--holdout", help="valid+cv (the validation rows pooled with training "
                                "rows held out by a cross-validation of the whole cleaning) | valid (the validation "
                                "rows only)"),
    actions: Optional[str] = typer.Option(None, "--actions", help="actions to try, separated by commas (default: "
                                          "trim,relabel with valid+cv; trim,relabel,reweight with valid)"),
    budget: list[str] = typer.Option([], "--budget", help="a budget to try for every action: a count or a fraction "
                                     "(repeatable; default: --budget-factor times the estimated number of wrong "
                                     "labels)"),
    budget_factor: list[float] = typer.Option([], "--budget-factor", help="a multiple of the estimated number of "
                                              "wrong labels to try as a budget (repeatable; default 1, 1.5, 2 with "
                                              "valid+cv; 0.5, 1, 1.5 with valid)"),
    guard: Optional[str] = typer.Option(None, "--guard", help="stepdown | sequence | bonferroni: how the candidates "
                                        "are tested together (default: stepdown with valid+cv, sequence with "
                                        "valid)"),
    select: Optional[str] = typer.Option(None, "--select", help="bound | best | one-se: which of the candidates that "
                                         "pass is chosen (default: bound with valid+cv, best with valid)"),
    metric: str = typer.Option("accuracy", "--metric", help="accuracy | log_loss: what the reported gain measures"),
    evidence: Optional[str] = typer.Option(None, "--evidence", help="both | accuracy | log_loss: whose one-sided "
                                           "bounds may show that an action beats leaving the data alone (both: its "
                                           "accuracy gain, or its log-loss decrease without lower accuracy; default: "
                                           "accuracy with valid+cv, both with valid)"),
    n_boot: int = typer.Option(2000, "--n-boot", help="bootstrap replicates over the validation samples"),
    level: float = typer.Option(0.95, "--level", help="joint confidence of the decision's tests (all of them hold "
                                "together with this probability)"),
    jobs: int = typer.Option(2, "--jobs", help="parallel refits"),
    option: list[str] = typer.Option([], "--option", "-o", help="option of the wrong-label detector KEY=VALUE "
                                     "(influent methods mislabel)"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    backend: str = typer.Option("local", "--backend", help="{backends}: where the refits run (ray: one task each)"),
    ray_address: Optional[str] = RAY_ADDRESS_OPTION,
    out: Path = typer.Option(..., "--out", help="output folder: issues.<fmt>, train-clean.<fmt>, report.html"),
    force: bool = typer.Option(False, "--force", help="replace the outputs of an earlier run in --out"),
) -> None:
    """Find the wrong labels, try trim / relabel / reweight at a few budgets, refit and measure each on --valid,
    and recommend one only when it beats leaving the data alone beyond its bound (docs/actions.md).

    Writes OUT/issues.<fmt> (the training rows plus suggested_label, p_label, score, is_issue, rank),
    OUT/train-clean.<fmt> (the training rows with the recommended action applied; reweight adds a weight
    column; "none" copies them) in the training file's format, and OUT/report.html.
    """
    from .data.validate import check_output_dir, check_outputs
    from .runs.clean import output_paths, run_clean, write_clean
    from .runs.config import RunConfig, default_standardize
    from .runs.inputs import load_data
    from .runs.record import input_paths
    from .runs.steps import Steps

    check_output_dir(out)
    paths = output_paths(out, str(train))
    from .actions.clean import ACTIONS, EVIDENCE, GUARDS, HOLDOUTS, METRICS, SELECTS
    from .data.validate import check_choice

    check_choice(holdout, HOLDOUTS, "--holdout")
    decision: dict[str, Any] = {}  # the decision rule's options the user set (the others: clean's defaults)
    if guard is not None:
        decision["guard"] = check_choice(guard, GUARDS, "--guard")
    if select is not None:
        decision["select"] = check_choice(select, SELECTS, "--select")
    if budget_factor:
        decision["budget_factors"] = [check_number(f, "--budget-factor", low=0, low_open=True) for f in budget_factor]
    acts = None
    if actions is not None:
        acts = [check_choice(a.strip(), ACTIONS, "--actions: each action") for a in actions.split(",") if a.strip()]
        if not acts:
            raise InputError("--actions is empty; use e.g. trim,relabel,reweight")
    check_choice(metric, METRICS, "--metric")
    if evidence is not None:
        check_choice(evidence, EVIDENCE, "--evidence")
    backend = _backend(backend, ray_address)
    budgets = [parse_budget(b) for b in budget] or None
    check_number(n_boot, "--n-boot", kind=int, low=100)
    check_number(level, "--level", low=0, high=1, low_open=True, high_open=True)
    check_number(jobs, "--jobs", kind=int, low=1)
    cfg = RunConfig(train=_abs(train), valid=_abs(valid), label=label, group=group, id_column=id_column,
                    drop=list(drop), standardize=default_standardize(model) if standardize is None else standardize,
                    model=_abs_model(model),
                    model_options=_model_options(model, C, hidden, epochs, lr, batch_size, weight_decay), seed=seed,
                    backend=backend, ray_address=ray_address)
    check_outputs({"--out": list(paths.values())}, input_paths(cfg), force)
    options = _parse_options(option)
    console, err = _consoles()
    with _progress(err) as bars:
        steps = Steps(bars)
        with steps.step("read data"):
            data = load_data(cfg)
        outcome = run_clean(cfg, data, steps, out=out, actions=acts, budgets=budgets, metric=metric,
                            evidence=evidence, n_boot=n_boot, level=level, n_jobs=jobs, options=options,
                            holdout=holdout, decision=decision)
        with steps.step("write outputs"):
            write_clean(out, paths, outcome)
        _wrote(", ".join(str(p) for p in paths.values()))
    res = outcome.result
    console.print(f"[bold]{res.n_issues:,}[/] of {len(data.train):,} training labels look wrong (likely mislabelled)")
    console.print(f"[bold]{res.summary()}[/]", highlight=False)
    what = {"trim": f"without the {res.budget:,} samples", "relabel": f"with {res.budget:,} new labels",
            "reweight": "with a weight column", "none": "unchanged"}[res.action]
    console.print(f"wrote {paths['issues']}, {paths['train-clean']} ({what}), {paths['report']}")


# ---- select -------------------------------------------------------------------------------------------------
@app.command(cls=_RegistryHelp)
def select(
    train: Path = typer.Option(..., "--train", help="labelled data so far: CSV, Parquet or NPZ"),
    pool: Path = typer.Option(..., "--pool", help="unlabelled pool with the training features (other columns are kept)"),
    label: str = typer.Option(..., "--label", help="label column of --train"),
    budget: str = typer.Option(..., "--budget", help="how many pool rows to label next: a count or a fraction"),
    out: Path = typer.Option(..., "--out", help="the chosen pool rows, most useful first (.csv/.parquet/.npz)"),
    strategy: str = typer.Option("entropy", "--strategy", help="{strategies} (see docs/cli.md)"),
    valid: Optional[Path] = typer.Option(None, "--valid", help="validation data, the target of --strategy iv"),
    model: str = typer.Option("logistic", "--model", help="logistic | mlp | lora (fine-tune --encoder with LoRA on "
                              "--text-column) | path/to/file.py:function"),
    C: Optional[float] = typer.Option(None, "--C", help="logistic: inverse regularisation strength"),
    drop: list[str] = typer.Option([], "--drop", help="a column of --train that is not a feature (repeatable)"),
    pool_id: Optional[str] = typer.Option(None, "--id", help="id column of --pool"),
    option: list[str] = typer.Option([], "--option", "-o", help="strategy option KEY=VALUE, e.g. -o members=20 (bald)"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    force: bool = typer.Option(False, "--force", help="replace --out if it exists (never an input)"),
) -> None:
    """One active-learning round: fit on --train, rank the --pool, write the BUDGET rows to label next.

    The strategies are those of `influent.actions.active` (the ActiveLearner's): entropy (the most
    uncertain first; the default), margin, bald, iv (influence of adding the pseudo-labelled sample on
    the --valid loss), fi (FI-active: the trimmed mean FI of the pseudo-labelled sample against the
    labelled set) and random.
    """
    import numpy as np

    from .actions.active import STRATEGIES, resolve_strategy, takes_valid
    from .data.validate import check_budget
    from .runs.config import RunConfig
    from .runs.steps import Steps
    from .runs.inputs import read_split, read_pool
    from .models.factory import build_model
    from .runs.record import write_rows

    from .data.validate import check_outputs

    _check_file_out(out, "--out")
    check_outputs({"--out": out}, {"--train": train, "--pool": pool, "--valid": valid}, force)
    options = _parse_options(option)
    if valid is not None and not takes_valid(strategy):
        raise InputError(f"--valid is used only by --strategy {' | '.join(filter(takes_valid, STRATEGIES))}, "
                         f"not {strategy}")
    if valid is None and takes_valid(strategy):
        raise InputError(f"--strategy {strategy} needs --valid FILE (the loss it lowers)")
    rank_pool = resolve_strategy(strategy, {**options, **({"valid": None} if valid is not None else {})})
    cfg = RunConfig(train=str(train), valid=None, label=label, drop=list(drop), model=model,
                    model_options={"C": C} if C is not None else {}, seed=seed)
    console, err = _consoles()
    with _progress(err) as bars:
        steps = Steps(bars)
        with steps.step("read data"):
            train_split, pool_split, frame = read_pool(cfg, str(pool), pool_id)
            k = check_budget(parse_budget(budget), len(pool_split), "--budget")
            if valid is not None:
                options["valid"] = read_split(str(valid), "valid", cfg, train_split)[0]
        with steps.step("fit model"):
            adapter = build_model(model, cfg.model_options, train_split, seed)
            if not adapter.fitted:
                adapter.fit(train_split)
        with steps.step(f"rank pool ({strategy})"):
            util = np.asarray(rank_pool(adapter, train_split, pool_split, np.random.default_rng(seed), **options),
                              dtype=np.float64)
            order = np.argsort(-util, kind="stable")[:k]
        rows = _take(frame, order, len(pool_split))
        rows = _with_column(rows, "priority", np.arange(1, k + 1))
        rows = _with_column(rows, f"{strategy}_score", util[order])
        with steps.step("write"):
            write_rows(out, rows, replace=force)
        _wrote(str(out))
    console.print(f"chose {k:,} of {len(pool_split):,} pool rows by {strategy}; wrote {out}")


def _take(frame: Any, positions: Any, n: int) -> Any:
    import pandas as pd

    if isinstance(frame, pd.DataFrame):
        return frame.iloc[positions].reset_index(drop=True)
    return {k: (v[positions] if v.ndim >= 1 and v.shape[0] == n else v) for k, v in frame.items()}


# ---- report, datasets, methods, demo ---------------------------------------------------------------------------
@app.command()
def report(folder: Path = typer.Argument(..., help="the --out folder of `influent score` or `influent demo`")) -> None:
    """Rebuild FOLDER/report.html from FOLDER/run.json."""
    from .runs.record import write_report

    path = write_report(folder)
    _wrote(str(path))
    console, _ = _consoles()
    console.print(f"wrote {path}")


@app.command()
def datasets() -> None:
    """List the bundled data sets and the installable ones (with the command that installs each)."""
    from rich.table import Table

    from .data import datasets as ds

    table = Table(title="influent data sets (nothing is downloaded at run time)")
    for col in ("name", "available", "contents", "install"):
        table.add_column(col)
    for info in ds.list_datasets():
        name, available, install, summary = _dataset_row(info)
        table.add_row(name, "[green]yes[/]" if available else "[yellow]no[/]", summary, "" if available else install)
    console, _ = _consoles()
    console.print(table)
    console.print("use one in the demo: influent demo --dataset NAME")


def _dataset_row(info: Any) -> tuple[str, bool, str, str]:
    if isinstance(info, (tuple, list)):
        name, available, install = info[:3]
        return str(name), bool(available), str(install), ""
    return info.name, bool(info.available), getattr(info, "install", ""), getattr(info, "summary", "")


@app.command()
def methods(name: Optional[str] = typer.Argument(None, help="a method: print its options")) -> None:
    """List the scoring methods, or one method's title, summary and options (name, type, default, doc)."""
    from rich.table import Table
    from rich.text import Text

    from .methods import METHODS

    if name is not None:
        spec = METHODS[name]  # an unknown name: the one-line InputError with the choices (exit 2)
        console, _ = _consoles()
        say = lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
        say(f"{spec.name}: {spec.title}")
        say(spec.summary)
        rows = spec.options.describe()
        say(f"options (influent score --method {spec.name} -o NAME=VALUE):" if rows else "options: none")
        for row in rows:
            say(f"  {row['name']} ({row['type']}, default {row['default']!r}): {row['doc']}")
        return

    table = Table(title="scoring methods (influent score --method NAME)")
    for col in ("name", "needs --valid target", "pairwise", "summary"):
        table.add_column(col)
    for name, spec in sorted(METHODS.items()):
        table.add_row(name, "yes" if spec.needs_target else "no", "yes" if spec.pairwise else "no",
                      Text(spec.summary))  # as written: "[IP]" or "[x]" is not markup
    console, _ = _consoles()
    console.print(table)


@app.command(cls=_RegistryHelp)
def demo(out: Path = typer.Option(Path("influent-demo"), "--out", help="output folder"),
         dataset: str = typer.Option("digits", "--dataset", help="a data set from `influent datasets`"),
         noise: float = typer.Option(0.1, "--noise", help="fraction of training labels to flip"),
         method: str = typer.Option(_Declared("DEFAULT_DETECTOR"), "--method", help="the method the report shows: {methods} (default: the wrong-label detector)"),
         seed: int = typer.Option(0, "--seed", help="random seed"),
         force: bool = typer.Option(False, "--force", help="replace an earlier demo in --out")) -> None:
    """End to end on bundled data with flipped labels: score, detect, choose and measure what to do (influent
    clean), and write the report."""
    from rich.table import Table

    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"{out} already exists and is not empty; pass --force to replace it, or choose another --out")

    from .runs.demo import run_demo
    from .runs.steps import Steps

    console, err = _consoles()
    with _progress(err) as bars:
        res = run_demo(out=out, noise=noise, seed=seed, dataset=dataset, method=method, steps=Steps(bars))
        _wrote(f"{out}/")
    table = Table(title=f"{dataset}: {res['n_train']:,} training samples, {res['n_flipped']:,} labels flipped; "
                        f"test accuracy {res['base_accuracy']:.3f} before trimming")
    for col in ("method", "seconds", "ROC AUC", f"precision@{res['budget']}", f"test acc after removing {res['budget']}"):
        table.add_column(col, justify="right" if col != "method" else "left")
    for r in res["rows"]:
        table.add_row(r["method"], f"{r['seconds']:.2f}", f"{r['auc']:.3f}", f"{r['precision_at_budget']:.3f}",
                      f"{r['test_acc_after_trim']:.3f}")
    console.print(table)
    cl = res["clean"]
    console.print(f"[bold]what to do, measured on the validation split:[/] {cl['summary']} "
                  f"(test accuracy {cl['test_before']:.3f} as trained, {cl['test_after']:.3f} refit on this choice)",
                  highlight=False)
    console.print(f"repeat it on the demo's files: {cl['reproduce']}", highlight=False, soft_wrap=True)
    _finish(console, out, f", {out}/data/")


@app.command(name="bench")
def bench(name: Optional[str] = typer.Argument(None, help="suite name (see --list)"),
          quick: bool = typer.Option(False, "--quick", help="CI-sized run"),
          list_: bool = typer.Option(False, "--list", help="list the suites and exit")) -> None:
    """Run a named benchmark suite and print its table (--list shows them)."""
    from .evaluation.suites import (SUITES, print_table, run_suite)  # imported here: pandas and the suites load only when used

    if list_ or name is None:
        for s in SUITES.values():
            typer.echo(f"{s.name:<18}{s.summary}")
        if name is None and not list_:
            raise InputError("give a suite name; see the list above")
        return
    print_table(name, run_suite(name, quick))


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show the full traceback of an error")) -> None:
    """influent: score every training sample, see which help and which hurt, and act on it.

    Start with `influent demo`, then `influent score --help`.
    """


@app.command()
def explain(
    scores: Path = typer.Option(..., "--scores", help="a run folder of influent score with --test (its top-k "
                                "from --topk K, else computed for the rows asked), or a folder written by "
                                "influent.attribute_stream (attribution.zarr, topk.npz, meta.json)"),
    test_row: list[int] = typer.Option(..., "--test-row", help="row number of a test sample to explain (repeatable)"),
    k: int = typer.Option(10, "--k", help="how many helpful and harmful training samples to show"),
) -> None:
    """Print the most helpful and most harmful training samples of test samples, with their rows."""
    from .api.stream import explain as explain_row

    check_number(k, "--k", kind=int, low=1)
    if not (scores / "run.json").is_file():  # a bare attribute_stream folder: ids and attributions only
        for j in test_row:
            rows = explain_row(scores, j)
            for kind in ("helpful", "harmful"):
                typer.echo(f"most {kind} training samples for test row {j} (train id, attribution):")
                for rank, (tid, value) in enumerate(rows[kind][:k], 1):
                    typer.echo(f"  {rank:3d}  {tid}  {value:+.6g}")
        return
    from .runs.explain import check_explainable, explain_run
    from .runs.steps import Steps

    check_explainable(scores, test_row)
    _, err = _consoles()
    with _progress(err) as bars:
        got = explain_run(scores, test_row, k, Steps(bars))
    if got["note"]:
        err.print(f"note: {got['note']}", markup=False, highlight=False)
    for ex in got["examples"]:
        typer.echo(f"test row {ex['test_row']} (id {ex['test_id']}, label {ex['label']}): {ex['row']}")
        for kind in ("helpful", "harmful"):
            typer.echo(f"most {kind} training samples ({got['method']}; rank, train id, attribution, label, row):")
            for rank, r in enumerate(ex[kind], 1):
                typer.echo(f"  {rank:3d}  {r['id']}  {r['value']:+.6g}  label {r['label']}  {r['row']}")


_PLAN_ONLY = [False]


class _Planned(Exception):
    """Raised inside `score` for `influent plan` once the data is read, with the run's settings and data."""

    def __init__(self, cfg: Any, data: Any) -> None:
        super().__init__("plan")
        self.cfg, self.data = cfg, data


def _plan(**kwargs: Any) -> None:
    import os
    import tempfile
    import time

    from .runs.probe import peak_rss, plan_run, rss

    _PLAN_ONLY[0] = True
    try:  # score's own checks and reading; --out is a name that is never created
        score(out=Path(tempfile.gettempdir()) / f"influent-plan-{os.getpid()}-{time.time_ns()}", force=False, **kwargs)
    except _Planned as req:
        cfg, data = req.cfg, req.data
    finally:
        _PLAN_ONLY[0] = False
    load_peak, loaded = peak_rss(), rss()
    console, err = _consoles()
    with err.status(f"probing the run on row subsets of the {len(data.train):,} training rows ..."):
        result = plan_run(cfg, data, load_peak, loaded)
    console.print(f"plan for influent score --model {cfg.model} --method {cfg.method} --chunk-size {cfg.chunk_size} "
                  f"on {len(data.train):,} training rows:")
    for line in result.lines():
        console.print("  " + line, markup=False, highlight=False)
    if result.refused:
        raise InputError(f"this run does not fit in memory: {result.refused}")


_plan.__signature__ = inspect.signature(score).replace(parameters=[
    p for p in inspect.signature(score).parameters.values() if p.name not in ("out", "force")])
_plan.__annotations__ = {k: v for k, v in score.__annotations__.items() if k not in ("out", "force")}
_plan.__doc__ = ("Estimate the peak memory and the time of `influent score` with the same arguments, in seconds: "
                 "from the model's shapes and the run measured on a few row subsets (nothing is fitted on the "
                 "whole data, nothing is written; no --out).")
app.command("plan", cls=_RegistryHelp)(_plan)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: bad input exits with code 2 and one line on stderr, no traceback (unless --debug)."""
    try:  # recent typer vendors click; older typer uses click itself
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover
        from click import exceptions as cx

    import signal

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    _WRITTEN.clear()
    _STORES.clear()
    handlers = {}
    try:  # SIGINT and SIGTERM raise Interrupted, even where the shell had SIGINT ignored
        handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # pragma: no cover - not the main thread
        pass
    try:
        _run_app(args, debug, cx)
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)


# the command line's own wording of a library error's fix (`InputError(..., hint=KEY)`), where the library
# gives a Python call
CLI_FIXES = {
    "checkpoints": "use --model mlp or a torch model file (--model file.py:function): the run records checkpoints "
                   "while it trains them (--model logistic records none)",
    "output-size": "change the last layer of the module your --model file returns, or return "
                   "{\"module\": net, \"classes\": [...]} (the label of each output)",
    "fewer-params": "analyse fewer parameters (--params last) or name a solver (--solver cg, lissa or arnoldi)",
    "bce": "a binary classifier with one output (a logit) needs the bce loss: return {\"module\": net, \"loss\": "
           "\"bce\"} from your --model file",
}


def _memory_error(exc: BaseException) -> Optional[str]:
    """The one line for an allocation failure (MemoryError, torch's "can't allocate memory" or CUDA "out of
    memory"), else None."""
    import re

    text = " ".join(str(exc).split())
    if not isinstance(exc, MemoryError) and not (
            isinstance(exc, RuntimeError) and re.search(r"can't allocate memory|out of memory", text, re.I)):
        return None
    tried = re.search(r"allocate (\d+) bytes", text)
    size = f" ({int(tried.group(1)) / 2**30:.1f} GiB in one allocation)" if tried else ""
    return (f"out of memory{size}: the model or a chunk of gradients is too large for this machine; use a smaller "
            "model, a smaller --chunk-size or --params last (influent plan estimates the peak)")


def _run_app(args: list[str], debug: bool, cx: Any) -> None:
    from .data.validate import os_message

    try:
        app(args=args, prog_name="influent", standalone_mode=False)
    except InputError as exc:
        if debug:
            raise
        msg = " ".join(exc.message_for(CLI_FIXES).split())  # one line
        typer.echo(f"error: {msg}", err=True)
        sys.exit(2)
    except OSError as exc:  # a full disk, a name too long, a folder that cannot be written: not a traceback
        if debug:
            raise
        typer.echo(f"error: {' '.join(os_message(exc).split())}", err=True)
        sys.exit(2)
    except (MemoryError, RuntimeError) as exc:
        line = _memory_error(exc)
        if debug or line is None:
            raise
        typer.echo(f"error: {line}", err=True)
        sys.exit(2)
    except getattr(cx, "NoArgsIsHelpError", ()) as exc:  # `influent` alone: the help, exit 0
        typer.echo(exc.ctx.get_help() if exc.ctx else "influent --help")
        sys.exit(0)
    except cx.UsageError as exc:
        if debug:
            raise
        cmd = exc.ctx.command_path if exc.ctx else "influent"
        msg = " ".join(exc.format_message().split())
        typer.echo(f"error: {msg} (see {cmd} --help)", err=True)
        sys.exit(2)
    except cx.ClickException as exc:
        if debug:
            raise
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(2)
    except Interrupted as exc:
        typer.echo(f"error: {_interrupted_line(exc.name)}", err=True)
        sys.exit(exc.code)
    except (getattr(cx, "Abort", typer.Abort), typer.Abort, KeyboardInterrupt):
        typer.echo(f"error: {_interrupted_line('Ctrl-C')}", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
