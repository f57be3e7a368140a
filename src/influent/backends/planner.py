"""The scoring step's memory check: before scoring, estimate the step's peak working memory and its disk use
from the method, the sizes (n, p, features) and the chunking, and refuse a run whose estimate exceeds the
available memory. It counts the step's arrays, not the forward and backward passes' activations or the
pipeline's copies of the data; `influent plan` (`runs/probe.py`) estimates a whole run from shapes and a
measured probe.

The estimate is the memory a `score` call adds to a process that already holds the data and the model: the
terms below, each a count of array entries times the item size (the constants are the number of live copies
measured for each path; `benchmarks`/tests compare the estimate with the measured peak):

- data tensors: the split's features as a tensor of the model's dtype (a copy when the dtypes differ);
- gradient chunk: ``chunk_size x p`` rows, x3 on the vmap / loop paths (the per-parameter gradients, their
  flattened copy and the product), on the factorised path the factors of one block (``factor_block_rows``:
  as many rows as fit chunk_size x p numbers, at most 65,536) times the sum of layer widths;
- projection: ``chunk_size x k`` rows plus the cached dense matrix (p x k when p k <= 2^24);
- the method's own terms, declared on its registry entry (`MethodSpec.memory`): e.g. the exact solver's
  (p, p) Hessian x4 (`HESSIAN_COPIES`: Hessian, its symmetrised copy, eigenvectors, workspace), the
  Isolation Forest's / One-Class SVM's whole (n, p or k) gradient matrix x2 (`MATRIX_COPIES`: the chunks and
  their concatenation);
- results: a few float64 vectors of length n.

The estimate counts allocations; the measured peak matches it when freed memory goes back to the operating
system (``MALLOC_MMAP_THRESHOLD_=65536``, as the planner test measures). With glibc's default dynamic
threshold, memory freed earlier in the process is reused, so the resident size grows by less than this.

Disk: the gradient store, ``n x p`` (or ``n x k``) entries when `store` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..data import Split
from ..data.validate import InputError
from ..models.base import ModelAdapter

GRAD_COPIES = 3  # vmap/loop path: per-parameter gradients, flattened rows, product workspace
HESSIAN_COPIES = 4
MATRIX_COPIES = 2  # the list of (B, p) chunks and their concatenation


@dataclass
class Plan:
    """Estimated peak working memory and disk of one run, with the terms that make it up (bytes)."""

    memory_bytes: int
    disk_bytes: int
    terms: dict[str, int] = field(default_factory=dict)
    available_bytes: int | None = None

    def lines(self) -> list[str]:
        mb = lambda b: f"{b / 2**20:,.1f} MiB"
        out = [f"{name:<28} {mb(b):>14}" for name, b in self.terms.items()]
        out.append(f"{'peak memory (estimate)':<28} {mb(self.memory_bytes):>14}")
        if self.available_bytes is not None:
            out.append(f"{'available memory':<28} {mb(self.available_bytes):>14}")
        out.append(f"{'disk (gradient store)':<28} {mb(self.disk_bytes):>14}")
        return out


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def estimate(adapter: ModelAdapter, train: Split, *, chunk_size: int = 512, store: Any = None,
             options: dict[str, Any] | None = None, extra: Callable[[int, int, int], dict[str, int]] | None = None) -> Plan:
    """The `Plan` of scoring `train` through `adapter` (the analysed view): the data tensors, one chunk of
    gradients (factorised or rows; projected with ``options["projection"]``), the results, and the method's
    own terms ``extra(n, dim, item)`` (its registry declaration, `methods.registry.MethodSpec.memory`), where
    dim is the gradient dimension after any projection."""
    from ..grads.linear import analyses_whole_model, factor_block_rows, linear_layers

    options = options or {}
    item = 8 if str(adapter.dtype).endswith("64") else 4
    n = len(train)
    p = adapter.n_params()
    d = int(train.X[0].size) if n else 0
    B = min(int(chunk_size), n)
    proj = options.get("projection")
    k = int(proj["dim"]) if isinstance(proj, dict) and "dim" in proj else None
    terms: dict[str, int] = {}
    x_item = train.X.dtype.itemsize
    terms["data tensors"] = n * d * item if x_item != item else 0
    layers = linear_layers(adapter) if options.get("grad_method", "auto") in ("auto", "factorised") else None
    if layers is not None and train.X.ndim == 2 and store is None and k is None:
        modules = dict(adapter._require_fitted().named_modules())
        width = sum(modules[name].in_features + 2 * modules[name].out_features for name in layers)  # k = 1
        rows = min(factor_block_rows(B, p, width, analyses_whole_model(adapter)), n)  # the block `GradientSource` takes for one direction
        terms["gradient chunk (factors)"] = 2 * rows * width * item
    else:
        terms["gradient chunk (rows)"] = GRAD_COPIES * B * p * item
    dim = p
    if k is not None:
        dim = k
        cached = p * k <= 1 << 24 and proj.get("kind", "sparse") != "sparse"
        terms["projection"] = B * k * item * 2 + (p * k * item if cached else 0)
    if extra is not None:
        terms.update(extra(n, dim, item))
    terms["results"] = 4 * n * 8
    disk = n * dim * item if store is not None else 0
    return Plan(int(sum(terms.values())), int(disk), terms, available_memory())


def check_plan(p: Plan) -> None:
    """Refuse, with a one-line `InputError` naming the option to change, a plan above the available memory."""
    if p.available_bytes is None or p.memory_bytes <= p.available_bytes:
        return
    worst = max(p.terms, key=p.terms.get)
    fix = {"gradient chunk (rows)": "lower --chunk-size", "gradient chunk (factors)": "lower --chunk-size",
           "exact solver (p x p)": "use --solver cg or ekfac, or analyse fewer parameters (--params last)",
           "gradient matrix (n x p)": "use -o detector=l2, or -o projection='{\"dim\": 256}'",
           "projection": "lower the projection dim", "data tensors": "use fewer samples or float32 features"}.get(worst, "lower --chunk-size")
    raise InputError(f"this run needs about {_size(p.memory_bytes)} (mostly the {worst}), more than the "
                     f"{_size(p.available_bytes)} available: {fix}")


def _size(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"
