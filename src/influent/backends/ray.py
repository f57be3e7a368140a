"""The Ray backend: every method's shard kernels and every refit run as Ray tasks.

`RayExecutor` is the executor (`data.executor`) of a call made with ``backend="ray"``. The training split is
cut into contiguous shards, each put into Ray's object store once (a worker fetches only the shards it
works on: its memory is bounded by a shard, not the split); the model is put once per call. A method's
gradient products (`grads.source`'s shard kernels: products with a few directions, norms, per-sample scores) run as one
task per shard and return their small results; refits (`models.refit.refit_many`) run as tasks too. No
per-sample gradients cross the network unless a method reads the gradients themselves (then
``gradient_bytes`` in the settings counts them; docs/scale.md lists those methods).

Which cluster: ``address`` (``backend_options={"address": ...}``, ``--ray-address``), else ``RAY_ADDRESS``,
else a Ray started on this machine for the process. The installed influent is shipped to the workers with
Ray's runtime environment (``py_modules``), and a first task on the cluster checks that it imports there.

Faults: tasks, not pinned actors. A task whose worker or node dies is retried by Ray on another node
(``retries``); a period in which no task finishes for ``task_timeout`` seconds (or twice the longest task
finished so far in the call, when longer) submits the unfinished ones again and takes whichever copy finishes
first (no hang); a failure that persists is one line
(`ClusterError`, an `InputError`: the CLI exits 2).
"""

from __future__ import annotations

import os
import socket
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..data import Split
from ..data.validate import InputError, check_number, require

INSTALL = 'pip install "influent[ray]"'
PACKAGE = Path(__file__).resolve().parents[1]  # the influent package the driver runs: shipped to the workers
OPTIONS = ("address", "workers", "shards", "task_timeout", "retries")


class ClusterError(InputError):
    """The Ray cluster cannot run the work (unreachable, lost, or failing every retry): one line, exit 2."""


def _ray():
    return require("ray", "the Ray backend", "Ray", INSTALL)


def runtime_env() -> dict[str, Any]:
    """Ray's runtime environment of a job influent starts: this influent (so the workers run the driver's
    version, with or without it installed there) and one thread per task."""
    return {"py_modules": [str(PACKAGE)], "excludes": ["__pycache__", "*.pyc"],
            "env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}


def connect(address: str | None = None) -> Any:
    """`ray`, initialised: the running Ray of this process (its own runtime environment: the first task checks
    that it runs this influent), else the cluster at `address` / ``RAY_ADDRESS``, else a Ray started on this
    machine, with `runtime_env` (this influent shipped). An unreachable address is a `ClusterError`."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    import signal
    import threading

    address = address or os.environ.get("RAY_ADDRESS") or None
    _probe(address)
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ warnings stay out of the user's terminal
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        with _quiet_stderr():  # Ray's C++ core announces its log level on the process's stderr as it starts
            ray.init(address=address, runtime_env=runtime_env(), log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address!r}: {str(exc).splitlines()[0]}") from None
    finally:
        if main and before is not None:  # ray.init replaces SIGTERM's handler (exit 15): the caller's stays
            signal.signal(signal.SIGTERM, before)
    return ray


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 sent to /dev/null for the body (lines that native code writes there directly); Python
    exceptions still propagate."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _unreachable(address: str, timeout: float) -> str | None:
    """Why `address` (host:port) accepts no TCP connection within `timeout` seconds, or None when it does."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__


def _probe(address: str | None, timeout: float = 5.0) -> None:
    """A `ClusterError` when `address` (host:port) does not accept a connection: ray.init would retry for
    minutes, printing Ray's own log lines."""
    if not address or "://" in address or address == "auto" or ":" not in address:
        return
    why = _unreachable(address, timeout)
    if why is not None:
        raise ClusterError(f"cannot reach the Ray cluster at {address!r}: {why}")


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _run(fn: Callable[..., Any], *args: Any) -> tuple[Any, str, float]:
    """fn(*args) on a worker, single-threaded (a shard kernel, a refit task); returns (result, this node's id,
    the seconds fn took)."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    out = fn(*args)
    return out, _node(), time.perf_counter() - t0


def _version() -> tuple[str, str]:
    """The worker's influent version and folder, after importing what every kernel runs on (torch, the models,
    the gradient sources): a worker's first task does not pay for most of its imports."""
    import influent
    import influent.grads.source  # noqa: F401

    return influent.__version__, str(Path(influent.__file__).resolve().parent)


