"""Typed method options: each method declares its options as a dataclass of `MethodOptions`.

A field carries its type, its default and a one-line doc (`opt(default, doc)`); `__post_init__` checks the
values (a one-line `InputError` each). Shared groups are base classes: `GradOptions` (how per-sample
gradients are formed), `ProjectionOptions` (a random projection: a method takes
`projection=` exactly when its options dataclass derives from it), `SolverOptions` (the curvature solver of the influence-function family) and
`CheckpointOptions` (recorded training checkpoints).

`build_options` turns the keyword options of `influent.score` / `influent.attribute` into the dataclass; an
unknown name is "method 'x' does not take option(s) [...]". The built object records which fields the
method body reads, so that an option the chosen variant never reads (e.g. ``nu`` with
``detector="l2"``) is rejected the same way after the run (`unread`).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ..data.validate import InputError, check_choice, check_damping
from ..grads.source import GRAD_METHODS



def opt(default: Any, doc: str) -> Any:
    """A dataclass field with `default` and a one-line `doc` (a mutable default is copied per instance)."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class MethodOptions:
    """The options of a method that takes none; the base of every options dataclass."""

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            d = object.__getattribute__(self, "__dict__")
            read = d.get("_read")
            if read is not None and name in d:
                read.add(name)
        return object.__getattribute__(self, name)

    def __post_init__(self) -> None:
        pass

    def settings(self) -> dict[str, Any]:
        """The options as saved with the scores: every field (as `dataclasses.asdict`, without copying the
        values) except `checkpoints` (the recorded parameters are not settings)."""
        d = object.__getattribute__(self, "__dict__")
        return {f.name: d[f.name] for f in fields(self) if f.name != "checkpoints"}

    def unread(self) -> list[str]:
        """The options the caller gave that the method never read (sorted)."""
        d = object.__getattribute__(self, "__dict__")
        return sorted(set(d.get("_given", ())) - set(d.get("_read", ())) - {"checkpoints"})

    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """One row per option: name, type, default, doc (for `influent methods NAME`)."""
        rows = []
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            rows.append({"name": f.name, "type": str(f.type), "default": default, "doc": f.metadata.get("doc", "")})
        return rows


def build_options(method: str, cls: type | None, given: dict[str, Any]) -> MethodOptions:
    """`cls(**given)` with the one-line errors of an unknown option; the result tracks its reads.

    Two options are ignored by a method without them, as before typed options: `checkpoints` (suites hand
    recorded checkpoints to every method) and ``projection=None`` (no projection, every method's default)."""
    cls = cls or MethodOptions
    names = {f.name for f in fields(cls)}
    given = {k: v for k, v in given.items()
             if k in names or not (k == "checkpoints" or (k == "projection" and v is None))}
    unknown = sorted(set(given) - names)
    if unknown:
        raise InputError(f"method {method!r} does not take option(s) {unknown}")
    built = cls(**given)
    d = object.__getattribute__(built, "__dict__")
    d["_given"], d["_read"] = set(given), set()
    return built


def check_params(value: Any, name: str = "params") -> Any:
    """`value` if it is a parameter spec ('auto', 'all', 'last', a module name or a list of module names), else a
    one-line `InputError` (the names themselves are checked against the model when the method runs)."""
    names = isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)
    if isinstance(value, str) or names:
        return value
    raise InputError(f"{name} must be 'auto', 'all', 'last' or module names, got {value!r}")


# ---- shared groups -----------------------------------------------------------------------------------
@dataclass
class GradOptions(MethodOptions):
    """How the per-sample gradients are formed."""

    grad_method: str = opt("auto", "per-sample gradients: 'auto' (factorised for linear layers, else vmap), "
                                   "'factorised', 'vmap' or 'loop'")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.grad_method, GRAD_METHODS, "grad_method")


@dataclass
class ProjectionOptions(GradOptions):
    """A random projection of the gradients (`grads.projection.make_projection`)."""

    projection: Any = opt(None, "random projection of the gradients: a spec such as {'kind': 'rademacher', "
                                "'dim': 256, 'seed': 0}, a Projection, or None (the full gradients)")


@dataclass
class SolverOptions(MethodOptions):
    """The curvature solver ``(H + damping I)^-1`` (`Job.solver`)."""

    solver: str | None = opt(None, "curvature solver from influent.curvature.SOLVERS; None: 'exact' on a convex "
                                   "model, 'ekfac' (or the exact Gauss-Newton) on a non-convex one")
    damping: float | None = opt(None, "added to the curvature's diagonal; None: 0 on a convex model, the "
                                      "damping rule (1.0 x mean eigenvalue, curvature.policy.DAMPING_FACTOR) on a non-convex one")
    solver_options: dict | None = opt(None, "keyword options of the solver, e.g. {'tol': 1e-6}")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.damping is not None:
            self.damping = check_damping(self.damping)
        if self.solver_options is not None and not isinstance(self.solver_options, dict):
            raise InputError("solver_options must be a JSON object such as {\"tol\": 1e-6}, "
                             f"got {self.solver_options!r}")


@dataclass
class CheckpointOptions(MethodOptions):
    """Recorded training checkpoints."""

    checkpoints: Any = opt(None, "training checkpoints (a TrainingRecorder or a list of Checkpoint); None: "
                                 "the recorder the model was fitted with")

    def __post_init__(self) -> None:
        super().__post_init__()
        ck = self.checkpoints
        items = getattr(ck, "checkpoints", ck)  # a recorder holds its list in `.checkpoints`
        if ck is not None and not (isinstance(items, (list, tuple))
                                   and all(hasattr(c, "params") and hasattr(c, "lr") for c in items)):
            raise InputError("checkpoints must be a TrainingRecorder or a list of Checkpoint(step, lr, params), "
                             f"got {type(ck).__name__}")
