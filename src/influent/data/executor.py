"""Where work over the training set runs: the executor of the current call.

Every method is work over shards of the training split followed by a reduction (docs/scale.md): a *kernel*
``kernel(adapter, shard, payload) -> small result`` (per-sample scores, products with a few directions,
partial sums) runs once per shard and the caller concatenates or sums the results. Refits are *tasks*
``fn(item, *shared)``. Where they run is decided once, at the edge (`influent.score(..., backend=...)`,
``influent --backend``): with no executor set (the default, ``backend="local"``) the caller runs its own
in-process code on the whole split (today's fast paths, no overhead); inside ``using(executor)`` the
mechanisms that read the training set hand their kernels and tasks to that executor (`backends.ray.RayExecutor`:
Ray tasks over shards): `grads.source.GradientSource` (gradient products, `member_losses`), the curvature
context's partial sums, `models.refit.refit_many`, and the few methods whose per-sample work is their own
(mislabel's last-layer features, FI's local influence, Diff-In's terms), each through `sharding(split)`.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Iterator, Protocol, Sequence

Kernel = Callable[[Any, Any, Any], Any]

CHUNK_SIZE = 512  # rows per chunk where a caller names none (the wrong-label detector's; a distributed executor
# cuts its shards at multiples of the call's chunk, so a call that runs the detector cuts at this one)


class Executor(Protocol):
    """Runs shard kernels and tasks somewhere other than this process's own loop."""

    name: str

    def shards(self, split: Any) -> bool:
        """Whether this executor distributes work over `split` (the training split it was made for)."""

    def map_shards(self, kernel: Kernel, adapter: Any, split: Any, payload: Any,
                   progress: Callable[[int, int], None] | None = None) -> list[Any]:
        """[kernel(adapter, shard_k, payload) for every shard k of `split`, in row order]; progress(done, total)
        after each shard."""

    def map_tasks(self, fn: Callable[..., Any], items: Sequence[Any], *shared: Any,
                  progress: Callable[[int, int], None] | None = None) -> list[Any]:
        """[fn(item, *shared) for item in items], in order; `shared` is sent once, not once per item."""


_CURRENT: ContextVar[Executor | None] = ContextVar("influent_executor", default=None)


def current() -> Executor | None:
    """The executor of the current call, or None (run in this process)."""
    return _CURRENT.get()


@contextmanager
def using(executor: Executor | None) -> Iterator[Executor | None]:
    """Run the body with `executor` as the current one (None: in this process)."""
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)


def sharding(split: Any) -> Executor | None:
    """The current executor if it distributes work over `split`, else None."""
    ex = current()
    return ex if ex is not None and ex.shards(split) else None
