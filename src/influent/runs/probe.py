"""`influent plan`: the peak memory and the time of an `influent score` run, from shapes and a measured probe,
without fitting the model on the data and without writing anything.

1. Shapes, no memory: the model is built from its configuration; a network the run would build at `fit` time
   is built on torch's ``meta`` device, which gives every parameter's shape and allocates nothing. Training
   and scoring hold at least the weights, their gradients and Adam's two moments (4 p numbers) and one chunk of
   per-sample gradient rows (chunk x p). When these alone exceed the available memory, the plan says so and
   stops: nothing is built (a 100,000 x 100,000 hidden layer is never allocated).
2. Probe, measured: the run itself — fit (one epoch), score, the report's data — on row subsets of the training
   split, each in a forked child of this process (torch, the data and the model are already loaded, so a child
   starts in milliseconds). A child gives the C heap's free memory back (malloc_trim), resets its peak resident
   size (``/proc/self/clear_refs``) and reports the rise of ``VmHWM`` over its resident size at the start: the
   memory the run adds to a process that holds the data, under the same allocator settings as the run.
   Resident memory is the one measure that sees every allocator a run uses (torch's CPU allocator, numpy,
   pandas/Arrow, tokenizers) and how glibc's heap grows with them; torch's memory profiler sees only torch
   tensors, tracemalloc neither torch's allocator nor Arrow's. Three probes:
     a: n2 rows, chunk 64;  c: n3 rows, chunk 64   -> the memory per training row;
     b: fit on n2 rows (two epochs), then score min(chunk, n) rows at the run's own chunk size -> per chunk row.
   A rise of the rows' memory below `SIGNAL` between a and c is the allocator's noise as much as the rows':
   the memory per row is then at most 16 copies of a row's features and 4 KiB of its results.
   The run's chunk size is probed as it is (the factorised token path's blocks grow with it in steps, so a
   small chunk does not extrapolate), on only as many rows as one chunk. n2 is n / 48, at most the rows whose
   features fill `SIGNAL` / 8 bytes, at least 32; n3 adds those rows (at most n / 8) for a model that takes
   under 5 ms a row in probe a, else it is 2 n2 (a transformer's rows hold little beside its activations).
3. The estimate: the larger of the peak while reading the data (this process read it exactly as the run will)
   and the resident size after reading + the cost of importing torch and building the model + the probed
   fixed memory + per row x n + per chunk row x chunk size.
4. Time: probes a and b (one and two epochs on n2 rows) separate the fit's fixed time from its time per
   epoch, a and c give that time per row; scoring and the report take probe b's time per row (the run's chunk
   size), scaled to n.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.validate import InputError
from .config import RunConfig
from .inputs import Data

SIGNAL = 48 * 2**20  # bytes of features the larger probe should add: resident-size noise is a few MiB
N_MIN = 32  # rows of the smaller probes, at least (fewer when the data has fewer)
C_SMALL = 64  # chunk size of the probes that vary the rows
ROW_COPIES, ROW_RESULTS = 16, 4096  # a row's bytes, when the probes cannot resolve them: copies of its features
# and its results (scores, predictions, the report's columns)
GRAD_COPIES = 3  # per-sample gradients, their flattened rows, the product workspace (backends/planner.py)
ADAM_COPIES = 4  # weights, gradients and Adam's two moments


def rss() -> int:
    """This process's resident size in bytes (VmRSS)."""
    return _status("VmRSS")


def peak_rss() -> int:
    """This process's peak resident size in bytes (VmHWM)."""
    return _status("VmHWM")


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{key} not in /proc/self/status")


