"""The Ray backend: per-sample training gradients computed by Ray actors, one model load each, written
chunk by chunk to the shared zarr gradient store; the method then reduces on the driver from the store.

Which cluster: Ray's usual settings -- an already initialised Ray, else ``ray.init()``, which joins the
cluster named by ``RAY_ADDRESS`` and otherwise starts a local Ray. The store folder must be visible to
every node (a shared filesystem on a real cluster; the default is a temporary folder of the driver, enough
for a single machine, removed once the method has read it). Actors are spread over the nodes (`SPREAD`), one per CPU unless `workers` is
given; a worker that dies is restarted and its task retried (``max_restarts``, ``max_task_retries``), and
since a chunk is marked done only after its rows are written, a retried chunk is simply rewritten: the
result is unchanged.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..data import Split
from ..data.validate import require
from ..models.base import ModelAdapter

INSTALL = 'pip install "influent[ray]"'


def _ray():
    return require("ray", "the Ray backend", "Ray", INSTALL)


def _worker_class(ray):
    @ray.remote(num_cpus=1, max_restarts=3, max_task_retries=3)
    class GradientWorker:
        """Holds one copy of the model and the training split; computes and writes gradient chunks."""

        def __init__(self, model: ModelAdapter, train: Split, chunk_size: int, store: str, method: str,
                     projection: Any, on_chunk: Callable[[int], None] | None) -> None:
            import torch

            from ..grads.source import GradientSource

            torch.set_num_threads(1)
            self.src = GradientSource(model, train, chunk_size, store, method, None, projection)
            self.on_chunk = on_chunk

        def fill(self, ci: int) -> tuple[int, str]:
            """Compute and write chunk `ci`; return (ci, this node's id)."""
            import ray as _r

            store = self.src.store
            assert store is not None
            if not store.done[ci]:
                if self.on_chunk is not None:
                    self.on_chunk(ci)
                store.write(ci, self.src.compute(store.rows(ci)).cpu().numpy())
            return ci, _r.get_runtime_context().get_node_id()

    return GradientWorker


def prepare(model: ModelAdapter, train: Split, options: dict[str, Any], chunk_size: int,
            store: str | Path | None, workers: int | None = None, progress: Callable[[int, int], None] | None = None,
            on_chunk: Callable[[int], None] | None = None) -> tuple[str | Path, dict[str, Any]]:
    """Fill the gradient store of (model, train) with Ray actors; return (store folder, backend settings).

    Parameters
    ----------
    options : the method options (`grad_method` and `projection` decide what is stored)
    store : the store folder (default: a temporary folder of the driver)
    workers : number of actors (default: the cluster's CPUs)
    on_chunk : called by a worker before it computes a chunk (a hook for fault-injection tests)
    """
    ray = _ray()
    from ..grads.source import GradientSource

    if not ray.is_initialized():
        src_dir = str(Path(__file__).resolve().parents[2])  # the influent the driver runs, for the workers
        path = os.pathsep.join(p for p in (src_dir, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}},
                 log_to_driver=False)
    root = Path(store) if store is not None else Path(tempfile.mkdtemp(prefix="influent-ray-store-"))
    method = options.get("grad_method", "auto")
    projection = options.get("projection")
    local = GradientSource(model, train, chunk_size, root, method, None, projection)  # creates the store
    assert local.store is not None
    missing = local.store.missing()
    n_workers = int(workers or max(1, int(ray.cluster_resources().get("CPU", 1))))
    n_workers = max(1, min(n_workers, len(missing) or 1))
    m_ref, t_ref = ray.put(model), ray.put(train)
    Worker = _worker_class(ray)
    actors = [Worker.options(scheduling_strategy="SPREAD").remote(m_ref, t_ref, chunk_size, str(root), method,
                                                                   projection, on_chunk) for _ in range(n_workers)]
    pending = [actors[k % n_workers].fill.remote(ci) for k, ci in enumerate(missing)]
    nodes: set[str] = set()
    done = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ci, node in ray.get(ready):
            nodes.add(node)
            done += 1
            if progress is not None:
                progress(done, len(missing))
    for a in actors:
        ray.kill(a)
    if not local.store.is_complete():  # pragma: no cover - a worker wrote without marking
        raise RuntimeError(f"the Ray workers left chunks {local.store.missing()} of {root} unwritten")
    return root, {"backend": "ray", "workers": n_workers, "nodes": sorted(nodes), "chunks_computed": len(missing),
                  "temporary_store": store is None}