def shard_bounds(n: int, k: int, align: int = 1) -> np.ndarray:
    """(k' + 1,) row bounds of at most k shards of n rows, as equal as multiples of `align` allow: a shard's
    chunks of `align` rows are then the chunks the in-process code makes, so batched float32 products see the
    same rows together and give the same bits (cut anywhere, they differ by ~1e-7 and more after cancellation:
    Diff-In's terms 1e-5 on a 20,000-row MLP); empty shards are dropped."""
    cuts = (np.linspace(0, n, k + 1) / align).round().astype(np.int64) * align
    cuts[-1] = n
    return np.unique(np.clip(cuts, 0, n))


class RayExecutor:
    """Runs shard kernels and refit tasks on a Ray cluster (`data.executor.Executor`).

    Parameters
    ----------
    split : the training split whose work is distributed
    address : the cluster (see module docstring)
    workers : tasks in flight at once (default: the cluster's CPUs)
    shards : number of shards of `split` (default: one per worker, at most one per row; more shards balance
        uneven nodes and lower the memory of a task, at about 40 ms per extra task and round)
    task_timeout : seconds without any finished task after which the unfinished ones are submitted again
    retries : Ray's retries of a task whose worker or node died, and the number of timeout rounds
    """

    name = "ray"

    def __init__(self, split: Split, address: str | None = None, workers: int | None = None,
                 shards: int | None = None, task_timeout: float = 300.0, retries: int = 3,
                 align: int | None = None) -> None:
        check_number(workers, "backend_options workers", kind=int, low=1, none=True)
        check_number(shards, "backend_options shards", kind=int, low=1, none=True)
        check_number(task_timeout, "backend_options task_timeout", low=1e-3)
        check_number(retries, "backend_options retries", kind=int, low=0)
        self.split, self.address = split, address
        self.task_timeout, self.retries = float(task_timeout), int(retries)
        self._workers, self._n_shards = workers, shards
        self.align = int(check_number(align, "chunk size", kind=int, low=1, none=True) or 1)
        self.ray: Any = None  # connected on first use: a call that never needs the cluster never touches it
        self.stats: dict[str, Any] = {"tasks": 0, "resubmitted": 0, "bytes_sent": 0, "bytes_returned": 0,
                                      "gradient_bytes": 0, "task_seconds": 0.0, "nodes": set()}

    def _start(self) -> None:
        """Connect, cut the split into shards and check that the cluster runs this influent (once)."""
        if self.ray is not None:
            return
        ray = connect(self.address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = int(self._workers or max(1, cpus))
        n = len(self.split)
        k = max(1, min(n, int(self._n_shards or self.workers)))
        self.bounds = shard_bounds(n, k, self.align)
        self._remote = ray.remote(_run)
        self._opts = {"num_cpus": 1, "max_retries": self.retries}  # every task's: one CPU, Ray's retries
        self._run = self._remote.options(**self._opts, scheduling_strategy="SPREAD")  # a task without a preferred
        # node goes to the least busy one: Ray's default packs the first node while it has room, and short tasks
        # can all finish there before another node's worker has started
        self._shard_refs: list[Any] | None = None
        self._puts: dict[int, tuple[Any, Any]] = {}  # id(object) -> (object, ref): each sent once
        self.ray = ray
        self._gcs = _gcs_address(ray)
        self._check_cluster()

    # ---- the executor protocol ------------------------------------------------------------------------------
    def shards(self, split: Any) -> bool:
        return split is self.split

    def map_shards(self, kernel: Callable[..., Any], adapter: Any, split: Any, payload: Any,
                   progress: Callable[[int, int], None] | None = None) -> list[Any]:
        self._start()
        refs = self._shards()
        a, p = self._put(adapter), self.ray.put(payload)
        self.stats["bytes_sent"] += _nbytes(payload)
        homes = self._homes
        out = self._collect([lambda again=False, k=k, s=s: self._pinned(None if again else homes[k]).remote(kernel, a, s, p)
                             for k, s in enumerate(refs)], progress, homes)
        got = sum(_nbytes(x) for x in out)
        self.stats["bytes_returned"] += got
        if getattr(kernel, "__name__", "") == "_k_rows":
            self.stats["gradient_bytes"] += got
        return out

    def map_tasks(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any,
                  progress: Callable[[int, int], None] | None = None) -> list[Any]:
        self._start()
        refs = [self._put(x) for x in shared]
        out = self._collect([lambda again=False, it=it: self._run.remote(fn, it, *refs) for it in items], progress)
        self.stats["bytes_returned"] += sum(_nbytes(x) for x in out)
        return out

    def describe(self) -> dict[str, Any]:
        """What ran where and what crossed the network (saved with the scores)."""
        s = dict(self.stats)
        s["nodes"] = sorted(s["nodes"])
        if self.ray is None:
            return {"backend": "ray", **s}
        return {"backend": "ray", "workers": self.workers, "shards": len(self.bounds) - 1, **s}

    # ---- internals --------------------------------------------------------------------------------------------
    def _check_cluster(self) -> None:
        """A task per worker slot imports the shipped influent (so the workers start together, before the first
        round): else one line, before any work (once per Ray session of this process)."""
        import influent

        session = _session(self.ray)
        if session in _CHECKED:
            return

        f = self.ray.remote(_version).options(num_cpus=1, max_retries=self.retries, scheduling_strategy="SPREAD")
        try:  # one check per worker slot, spread over the nodes: every worker starts (imports) now, in parallel
            found = self.ray.get([f.remote() for _ in range(self.workers)], timeout=max(60.0, self.task_timeout))
        except Exception as exc:  # noqa: BLE001 - any failure here means the cluster cannot run influent
            line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"the Ray cluster cannot run influent {influent.__version__}: {line}") from None
        other = next((v for v, _ in found if v != influent.__version__), None)
        if other is not None:
            raise ClusterError(f"the Ray workers import influent {other}, the driver runs {influent.__version__}")
        _CHECKED.add(session)

    def _shards(self) -> list[Any]:
        """The shards' object references: put once per split and shard count in this process (a later call on
        the same split reuses them while Ray runs), so the data reaches the cluster once."""
        if self._shard_refs is None:
            key = (id(self.split), tuple(self.bounds.tolist()))
            hit = _SHARDS.get(key)
            if hit is not None and hit[0]() is self.split and hit[2] == _session(self.ray):
                self._shard_refs, self._homes = hit[1], hit[3]
            else:
                self._homes = [None] * (len(self.bounds) - 1)
                self._shard_refs = [self.ray.put(self.split.subset(np.arange(a, b)))
                                    for a, b in zip(self.bounds[:-1], self.bounds[1:])]
                self.stats["bytes_sent"] += _nbytes(self.split.X) + _nbytes(self.split.y)
                _SHARDS[key] = (weakref.ref(self.split, lambda _, k=key: _SHARDS.pop(k, None)), self._shard_refs,
                                _session(self.ray), self._homes)
        return self._shard_refs

    def _put(self, obj: Any) -> Any:
        """The object reference of `obj`, put once per call; a model goes without its training records
        (`ModelAdapter.for_workers`: the recorded checkpoints stay on the driver)."""
        hit = self._puts.get(id(obj))
        if hit is None or hit[0] is not obj:
            lean = getattr(obj, "for_workers", None)
            hit = (obj, self.ray.put(lean() if callable(lean) else obj))
            self._puts[id(obj)] = hit
        return hit[1]

    def _pinned(self, node: str | None) -> Any:
        """The remote task function, preferring `node` (soft affinity: the node that holds the shard's copy from
        an earlier call). Ray runs it elsewhere when that node is gone, unknown or busy: a soft affinity alone
        waits for a busy node (two shards whose copies are on one node would run one after the other while
        another node idles), so the task may spill (`_spill_on_unavailable`, where this Ray has it)."""
        if node is None:
            return self._run
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        try:
            where = NodeAffinitySchedulingStrategy(node, soft=True, _spill_on_unavailable=True)
        except TypeError:  # a Ray without the option
            where = NodeAffinitySchedulingStrategy(node, soft=True)
        return self._remote.options(**self._opts, scheduling_strategy=where)

    def _collect(self, submit: list[Callable[..., Any]], progress: Callable[[int, int], None] | None,
                 homes: list[str | None] | None = None) -> list[Any]:
        """Run every submitted task and return the results in order. A period without any finished task longer
        than the patience (`task_timeout`, or twice the longest task finished so far in this call when that is
        longer: a shard's task grows with the shard) submits the unfinished ones again; the first copy to finish
        wins and its other copies are cancelled at once (a copy is not pinned to a node). `homes`, when given,
        records the node that ran each task. KeyboardInterrupt cancels everything in flight."""
        ray = self.ray
        n = len(submit)
        results: list[Any] = [None] * n
        done = np.zeros(n, dtype=bool)
        owner = {submit[i](): i for i in range(n)}
        self.stats["tasks"] += n
        last, rounds, longest = time.monotonic(), 0, 0.0
        try:
            while not done.all():
                patience = max(self.task_timeout, 2.0 * longest)
                ready, _ = ray.wait(list(owner), num_returns=1, timeout=min(1.0, patience))
                if not ready:
                    self._check_head()
                    if time.monotonic() - last < patience:
                        continue
                    rounds += 1
                    if rounds > max(1, self.retries):
                        raise ClusterError(f"no task of the Ray backend finished in {rounds} rounds of "
                                           f"{patience:g} s ({int(done.sum())} of {n} done)")
                    for i in np.flatnonzero(~done):  # a stuck or lost task: run it again elsewhere
                        owner[submit[int(i)](True)] = int(i)
                        self.stats["resubmitted"] += 1
                    last = time.monotonic()
                    continue
                for ref in ready:
                    i = owner.pop(ref)
                    if done[i]:
                        continue
                    value, node, seconds = self._get(ref)
                    results[i], done[i] = value, True
                    for other in [r for r, j in owner.items() if j == i]:  # its copies: no longer needed
                        ray.cancel(other, force=True)
                        del owner[other]
                    self.stats["task_seconds"] += seconds
                    self.stats["nodes"].add(node)
                    if homes is not None:
                        homes[i] = node
                    longest = max(longest, seconds)
                    last, rounds = time.monotonic(), 0
                    if progress is not None:
                        progress(int(done.sum()), n)
        except BaseException as exc:
            for ref in owner:
                ray.cancel(ref, force=True)
            inner = _signal_inside(exc)
            if inner is not None:  # Ctrl-C / SIGTERM raised inside Ray's wait: the caller's exception, as itself
                raise inner from None
            raise
        return results

    def _check_head(self, tries: int = 3) -> None:
        """A `ClusterError` when the head node's control store (GCS) no longer answers: Ray itself would end
        this process a minute later with its own log line."""
        for _ in range(tries):
            if _unreachable(self._gcs, 1.0) is None:
                return
            time.sleep(0.5)
        raise ClusterError(f"lost the Ray head node at {self._gcs}: its control store does not answer")

    def _get(self, ref: Any) -> Any:
        """ray.get of one task: the task's own error as itself (an InputError stays one line), Ray's failures
        after every retry as one `ClusterError`."""
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except ray.exceptions.RayError as exc:
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"a Ray task failed (after up to {self.retries} retries): {line}") from None


