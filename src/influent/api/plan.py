"""`plan`: the scoring step's memory and disk estimate of one `influent.score` call, read from the method's
registry declaration (`MethodSpec.view`, `MethodSpec.memory`) and `backends.planner.estimate`."""

from __future__ import annotations

from typing import Any

from ..backends.planner import Plan, estimate
from ..data import Split
from ..methods import DEFAULT_METHOD, METHODS
from ..models.base import ModelAdapter


def plan(model: ModelAdapter, train: Split, target: Any = None, method: str = DEFAULT_METHOD, *,
         chunk_size: int = 512, store: Any = None, **options: Any) -> Plan:
    """The `Plan` of ``influent.score(model, train, target, method, chunk_size=..., store=..., **options)``."""
    spec = METHODS[METHODS.check(method)]
    view = spec.view(model, options) if spec.view is not None else model
    extra = None
    if spec.memory is not None:
        extra = lambda n, dim, item: spec.memory(view, options, n, dim, item)  # noqa: E731
    return estimate(view, train, chunk_size=chunk_size, store=store, options=options, extra=extra)