def trim() -> None:
    """Give the C heap's free memory back to the operating system (glibc's malloc_trim), so that what a probe
    allocates next raises the resident size instead of reusing memory freed earlier."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def reset_peak() -> bool:
    """Start this process's VmHWM afresh from its current resident size (Linux >= 4.0); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class RunPlan:
    """The plan of one `influent score` run: memory (bytes) and time (seconds), with how they were found."""

    n: int
    chunk_size: int
    n_params: int
    memory_bytes: int
    available_bytes: int | None
    terms: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    probes: list[dict[str, Any]] = field(default_factory=list)
    plan_seconds: float = 0.0
    refused: str | None = None  # why the run cannot fit, from the shapes alone (nothing was probed)

    def lines(self) -> list[str]:
        mb = lambda b: f"{b / 2**20:,.1f} MiB"
        out = [f"{'analysed parameters':<34} {self.n_params:>14,}"]
        out += [f"{name:<34} {mb(b):>14}" for name, b in self.terms.items()]
        out.append(f"{'peak memory (estimate)':<34} {mb(self.memory_bytes):>14}")
        if self.available_bytes is not None:
            out.append(f"{'available memory':<34} {mb(self.available_bytes):>14}")
        for name, s in self.seconds.items():
            out.append(f"{name:<34} {_duration(s):>14}")
        if self.probes:
            shown = ", ".join(f"{p['rows']}x{p['chunk']}" for p in self.probes)
            out.append(f"{'probes (rows x chunk)':<34} {shown:>14}")
        out.append(f"{'planned in':<34} {_duration(self.plan_seconds):>14}")
        if self.refused:
            out.append(f"does not fit: {self.refused}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _duration(s: float) -> str:
    return f"{s:,.1f} s" if s < 120 else (f"{s / 60:,.1f} min" if s < 7200 else f"{s / 3600:,.1f} h")


# ---- shapes ---------------------------------------------------------------------------------------------
def parameter_shapes(adapter: Any, train: Any) -> tuple[int, int, int]:
    """(trainable parameters of the whole model, analysed parameters, item size) of the model a run would
    fit, without allocating it: a module built at fit time is built on the ``meta`` device."""
    import torch

    from ..models import SklearnLogistic

    item = torch.empty((), dtype=adapter.dtype).element_size()
    if isinstance(adapter, SklearnLogistic):
        k = len(np.unique(train.y))
        p = (train.n_features + int(adapter.fit_intercept)) * (1 if k <= 2 else k)
        return p, p, item
    if adapter._builds_module():
        probe = adapter.__class__.__new__(adapter.__class__)
        probe.__dict__.update(adapter.__dict__)
        probe._set_classes(train.y)
        with torch.device("meta"):
            module = probe._make_module(train)
    else:
        module = getattr(adapter, "_template", None) or getattr(adapter, "_init_module", None) or adapter.module
    named = dict(module.named_parameters())
    trainable = sum(int(v.numel()) for v in named.values() if v.requires_grad)
    try:
        analysed = sum(int(named[n.split(".", 1)[1] if n not in named and "." in n else n].numel())
                       for n in adapter.param_names())
    except Exception:  # an adapter that resolves its parameters only once fitted
        analysed = trainable
    return trainable, analysed, item


def shapes_floor(trainable: int, analysed: int, item: int, chunk: int) -> dict[str, int]:
    """The memory every run of this model needs whatever else it does (bytes)."""
    return {"weights, gradients, Adam moments": ADAM_COPIES * trainable * item,
            "one chunk of gradient rows": chunk * analysed * item}


# ---- the probe ------------------------------------------------------------------------------------------
def subset_data(data: Data, rows: np.ndarray) -> Data:
    """The run's data restricted to training rows `rows` (validation and test splits whole)."""
    frames = dict(data.frames)
    train_frame = frames.get("train")
    if train_frame is not None:
        frames["train"] = (train_frame.iloc[rows] if hasattr(train_frame, "iloc") else
                           {k: (v[rows] if getattr(v, "ndim", 0) >= 1 and v.shape[0] == len(data.train) else v)
                            for k, v in train_frame.items()})
    pick = lambda a: None if a is None else a[rows]
    return dataclasses.replace(data, train=data.train.subset(rows), text=pick(data.text), clean=pick(data.clean),
                               frames=frames, raw_X=pick(data.raw_X))


def probe_rows(y: np.ndarray, m: int, seed: int) -> np.ndarray:
    """`m` training rows, every class kept (the first row of each class, then random others), sorted."""
    n = len(y)
    if m >= n:
        return np.arange(n)
    first = np.unique(y, return_index=True)[1] if np.asarray(y).ndim == 1 else np.array([0])
    rest = np.setdiff1d(np.arange(n), first)
    extra = np.random.default_rng(seed).choice(rest, max(0, m - len(first)), replace=False)
    return np.sort(np.concatenate([first, extra]))[:max(m, len(first))]


def _trains_epochs(cfg: RunConfig) -> bool:
    return cfg.model != "logistic"


def _probe_config(cfg: RunConfig, chunk: int, folder: str, epochs: int = 1) -> RunConfig:
    opts = dict(cfg.model_options)
    if _trains_epochs(cfg):
        opts["epochs"] = int(epochs)
    return dataclasses.replace(cfg, chunk_size=int(chunk), model_options=opts,
                               store=os.path.join(folder, "store") if cfg.store else None)


def run_probe(cfg: RunConfig, data: Data, model: Any, rows: np.ndarray, chunk: int, epochs: int = 1,
              fit_rows: np.ndarray | None = None) -> dict[str, Any]:
    """Run the scoring pipeline on training rows `rows` with chunk size `chunk` (training `epochs`) in a forked
    child; returns {"rows", "chunk", "epochs", "extra": peak resident bytes above the child's start,
    "seconds", "timings": {step: seconds}}. `model` is the run's unfitted model (the child fits its copy), on
    `fit_rows` when given (then timed as the step "fit"), else on `rows`."""
    from .pipeline import run_score
    from .steps import Steps

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report through the pipe, never return into the caller's code
        code = 0
        try:
            os.close(read)
            # One thread: the parent's OpenMP team does not survive fork (GNU libgomp's children wait forever at
            # the first parallel region's barrier), and with one thread torch runs every region inline.
            import torch

            torch.set_num_threads(1)
            sub = subset_data(data, rows)
            with tempfile.TemporaryDirectory(prefix="influent-plan-") as folder:
                probe_cfg = _probe_config(cfg, chunk, folder, epochs)
                if _trains_epochs(cfg) and getattr(model, "train_config", None) is not None:
                    model.train_config = dataclasses.replace(model.train_config, epochs=int(epochs))
                trim()
                reset_peak()
                start = rss()
                t0 = time.perf_counter()
                steps = Steps()
                if fit_rows is not None:
                    with steps.step("fit"):
                        model.fit(data.train.subset(fit_rows))
                run_score(probe_cfg, sub, steps, model=model, stage=Path(folder))
                result = {"rows": int(len(rows)), "chunk": int(chunk), "epochs": int(epochs), "extra": max(0, peak_rss() - start),
                          "seconds": time.perf_counter() - t0, "timings": dict(steps.timings)}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
            result = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]}
            code = 1
        try:
            with os.fdopen(write, "w") as f:
                f.write(json.dumps(result))
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    try:
        result = json.loads(text)
    except ValueError:
        raise InputError(f"the plan's probe on {len(rows)} rows ended without a result (killed, perhaps for "
                         "memory); lower --chunk-size") from None
    if "error" in result:
        if result["error"].startswith(("InputError", "ValueError")):
            raise InputError(result["error"].split(": ", 1)[1])
        raise InputError(f"the plan's probe on {len(rows)} rows failed: {result['error']}")
    return result