_CHECKED: set[str] = set()  # Ray sessions whose workers were checked to run this influent
# (id(split), bounds) -> (weakref, shard refs, Ray session, the node that last ran each shard's task)
_SHARDS: dict[tuple, tuple[Any, list[Any], str, list[str | None]]] = {}


def _signal_inside(exc: BaseException) -> BaseException | None:
    """The exception a signal handler raised while Ray's Cython code ran (KeyboardInterrupt, the CLI's
    Interrupted: not an `Exception`), which Ray reports as a SystemError "returned a result with an exception
    set" caused by it; else None."""
    if isinstance(exc, SystemError):
        inner = exc.__cause__ or exc.__context__
        if inner is not None and not isinstance(inner, Exception):
            return inner
    return None


def _gcs_address(ray: Any) -> str:
    """host:port of the attached cluster's control store (GCS)."""
    try:
        return str(ray._private.worker.global_worker.node.gcs_address)
    except AttributeError:  # pragma: no cover - a Ray without this attribute: the address given
        return os.environ.get("RAY_ADDRESS", "127.0.0.1:6379")


def _session(ray: Any) -> str:
    """The Ray session this process is attached to (object references die with it): the cluster's control
    store, its session folder and this driver's job (job ids restart at 1 on every cluster)."""
    try:
        node = ray._private.worker.global_worker.node
        return f"{node.gcs_address}|{node.session_name}|{ray.get_runtime_context().get_job_id()}"
    except Exception:  # noqa: BLE001
        return ""


def _nbytes(x: Any) -> int:
    if isinstance(x, np.ndarray):
        return int(x.nbytes)
    if isinstance(x, (tuple, list)):
        return sum(_nbytes(v) for v in x)
    return 0


def executor(split: Split, options: dict[str, Any] | None = None, chunk_size: int | None = None) -> RayExecutor:
    """The executor of one call: `options` are ``backend_options`` (address, workers, shards, task_timeout,
    retries); an unknown one is a one-line `InputError`. `chunk_size`: the shards are cut at its multiples."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(f"backend_options for 'ray' takes {list(OPTIONS)}; unknown {unknown}")
    return RayExecutor(split, **options, align=chunk_size)
