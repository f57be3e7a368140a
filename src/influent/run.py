"""One scoring run end to end, and its record ``run.json``: every setting, versions, timings, data fingerprints.

The command line (`influent score`, `influent demo`) and the library share this module:

- `RunConfig` holds every setting of a run and round-trips through JSON
  (``RunConfig.from_dict(cfg.to_dict()) == cfg``);
- `load_data` reads the train / valid / test files a config names (CSV, Parquet or NPZ) into `Split`s,
  keeping the columns that are not features (text, known clean labels) aside for the report;
- `build_model` turns ``"logistic"``, ``"mlp"`` or ``"path/to/file.py:function"`` into a `ModelAdapter`;
- `run_score` fits, scores, measures the removal curve and builds the report; `Steps` times each step and
  forwards progress (``progress(done, total)``) to a display;
- `write_outputs` writes ``scores.parquet``, ``run.json`` and ``report.html`` atomically, all or nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import hashlib
import importlib.util
import inspect
import json
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from .data import Split, from_frame, read_table
from .data.validate import InputError, check_columns, check_feature_shape, check_output_dir
from .scores import Scores, _jsonable, atomic_write

RUN_FORMAT = 1
OUTPUT_FILES = ("scores.parquet", "run.json", "report.html")
TARGETS = ("utility", "demographic-parity", "equal-opportunity", "robustness")


# ---- configuration ---------------------------------------------------------------------------------
@dataclass
class RunConfig:
    """Every setting of one run; saved as ``config`` in ``run.json`` and enough to repeat the run.

    Attributes
    ----------
    train, valid, test : paths of CSV / Parquet / NPZ files (test optional: it enables the removal curve)
    label, group, id_column : column (or NPZ array) names of the label, the group attribute, the sample ids
    text_column : a column holding each row's raw text; not a feature, shown in the report
    clean_label_column : a column holding each row's known clean label (noisy-label experiments); not a
        feature; the report measures how well the scores find the rows whose label differs from it
    drop : further columns that are not features
    standardize : z-score features with the training mean and standard deviation
    image_shape : render each row as an image of this shape (e.g. [8, 8]); default: the NPZ array's shape
    model : "logistic" | "mlp" | "path/to/file.py:function"
    model_options : C (logistic); hidden, epochs, lr, batch_size, weight_decay (mlp and torch models)
    method, method_options : the scoring method and its options (solver, damping, ...)
    target : "utility" | "demographic-parity" | "equal-opportunity" | "robustness"
    chunk_size, seed : as in `influent.score`
    top : how many of the most harmful samples the report shows
    curve, curve_fractions, curve_repeats : the removal curve (needs a test split): the fractions of the
        training set removed, and how many random removals are averaged
    title : the report's title (default: method and data)
    params : the analysed parameters ("all", "last", "auto" or module names; `resolve_params`), applied to
        the fitted model before scoring; None: the model's own choice
    store : folder of an on-disk gradient store (chunked, resumable: an interrupted run computes only the
        chunks it had not finished), or None
    backend : "local" or "ray" (`influent.score`'s backend)
    """

    train: str | None = None
    valid: str | None = None
    test: str | None = None
    label: str = "y"
    group: str | None = None
    id_column: str | None = None
    text_column: str | None = None
    clean_label_column: str | None = None
    drop: list[str] = field(default_factory=list)
    standardize: bool = False
    image_shape: list[int] | None = None
    model: str = "logistic"
    model_options: dict[str, Any] = field(default_factory=dict)
    method: str = "if"
    method_options: dict[str, Any] = field(default_factory=dict)
    target: str = "utility"
    chunk_size: int = 512
    seed: int = 0
    top: int = 12
    curve: bool = True
    curve_fractions: list[float] = field(default_factory=lambda: [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3])
    curve_repeats: int = 3
    title: str | None = None
    params: str | list[str] | None = None
    store: str | None = None
    encoder: str | None = None  # embed text_column with this sentence encoder: the embeddings are the features
    embed_cache: str | None = None  # folder of the embedding cache (default ~/.cache/influent/embeddings)
    backend: str = "local"

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"run config: unknown setting(s) {unknown}")
        return cls(**d)


# ---- environment ---------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    """Versions of Python, the platform and every library a run depends on."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("influent", "torch", "numpy", "scipy", "scikit-learn", "pandas", "pyarrow", "zarr", "typer", "rich"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- progress and timing ------------------------------------------------------------------------------
class Steps:
    """Times named steps and forwards their progress to a display.

    ``with steps.step("score (ip)") as tick: ... tick(done, total)``. `display` is an object with
    ``add_task(description, total=...)`` and ``update(task, completed=..., total=...)`` (a
    ``rich.progress.Progress``) or None. A step that never calls `tick` is shown complete when it ends; a
    step that does is left exactly where its last call put it, so a bar short of 100% shows as such.
    """

    def __init__(self, display: Any = None) -> None:
        self.display = display
        self.timings: dict[str, float] = {}
        self.progress: dict[str, dict[str, Any]] = {}

    @contextmanager
    def step(self, name: str, total: int | None = None) -> Iterator[Callable[[int, int], None]]:
        task = self.display.add_task(name, total=total) if self.display is not None else None
        rec: dict[str, Any] = {"done": 0, "total": total, "updates": 0}

        def tick(done: int, total_: int) -> None:
            rec.update(done=int(done), total=int(total_), updates=rec["updates"] + 1)
            if task is not None:
                self.display.update(task, completed=done, total=total_)

        t0 = time.perf_counter()
        yield tick
        self.timings[name] = round(time.perf_counter() - t0, 4)
        if rec["updates"] == 0:
            rec.update(done=1, total=1)
            if task is not None:
                self.display.update(task, completed=1, total=1)
        self.progress[name] = rec


# ---- data ----------------------------------------------------------------------------------------------
@dataclass
class Data:
    """The splits of a run, what is kept aside for the report, and where each split came from.

    Attributes
    ----------
    train, valid, test : `Split`s (valid/test may be None)
    text : (n_train,) raw text of each training row, or None
    clean : (n_train,) known clean label of each training row, or None
    frames : role -> the table as read (pandas) or the NPZ arrays, for writing edited copies
    files : role -> {"path", "sha256", "rows", "fingerprint"}
    image_shape : shape of one sample as an image, or None
    raw_X : the training features as the user gave them when the model sees transformed ones
        (``--standardize``), so that the report shows the data, not z-scores; None otherwise
    """

    train: Split
    valid: Split | None = None
    test: Split | None = None
    text: np.ndarray | None = None
    clean: np.ndarray | None = None
    frames: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    image_shape: tuple[int, ...] | None = None
    raw_X: np.ndarray | None = None

    def describe(self) -> dict[str, Any]:
        return _jsonable(self.files)


def _read_npz(path: Path, role: str) -> dict[str, np.ndarray]:
    if not path.exists():
        raise InputError(f"{role}: file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return dict(z)
    except (OSError, ValueError) as exc:
        raise InputError(f"{role}: cannot read {path}: {str(exc).splitlines()[0]}") from None


def _read_split(path: str, role: str, cfg: RunConfig, like: Split | None) -> tuple[Split, dict[str, Any], Any]:
    """One split from a file; `like` (the training split) fixes the features of valid/test."""
    p = Path(path)
    aside = [c for c in (cfg.text_column, cfg.clean_label_column) if c]
    extras: dict[str, Any] = {}
    if cfg.encoder and (p.suffix.lower() == ".npz" or not cfg.text_column):
        raise InputError("--encoder embeds the column named by --text-column of a CSV or Parquet file; pass both")
    if p.suffix.lower() == ".npz":
        arrays = _read_npz(p, role)
        wanted = ["X", cfg.label] + [c for c in (cfg.group, cfg.id_column) if c] + (aside if like is None else [])
        check_columns(list(arrays), wanted, role)
        split = Split(arrays["X"], arrays[cfg.label], arrays.get(cfg.group) if cfg.group else None,
                      arrays.get(cfg.id_column) if cfg.id_column else None, role)
        extras = {c: arrays[c] for c in aside if c in arrays}
        frame: Any = arrays
    else:
        df = read_table(p, role)
        df.columns = [str(c) for c in df.columns]
        wanted = [cfg.label] + [c for c in (cfg.group, cfg.id_column) if c]
        if like is None:
            wanted += aside + list(cfg.drop)
        check_columns(list(df.columns), wanted, role)
        reserved = {cfg.label, cfg.group, cfg.id_column, *aside, *cfg.drop}
        features = like.columns if like is not None and like.columns is not None else \
            [c for c in df.columns if c not in reserved]
        if cfg.encoder and cfg.model == "lora":  # fine-tuning: the token ids of the text column, train's length
            from .data.text import tokenized_frame

            split = tokenized_frame(df, cfg.text_column, cfg.label, cfg.group, cfg.id_column, cfg.encoder,
                                    int(cfg.model_options.get("max_length", 128)),
                                    None if like is None else like.X.shape[1], role)
        elif cfg.encoder:  # text data: the sentence embeddings of the text column are the features
            from .data.text import embedded_frame

            split = embedded_frame(df, cfg.text_column, cfg.label, cfg.group, cfg.id_column, cfg.encoder,
                                   cfg.embed_cache, role)
        else:
            split = from_frame(df, cfg.label, cfg.group, cfg.id_column, features, role)
        extras = {c: df[c].to_numpy() for c in aside if c in df.columns}
        frame = df
    if like is not None:
        check_feature_shape(split.X, like.X, role)
    return split, extras, frame


def load_data(cfg: RunConfig) -> Data:
    """Read the files named by `cfg` into `Split`s (validated: one-line `InputError` on bad input)."""
    if not cfg.train:
        raise InputError("no training data: pass --train FILE")
    if not cfg.valid:
        raise InputError("no validation data: pass --valid FILE (the target is measured on it)")
    train, extras, frame = _read_split(cfg.train, "train", cfg, None)
    data = Data(train, frames={"train": frame})
    data.text = extras.get(cfg.text_column) if cfg.text_column else None
    data.clean = extras.get(cfg.clean_label_column) if cfg.clean_label_column else None
    if data.clean is not None:
        from .data.validate import check_labels

        data.clean = check_labels(data.clean, len(train), f"train: clean label column {cfg.clean_label_column!r}")
    for role in ("valid", "test"):
        path = getattr(cfg, role)
        if path:
            split, _, frame = _read_split(path, role, cfg, train)
            setattr(data, role, split)
            data.frames[role] = frame
    if cfg.standardize:
        data.raw_X = train.X
        mu = train.X.mean(0)
        sd = train.X.std(0)
        sd[sd == 0] = 1.0
        for role in ("train", "valid", "test"):
            s = getattr(data, role)
            if s is not None:
                setattr(data, role, Split(((s.X - mu) / sd).astype(s.X.dtype), s.y, s.group, s.ids, s.name, s.columns))
    if cfg.image_shape:
        shape = tuple(int(v) for v in cfg.image_shape)
        if int(np.prod(shape)) != train.n_features:
            raise InputError(f"image shape {list(shape)} holds {int(np.prod(shape))} values, the data has "
                             f"{train.n_features} features")
        data.image_shape = shape
    elif train.X.ndim >= 3:
        data.image_shape = tuple(train.X.shape[1:])
    for role in ("train", "valid", "test"):
        s = getattr(data, role)
        if s is not None:
            path = getattr(cfg, role)
            data.files[role] = {"path": str(Path(path).resolve()), "sha256": file_sha256(path), "rows": len(s),
                                "features": s.n_features, "fingerprint": s.fingerprint()}
    return data


# ---- models --------------------------------------------------------------------------------------------
MODEL_OPTIONS = {"logistic": {"C"}, "mlp": {"hidden", "epochs", "lr", "batch_size", "weight_decay", "dropout"},
                 "lora": {"encoder", "max_length", "epochs", "lr", "batch_size", "weight_decay"}}


def _train_config(opts: dict[str, Any], seed: int):
    from .models import TrainConfig

    kw = {k: opts[k] for k in ("epochs", "lr", "batch_size") if opts.get(k) is not None}
    return TrainConfig(seed=seed, **kw)


def build_model(spec: str, options: dict[str, Any] | None = None, train: Split | None = None, seed: int = 0):
    """A `ModelAdapter` from a model name.

    Parameters
    ----------
    spec : "logistic" (`SklearnLogistic`), "mlp" (`TabularMLP`), or "path/to/file.py:function" where the
        function takes no argument or the training `Split` and returns a `ModelAdapter`, a torch
        `nn.Module` (wrapped in `TorchAdapter` with cross-entropy over all parameters), or a dict of
        `TorchAdapter` arguments (``{"module": ..., "loss": "cross_entropy", "params": "last", ...}``)
    options : C for logistic; hidden (list of ints), epochs, lr, batch_size, weight_decay, dropout otherwise
    """
    from torch import nn

    from .models import ModelAdapter, SklearnLogistic, TabularMLP, TorchAdapter, TrainConfig

    opts = {k: v for k, v in (options or {}).items() if v is not None}
    if spec in MODEL_OPTIONS:
        extra = sorted(set(opts) - MODEL_OPTIONS[spec])
        if extra:
            raise InputError(f"model {spec!r} does not take option(s) {extra}; it takes {sorted(MODEL_OPTIONS[spec])}")
    if spec == "logistic":
        return SklearnLogistic(C=float(opts.get("C", 1.0)))
    if spec == "mlp":
        hidden = opts.get("hidden", [64])
        decay = {"weight_decay": float(opts["weight_decay"])} if "weight_decay" in opts else {}
        return TabularMLP(hidden=[int(h) for h in hidden], dropout=float(opts.get("dropout", 0.0)),
                          train=_train_config(opts, seed), init_seed=seed, **decay)
    if spec == "lora":  # a LoRA classifier on the local encoder, fine-tuned by the run ([OGA]/[IP] recipe)
        from .models.hf import HFAdapter, lora_classifier

        if "encoder" not in opts:
            raise InputError("--model lora needs --encoder (all-MiniLM-L6-v2 or a local model folder) and --text-column")
        k = len(np.unique(train.y)) if train is not None else 2
        net, _ = lora_classifier(opts["encoder"], num_labels=k, seed=seed)
        lora_train = TrainConfig(seed=seed, lr=float(opts.get("lr", 1e-3)), epochs=int(opts.get("epochs", 3)),
                                 batch_size=int(opts.get("batch_size", 16)))
        return HFAdapter(net, params="lora", weight_decay=float(opts.get("weight_decay", 0.0)), train=lora_train,
                         fitted=False)
    if ":" not in spec or not spec.rsplit(":", 1)[0].endswith(".py"):
        raise InputError(f"unknown model {spec!r}; use logistic, mlp or path/to/file.py:function")
    file, func_name = spec.rsplit(":", 1)
    path = Path(file)
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    mod_spec = importlib.util.spec_from_file_location(f"influent_user_model_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    write_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # leave no __pycache__ beside the user's file
    try:
        mod_spec.loader.exec_module(module)
    except Exception as exc:
        raise InputError(f"model file {path} failed to import: {type(exc).__name__}: {exc}; "
                         "run it with python to see the traceback (or add --debug)") from exc
    finally:
        sys.dont_write_bytecode = write_bytecode
    func = getattr(module, func_name, None)
    if not callable(func):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:8]
        raise InputError(f"{path} has no function {func_name!r}; found {found}")
    try:
        n_args = len([p for p in inspect.signature(func).parameters.values()
                      if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
        made = func(train) if n_args >= 1 else func()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{spec} raised {type(exc).__name__}: {exc} (add --debug for the traceback)") from exc
    if isinstance(made, ModelAdapter):
        return made
    torch_kw = {"weight_decay": float(opts.get("weight_decay", 0.0)), "train": _train_config(opts, seed)}
    if isinstance(made, nn.Module):  # an architecture: trained by the run from its weights
        return TorchAdapter(made, fitted=False, **torch_kw)
    if isinstance(made, dict) and isinstance(made.get("module"), nn.Module):
        kw = {"fitted": False, **torch_kw, **made}
        if isinstance(kw.get("train"), dict):
            kw["train"] = TrainConfig(**kw["train"])
        try:
            return TorchAdapter(**kw)
        except TypeError as exc:
            raise InputError(f"{spec} returned a dict TorchAdapter cannot take: {exc}") from None
    raise InputError(f"{spec} must return an influent ModelAdapter, a torch nn.Module or a dict with a 'module'; "
                     f"got {type(made).__name__}")


def model_label(spec: str, adapter: Any) -> str:
    """A short human description, e.g. "logistic regression (C=0.1)"."""
    name = type(adapter).__name__
    if name == "SklearnLogistic":
        return f"logistic regression (C={adapter.C:g})"
    if name == "TabularMLP":
        return f"MLP {'-'.join(str(h) for h in adapter.hidden)} hidden units"
    return f"{name} from {spec}" if ":" in spec else name


def make_target(kind: str, split: Split):
    """The target object named by `kind`, measured on `split`."""
    from . import targets

    table = {"utility": targets.Utility, "demographic-parity": targets.DemographicParity,
             "equal-opportunity": targets.EqualOpportunity, "robustness": targets.Robustness}
    if kind not in table:
        raise InputError(f"unknown target {kind!r}; choose one of {list(TARGETS)}")
    return table[kind](split)


def fast_refit_model(model: Any) -> Any:
    """An unfitted copy for repeated refits (removal curves): scikit-learn's solution without the Newton
    polish, which changes predictions only beyond 1e-10."""
    clone = model.clone()
    if hasattr(clone, "newton_steps"):
        clone = copy.copy(clone)
        clone.newton_steps = 0
    return clone


# ---- the pipeline --------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What a run produced: the scores, the `run.json` record, the report's HTML and the fitted model."""

    scores: Scores
    record: dict[str, Any]
    html: str
    model: Any = None


class PlanOnly(Exception):
    """Raised by `run_score(..., plan_only=True)` with the run's `planner.Plan`, before any scoring."""

    def __init__(self, estimate: Any) -> None:
        super().__init__("plan only")
        self.plan = estimate


def run_score(cfg: RunConfig, data: Data, steps: Steps | None = None, *, command: str = "score", plan_only: bool = False,
              extra_results: dict[str, Any] | None = None, model: Any = None) -> Outcome:
    """Fit the model, score every training sample, measure the removal curve and build the report.

    Parameters
    ----------
    cfg : the run's settings
    data : from `load_data` (or built in memory, e.g. by the demo)
    steps : timing and progress display (default: silent)
    command : recorded in run.json
    extra_results : more results for run.json and the report (e.g. the demo's method comparison)
    model : an adapter to use instead of building one from ``cfg.model`` (fitted or not)
    """
    from .api import score
    from .methods.registry import reads_checkpoints
    from .models import TrainingRecorder
    from .report import build_report
    from .report.compute import report_data

    steps = steps or Steps()
    if cfg.method not in _methods():
        raise InputError(f"unknown method {cfg.method!r}; choose one of {sorted(_methods())}")
    if cfg.target not in TARGETS:
        raise InputError(f"unknown target {cfg.target!r}; choose one of {list(TARGETS)}")
    if data.valid is None:
        raise InputError("no validation data: pass --valid FILE (the target is measured on it)")
    with steps.step("build model"):
        model = model if model is not None else build_model(cfg.model, cfg.model_options, data.train, cfg.seed)
    label = model_label(cfg.model, model)
    with steps.step(f"fit {label}"):
        if not model.fitted:
            if reads_checkpoints(cfg.method, cfg.method_options or {}) and "recorder" in inspect.signature(model.fit).parameters:
                model.fit(data.train, recorder=TrainingRecorder(every=max(1, int(cfg.model_options.get("epochs") or 100) // 10)))
            else:
                model.fit(data.train)
    for split in (data.valid, data.test):
        if split is not None:
            model.check_split(split)  # labels the model never saw: one line, not NaN curves
    if cfg.params is not None:
        from .models.base import resolve_params

        model = resolve_params(model, cfg.params)
    target = make_target(cfg.target, data.valid)
    from .planner import check_plan, plan

    try:
        estimate = plan(model, data.train, target, cfg.method, chunk_size=cfg.chunk_size, store=cfg.store,
                        **cfg.method_options)
    except (ValueError, TypeError, AttributeError, KeyError):
        if plan_only:
            raise
        estimate = None  # a model the planner cannot size: scoring itself reports any bad option
    if plan_only:
        raise PlanOnly(estimate)
    if estimate is not None:
        check_plan(estimate)  # a run above the available memory is refused before any work
    with steps.step(f"score ({cfg.method})") as tick:
        scores = score(model, data.train, target, method=cfg.method, chunk_size=cfg.chunk_size, seed=cfg.seed,
                       progress=tick, store=cfg.store, backend=cfg.backend, **cfg.method_options)
    results = report_data(cfg, data, model, scores, steps)
    results["model_label"] = label
    if extra_results:
        results.update(_jsonable(extra_results))
    record = {
        "format": RUN_FORMAT,
        "command": command,
        "argv": list(sys.argv),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
        "data": data.describe(),
        "model": _jsonable(model.describe()),
        "method": {"name": cfg.method, "settings": _jsonable(scores.settings), "target": _jsonable(scores.target)},
        "versions": versions(),
        "timings": {},
        "progress": {},
        "results": results,
    }
    record["timings"] = {**steps.timings, "score_phases": _jsonable(scores.timing)}
    with steps.step("build report"):
        html = build_report(record)  # the report leaves out its own step, so a rebuild gives the same page
    record["timings"] = {**steps.timings, "score_phases": _jsonable(scores.timing)}
    record["progress"] = _jsonable(steps.progress)
    return Outcome(scores, record, html, model)


def _methods() -> dict:
    from .methods import METHODS

    return METHODS


def write_outputs(out: str | Path, outcome: Outcome) -> list[Path]:
    """Write scores.parquet, run.json and report.html under `out`, all or nothing: each is written to a
    temporary file and flushed, and the three are moved into place together (`atomic_group`); on a failure
    or an interruption none is, and `out` is removed again when this call created it."""
    from .scores import atomic_group

    out = Path(out)
    check_output_dir(out)
    created = not out.exists()
    written = [out / name for name in OUTPUT_FILES]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_group():
            outcome.scores.save(out / "scores.parquet")
            write_json(out / "run.json", outcome.record)
            atomic_write(out / "report.html", lambda p: p.write_text(outcome.html, encoding="utf-8"))
    except BaseException as exc:
        if created and out.exists() and not any(out.iterdir()):
            out.rmdir()
        if isinstance(exc, OSError):
            raise InputError(f"cannot write to {out}: {exc.strerror or exc}; choose another --out") from None
        raise
    return written


def input_paths(cfg: RunConfig) -> dict[str, str]:
    """The files a run reads: option name -> path (the model file of a "file.py:function" model too)."""
    found = {"--train": cfg.train, "--valid": cfg.valid, "--test": cfg.test}
    if ":" in cfg.model:
        found["--model"] = cfg.model.rsplit(":", 1)[0]
    return {k: v for k, v in found.items() if v}


def write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(_jsonable(obj), indent=1)
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def load_run(folder: str | Path) -> tuple[dict[str, Any], RunConfig]:
    """The record and config of a finished run folder (as written by `write_outputs`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"run folder not found: {folder}; pass the --out folder of `influent score`")
    path = folder / "run.json"
    if not path.is_file():
        raise InputError(f"{folder} has no run.json; is it the --out folder of `influent score`?")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise InputError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(record, dict) or "config" not in record:
        raise InputError(f"{path} has no 'config'; is it written by influent?")
    return record, RunConfig.from_dict(record["config"])


def absolute_inputs(record: dict[str, Any], cfg: RunConfig) -> RunConfig:
    """`cfg` with each data file given by a relative path replaced by the absolute path the run recorded
    (`run.json` "data"), so that a run folder can be used from any working directory."""
    files = record.get("data") or {}
    changes = {role: files[role]["path"] for role in ("train", "valid", "test")
               if getattr(cfg, role) and not Path(getattr(cfg, role)).is_absolute()
               and isinstance(files.get(role), dict) and files[role].get("path")}
    return dataclasses.replace(cfg, **changes)


def reload_train(folder: str | Path) -> tuple[dict[str, Any], RunConfig, Data, Scores]:
    """Re-read the training data of a finished run, check it is unchanged, and load its scores."""
    record, cfg = load_run(folder)
    cfg = absolute_inputs(record, cfg)
    scores = Scores.load(Path(folder) / "scores.parquet")
    data = load_data(cfg)
    want = record.get("data", {}).get("train", {}).get("fingerprint")
    got = data.train.fingerprint()
    if want and want != got:
        raise InputError(f"the training data {cfg.train} changed since it was scored (fingerprint {got} != {want}); "
                         "run influent score again")
    if len(scores) != len(data.train) or not np.array_equal(np.asarray(scores.ids).astype(str),
                                                            np.asarray(data.train.ids).astype(str)):
        raise InputError(f"{folder}/scores.parquet does not match the training data (ids differ); run influent score again")
    return record, cfg, data, scores


def frame_rows(data: Data, positions: np.ndarray) -> Any:
    """The original training rows at `positions` (a DataFrame, or a dict of NPZ arrays)."""
    frame = data.frames["train"]
    if isinstance(frame, pd.DataFrame):
        return frame.iloc[positions].reset_index(drop=True)
    n = len(data.train)
    return {k: (v[positions] if v.ndim >= 1 and v.shape[0] == n else v) for k, v in frame.items()}


def write_rows(path: str | Path, rows: Any) -> Path:
    """Write rows (a DataFrame: .csv/.parquet; NPZ arrays: .npz) atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if isinstance(rows, pd.DataFrame):
        if suffix == ".csv":
            return atomic_write(path, lambda p: rows.to_csv(p, index=False))
        if suffix in (".parquet", ".pq"):
            return atomic_write(path, lambda p: rows.to_parquet(p, index=False))
        raise InputError(f"{path}: write a table as .csv or .parquet, not {suffix or 'no suffix'!r}")
    if suffix != ".npz":
        raise InputError(f"{path}: the training data is NPZ, so write the result as .npz")

    def save(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **rows)

    return atomic_write(path, save)


def read_pool(cfg: RunConfig, pool: str, id_column: str | None = None) -> tuple[Split, Split, Any]:
    """The labelled training split of `cfg` and an unlabelled pool with the training features (other pool
    columns, a label included, are ignored; `id_column` names the pool's ids). Returns (train, pool, the
    pool as read)."""
    train, _, _ = _read_split(cfg.train, "train", cfg, None)
    p = Path(pool)
    if p.suffix.lower() == ".npz":
        arrays = _read_npz(p, "pool")
        check_columns(list(arrays), ["X"], "pool")
        X = arrays["X"]
        if id_column:
            check_columns(list(arrays), [id_column], "pool")
        split = Split(X, np.zeros(len(X), dtype=np.int64), None, arrays[id_column] if id_column else None, "pool")
        frame: Any = arrays
    else:
        df = read_table(p, "pool")
        df.columns = [str(c) for c in df.columns]
        features = train.columns or []
        check_columns(list(df.columns), list(features) + ([id_column] if id_column else []), "pool")
        dummy = "__influent_no_label__"
        split = from_frame(df.assign(**{dummy: 0}), dummy, None, id_column, features, "pool")
        frame = df
    check_feature_shape(split.X, train.X, "pool")
    return train, split, frame