def _fit_steps(timings: dict[str, float]) -> tuple[float, float]:
    """(seconds of training: the fit and the removal curve's refits, seconds of the rest)."""
    fit = sum(v for k, v in timings.items() if k.startswith("fit") or k == "removal curve")
    return fit, sum(timings.values()) - fit


def plan_run(cfg: RunConfig, data: Data, load_peak: int, loaded: int) -> RunPlan:
    """The `RunPlan` of `influent score` with settings `cfg` on `data`, read by this process (`load_peak`:
    its VmHWM after reading, `loaded`: its VmRSS then)."""
    from ..backends.planner import available_memory
    from ..models.factory import build_model

    t_start = time.perf_counter()
    trim()  # the run's additions are measured above the data as held, without the reader's freed buffers
    loaded = min(loaded, rss())
    n, chunk = len(data.train), int(cfg.chunk_size)
    available = available_memory()
    probe_cfg = _probe_config(cfg, chunk, "")
    model = build_model(cfg.model, probe_cfg.model_options, data.train, cfg.seed)  # not fitted: nothing allocated
    trainable, analysed, item = parameter_shapes(model, data.train)
    floor = shapes_floor(trainable, analysed, item, min(chunk, n))
    need = loaded + sum(floor.values())
    if available is not None and need > available:
        return RunPlan(n, chunk, analysed, need, available, {"data as read": loaded, **floor}, {}, [],
                       time.perf_counter() - t_start,
                       refused=f"the model's {trainable:,} parameters alone need {need / 2**30:,.1f} GiB; use "
                               "a smaller model (--hidden) or a smaller --chunk-size")
    import torch  # noqa: F401 - imported here so that its cost is measured once, outside the probes
    import torch._dynamo  # noqa: F401 - imported by the optimizer's first step (2-4 s)

    from . import pipeline, summary  # noqa: F401
    from ..api import verbs  # noqa: F401
    from ..report import html  # noqa: F401

    built = rss()
    grad_row = GRAD_COPIES * analysed * item  # per chunk row, at least: the gradient rows and their copies
    data_row = max(1, int(data.train.X[:1].nbytes))
    signal_rows = SIGNAL // (8 * data_row)  # rows whose features fill SIGNAL / 8 bytes
    n2 = int(min(n, max(N_MIN, min(n // 48, signal_rows))))
    c_small, c_big = min(C_SMALL, n2, chunk), min(chunk, n)
    rows2 = probe_rows(data.train.y, n2, cfg.seed)
    a_ = run_probe(cfg, data, model, rows2, c_small)
    # the memory per row needs rows enough to show; an expensive model (a transformer: > 5 ms a row) gets
    # twice n2, its rows' memory being small beside its activations
    cheap = a_["seconds"] / n2 < 0.005
    n3 = int(min(n, max(2 * n2, min(n // 8, n2 + signal_rows) if cheap else 0)))
    c_ = run_probe(cfg, data, model, probe_rows(data.train.y, n3, cfg.seed), c_small) if n3 > n2 else None
    rise = c_["extra"] - a_["extra"] if c_ is not None else 0
    per_row = max(0.0, rise / (n3 - n2)) if c_ is not None else 0.0
    if rise < SIGNAL:  # within the allocator's noise (tens of MiB): at most what a row's own arrays can hold
        per_row = min(per_row, ROW_COPIES * data_row + ROW_RESULTS)
    b_ = None
    if c_big > c_small:  # the run's own chunk size, scored on as many rows, after a two-epoch fit on n2 rows
        m = max(n2, c_big)
        b_ = run_probe(cfg, data, model, probe_rows(data.train.y, m, cfg.seed), c_big,
                       2 if _trains_epochs(cfg) else 1, fit_rows=rows2)
    probes = [p for p in (a_, b_, c_) if p is not None]
    # probe b ran the run's own chunk size: what it needs beyond probe a, less its rows' share, is the chunk's
    chunk_mem = max(0.0, b_["extra"] - a_["extra"] - per_row * (b_["rows"] - n2)) if b_ else 0.0
    fixed = a_["extra"] - per_row * n2
    c_run = min(chunk, n)
    terms = {"process after reading the data": loaded, "torch, libraries and the model": max(0, built - loaded),
             f"run: fixed, with a chunk of {c_small:,} rows": int(max(0.0, fixed)), f"run: {n:,} rows": int(per_row * n)}
    if b_:
        terms[f"run: a chunk of {c_run:,} rows instead"] = int(chunk_mem)
    estimate = max(load_peak, int(sum(terms.values())))
    seconds = _time(cfg, a_, b_, c_, n)
    return RunPlan(n, chunk, analysed, estimate, available, terms, seconds,
                   [{k: p[k] for k in ("rows", "chunk", "extra", "seconds")} for p in probes],
                   time.perf_counter() - t_start)


def _time(cfg: RunConfig, a_: dict[str, Any], b_: dict[str, Any] | None, c_: dict[str, Any] | None,
          n: int) -> dict[str, float]:
    """The run's fit and scoring times from the probes' step timings. Probes a (n2 rows, one epoch) and b (n2
    rows, two epochs, the run's chunk size) separate the fit's fixed time from its time per epoch; a and c
    (2 n2 rows) give the time per epoch per row. Scoring and the report: probe b's time (the run's chunk
    size) per row, scaled to n."""
    epochs = int(cfg.model_options.get("epochs") or (3 if cfg.model == "lora" else 100)) if _trains_epochs(cfg) else 1
    fit_a, rest_a = _fit_steps(a_["timings"])
    fixed_fit = max(0.0, 2 * fit_a - b_["timings"].get("fit", 0.0)) if b_ is not None and b_["epochs"] == 2 else 0.0
    epoch = lambda p: max(0.0, _fit_steps(p["timings"])[0] - fixed_fit) / p["epochs"]
    if c_ is not None:
        rate = max(0.0, (epoch(c_) - epoch(a_)) / (c_["rows"] - a_["rows"]))
        per_epoch = epoch(c_) + rate * (n - c_["rows"])
    else:
        per_epoch = epoch(a_) * n / a_["rows"]
    fit = fixed_fit + epochs * per_epoch
    scoring = (b_ or a_)  # b: the run's chunk size
    other = sum(v for k, v in scoring["timings"].items() if not k.startswith("fit")) * n / scoring["rows"]
    return {"fit (estimate)": fit, "score and report (estimate)": other, "run (estimate)": fit + other}
