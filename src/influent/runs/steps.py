"""`Steps`: the named, timed steps of a run, with an optional progress display."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator


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
