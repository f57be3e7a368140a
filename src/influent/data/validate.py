"""Shared input checks: the one set of helpers every layer uses for user input, each raising a one-line
`InputError` that names the problem. The general ones: `check_choice` (a name among choices),
`check_number` (an int or float in a range), `check_fitted` (a fitted model), `check_shape` (an array's
shape); the rest are the data-specific checks built on them (features, labels, damping, budgets,
columns, output paths).

Each layer calls them where its input arrives (a solver's constructor, `TrainConfig`, `GradientSource`,
`ModelAdapter.check_split`, the verbs, the CLI); a check with its own wording (one no helper states) still
raises `InputError`. Every error a user can cause is an `InputError`; plain `ValueError`, `RuntimeError` and
`assert` mark internal invariants only."""

from __future__ import annotations

from typing import Any

import numpy as np


class InputError(ValueError):
    """Bad user input; the message is one line that names the problem (CLI exit code 2).

    ``InputError(problem, fix=..., hint=KEY)``: the message is "problem; fix", the fix in the library's terms
    (a Python call); `hint` names the kind of fix, so that a front end that knows its own wording for KEY
    (the command line's `influent.cli.CLI_FIXES`) says "problem; <its fix>" instead. Kept through pickling.
    """

    def __init__(self, message: str, *, fix: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{message}; {fix}" if fix else message)
        self.problem, self.hint = message, hint

    def message_for(self, fixes: dict[str, str]) -> str:
        """The message with the fix `fixes[self.hint]` where `fixes` has one for this error's hint."""
        fix = fixes.get(self.hint) if self.hint else None
        return f"{self.problem}; {fix}" if fix else str(self)


_OS_FIXES = {"ENOSPC": "free some space or write elsewhere", "EDQUOT": "free some space or write elsewhere",
             "ENAMETOOLONG": "use a shorter name (most filesystems allow 255 characters per name)",
             "EACCES": "choose a place you can write to", "EPERM": "choose a place you can write to",
             "EROFS": "the filesystem is read-only; write elsewhere",
             "EEXIST": "another run wrote it meanwhile: pass --force to replace it, or choose another name"}


def os_message(exc: OSError) -> str:
    """One line for an `OSError` raised while reading or writing: what failed, where, and the fix where one
    is known (a full disk, a name too long, no permission)."""
    import errno as _errno

    what = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    name = str(exc.filename) if exc.filename is not None else ""
    if len(name) > 120:
        name = name[:60] + "..." + name[-40:] + f" ({len(name)} characters)"
    fix = _OS_FIXES.get(_errno.errorcode.get(exc.errno or -1, ""), "")
    return f"{what}{': ' + name if name else ''}{'; ' + fix if fix else ''}"


def check_path(path: Any, name: str = "output") -> None:
    """Raise `InputError` if `path` cannot name a file here: a name (of it or of a folder to be created above
    it) longer than the filesystem allows, or what else `os.lstat` says other than "not found"."""
    import errno as _errno
    import os
    from pathlib import Path

    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        raise InputError(f"{name}: {os_message(exc)}") from None
    p = Path(os.path.abspath(path))
    base = next((q for q in p.parents if q.exists()), Path(p.anchor))
    try:
        longest = os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # pragma: no cover - no pathconf here
        longest = 255
    for part in p.relative_to(base).parts:
        if len(os.fsencode(part)) > longest:
            exc = OSError(_errno.ENAMETOOLONG, os.strerror(_errno.ENAMETOOLONG), part)
            raise InputError(f"{name}: {os_message(exc)} (in {path})" if len(str(path)) <= 120 else
                             f"{name}: {os_message(exc)}")


def require(module: str, what: str, need: str, install: str) -> Any:
    """Import and return the optional dependency `module`, or raise the one-line `InputError`
    "`what` needs `need`: `install`" that names the command to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{what} needs {need}: {install}") from None


def unknown_name(kind: str, value: Any, choices: Any) -> str:
    """The one wording of an unknown name: "unknown <kind> 'x'; choose one of [...]" (registries and
    `check_choice(..., unknown=kind)` use it)."""
    return f"unknown {kind} {value!r}; choose one of {list(choices)}"


def check_choice(value: Any, choices: Any, name: str, *, unknown: str | None = None) -> Any:
    """`value` if it is one of `choices`, else "`name` must be one of [...], got 'x'" -- or, for a name that
    picks a thing of kind `unknown` (a detector, a projection kind), `unknown_name(unknown, value, choices)`."""
    choices = list(choices)
    if value not in choices:
        raise InputError(unknown_name(unknown, value, choices) if unknown else
                         f"{name} must be one of {choices}, got {value!r}")
    return value


def check_number(value: Any, name: str, *, kind: type = float, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, none: bool = False) -> Any:
    """`value` as `kind` (int or float), finite and within [low, high] (an end is excluded when `low_open` /
    `high_open`; None means unbounded); `None` passes when `none`. Else a one-line `InputError`."""
    if value is None and none:
        return None
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    span = f"in {lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    want = "an integer" if kind is int else "a number"
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a numpy scalar or a 0-d array / tensor
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be {want} {span}, got {value!r}")
    if kind is int and isinstance(value, str):
        value = value.strip()
        value = int(value) if value.lstrip("+-").isdigit() else value
    if kind is int and not isinstance(value, (int, np.integer)):
        if not isinstance(value, (float, np.floating)) or not float(value).is_integer():
            raise InputError(f"{name} must be {want} {span}, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be {want} {span}, got {value!r}") from None
    if kind is float and not np.isfinite(number):
        raise InputError(f"{name} must be a finite number {span}, got {value!r}")
    if (low is not None and (number < low or (low_open and number == low))) or \
            (high is not None and (number > high or (high_open and number == high))):
        raise InputError(f"{name} must be {want} {span}, got {value!r}")
    return number


def check_fitted(model: Any, what: str = "model") -> Any:
    """`model` if it is fitted (``model.fitted``, or scikit-learn's trailing-underscore attributes), else
    "`Type` is not fitted; call .fit(train) first"."""
    fitted = getattr(model, "fitted", None)
    if fitted is None:
        fitted = any(k.endswith("_") and not k.startswith("_") for k in vars(model)) if hasattr(model, "__dict__") else True
    if not fitted:
        raise InputError(f"{what} {type(model).__name__} is not fitted; call .fit(train) first")
    return model


def check_shape(array: Any, shape: tuple, name: str) -> Any:
    """`array` if its shape matches `shape` (an entry None matches any size; -1 too), else
    "`name` has shape (a, b), expected (n, None)"."""
    got = tuple(np.shape(array))
    ok = len(got) == len(shape) and all(w is None or w == -1 or int(w) == g for g, w in zip(got, shape))
    if not ok:
        want = "(" + ", ".join("any" if w in (None, -1) else str(w) for w in shape) + ("," if len(shape) == 1 else "") + ")"
        raise InputError(f"{name} has shape {got}, expected {want}")
    return array


def check_features(X: Any, name: str = "features") -> np.ndarray:
    """Return `X` as a float array of shape (n, ...) or raise `InputError`."""
    try:
        arr = np.asarray(X)
    except Exception as exc:  # pragma: no cover - numpy raises many kinds
        raise InputError(f"{name}: cannot convert to an array ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{name}: values must be numeric, got dtype {arr.dtype}; encode categorical columns first")
    arr = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32, copy=False)
    if arr.ndim < 2:
        raise InputError(f"{name}: expected shape (n_samples, n_features...), got {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{name}: the set is empty (0 samples)")
    return check_finite(arr, name)


def check_finite(arr: np.ndarray, name: str = "features") -> np.ndarray:
    """`arr` (n, ...) if every value is finite, else "`name`: NaN or infinite value at row i, column j" (the
    first such entry, the features flattened per row)."""
    if arr.dtype.kind in "biu" or (arr.dtype.kind == "f" and np.isfinite(np.sum(arr))):
        return arr  # NaN and inf propagate through a sum: a finite sum means every entry is finite (one pass)
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(np.reshape(arr, (arr.shape[0], -1))))[0]
        raise InputError(f"{name}: NaN or infinite value at row {bad[0]}, column {bad[1]}")
    return arr


def check_labels(y: Any, n: int, name: str = "labels") -> np.ndarray:
    """Return labels as a 1-D array of length `n` or raise `InputError`."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        else:
            raise InputError(f"{name}: expected a 1-D label vector, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"{name}: {arr.shape[0]} labels for {n} samples")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name}: NaN label at row {int(np.argmax(~np.isfinite(arr)))}")
        if np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
    elif arr.dtype == object:
        if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in arr):
            raise InputError(f"{name}: missing label value")
        arr = arr.astype(str)
    return arr


def check_same_length(n: int, values: Any, name: str) -> np.ndarray:
    """Return `values` as a 1-D array of length `n` or raise `InputError`."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"{name}: expected {n} values, got shape {arr.shape}")
    return arr


def check_known_labels(y: np.ndarray, classes: np.ndarray, name: str = "labels") -> None:
    """Raise `InputError` if `y` holds a label outside `classes`."""
    if _consecutive(y, classes) is not None:
        return
    unknown = np.setdiff1d(np.unique(y), classes)
    if unknown.size:
        raise InputError(f"{name}: unknown label(s) {unknown[:5].tolist()}; the model knows {classes.tolist()}")


def _consecutive(y: np.ndarray, classes: np.ndarray) -> int | None:
    """The first class when `classes` are the consecutive integers start..start+K-1 in order and every
    integer label of `y` lies among them (two passes, no sort); None otherwise."""
    y, classes = np.asarray(y), np.asarray(classes)
    if y.dtype.kind not in "iu" or classes.dtype.kind not in "iu" or classes.ndim != 1 or not classes.size:
        return None
    start = int(classes[0])
    if not np.array_equal(classes, np.arange(start, start + classes.size)):
        return None
    if y.size and (int(y.min()) < start or int(y.max()) >= start + classes.size):
        return None
    return start


def class_codes(y: Any, classes: Any, name: str = "labels") -> np.ndarray:
    """(n,) int64 position of each label of `y` in `classes`, the model's classes in the order of its output
    columns (any order: ``[1, 0]``, ``["good", "bad"]``, ``[0, 2, 1]``). The one mapping from a class value to
    its column; a label outside `classes` is a one-line `InputError` (`check_known_labels`)."""
    classes = np.asarray(classes)
    y = np.asarray(y)
    start = _consecutive(y, classes)
    if start is not None:  # integer labels and classes start..start+K-1 in order: the code is y - start
        return y.astype(np.int64) - start
    check_known_labels(y, classes, name)
    order = np.argsort(classes, kind="stable")
    return order[np.searchsorted(classes, y, sorter=order)].astype(np.int64)


def check_class_labels(y: np.ndarray, name: str = "labels") -> None:
    """Raise `InputError` when labels meant for a classifier are continuous (non-integer numbers)."""
    arr = np.asarray(y)
    if arr.dtype.kind == "f":
        frac = arr[np.isfinite(arr) & (arr != np.round(arr))]
        if frac.size:
            raise InputError(f"{name}: the labels are continuous (e.g. {float(frac[0]):.6g}); a classifier needs "
                             "class labels: choose the class column, or bin the values first")


def check_at_least_two_classes(y: np.ndarray, name: str = "labels") -> None:
    """Raise `InputError` when a classification label vector has a single class."""
    check_class_labels(y, name)
    if np.unique(y).size < 2:
        raise InputError(f"{name}: only one class ({np.unique(y)[0]!r}); a classifier needs at least two")


def check_damping(value: Any) -> float:
    """`damping` as a finite float >= 0, or a one-line `InputError`."""
    try:
        damping = float(value)
    except (TypeError, ValueError):
        raise InputError(f"damping must be a number >= 0, got {value!r}") from None
    if not np.isfinite(damping) or damping < 0:
        raise InputError(f"damping must be >= 0 and finite, got {value!r}")
    return damping


def check_budget(budget: Any, n: int, name: str = "budget") -> int:
    """Turn a budget into a count in [0, n] or raise `InputError`.

    An integer (or an integral float such as ``5.0``) is a count; a float strictly between 0 and 1 is a
    fraction of `n` (rounded); anything else (``1.5``, negative, NaN, True) is an error.
    """
    if isinstance(budget, (bool, np.bool_)) or budget is None:
        raise InputError(f"{name}: must be a count (0, 1, 2, ...) or a fraction in (0, 1), got {budget!r}")
    try:
        value = float(budget)
    except (TypeError, ValueError):
        raise InputError(f"{name}: must be a count (0, 1, 2, ...) or a fraction in (0, 1), got {budget!r}") from None
    if not np.isfinite(value) or value < 0 or (value > 1 and value != int(value)):
        raise InputError(f"{name}: must be a count (0, 1, 2, ...) or a fraction in (0, 1), got {budget!r}")
    k = int(round(value * n)) if 0 < value < 1 else int(value)
    if k > n:
        raise InputError(f"{name}: {k} is larger than the {n} samples available")
    return k


def parse_budget(text: str, name: str = "--budget") -> int | float:
    """A budget typed on the command line: an integer >= 1 is a count (``5``), a decimal strictly between 0
    and 1 a fraction (``0.05``); anything else (``0``, ``1.0``, ``1.5``, ``-3``, ``5%``) is a one-line
    `InputError`."""
    t = str(text).strip()
    if t.isdigit() and int(t) >= 1:
        return int(t)
    try:
        value = float(t)
    except ValueError:
        value = float("nan")
    if np.isfinite(value) and 0 < value < 1:
        return value
    raise InputError(f"{name} {text!r}: give a count of samples (an integer such as 20) or a fraction strictly "
                     "between 0 and 1 (such as 0.05)")


def check_columns(columns: list[str], wanted: list[str], where: str) -> None:
    """Raise `InputError` if any name in `wanted` is not among `columns`."""
    missing = [c for c in wanted if c not in columns]
    if missing:
        shown = ", ".join(columns[:8]) + (" ..." if len(columns) > 8 else "")
        raise InputError(f"{where}: unknown column(s) {missing}; available: {shown}")


def check_unique_columns(columns: list[Any], where: str) -> None:
    """Raise `InputError` naming the column names that occur more than once (readers would rename them)."""
    seen: dict[str, int] = {}
    for c in columns:
        seen[str(c)] = seen.get(str(c), 0) + 1
    dup = [c for c, k in seen.items() if k > 1]
    if dup:
        raise InputError(f"{where}: duplicate column name(s) {dup[:5]}; give every column its own name")


def check_splits(splits: dict, wanted: tuple[str, ...], where: str) -> None:
    """`splits` (a dict returned by an experiment's set-up function) has every name in `wanted`."""
    missing = [k for k in wanted if k not in splits]
    if missing:
        raise InputError(f"{where} must return the splits {list(wanted)}; missing {missing}")


def check_feature_shape(X: np.ndarray, like: np.ndarray, name: str = "features") -> None:
    """Raise `InputError` unless samples of `X` have the shape of samples of `like` (same features)."""
    if X.shape[1:] != like.shape[1:]:
        raise InputError(f"{name}: samples have shape {tuple(X.shape[1:])}, the training data has "
                         f"{tuple(like.shape[1:])}; use the same feature columns")


def check_output_dir(path: Any, name: str = "output") -> None:
    """Raise `InputError` unless folder `path` exists and is writable or can be created."""
    import os
    from pathlib import Path

    p = Path(path)
    other = f"choose another {name}" if name.startswith("--") else "choose another folder"
    check_path(p, name)
    if p.exists() and not p.is_dir():
        raise InputError(f"{name}: {p} exists and is not a folder; {other}")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{name}: cannot create {p}: {probe} is a file, not a folder; {other}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{name}: cannot write to {probe} (permission denied); {other}")


def check_outputs(outputs: dict[str, Any], inputs: dict[str, Any], force: bool = False) -> None:
    """Outputs never replace an input, and replace an existing file only with ``force``.

    Parameters
    ----------
    outputs : option name (e.g. "--out") -> output file path (or a list of paths it writes)
    inputs : what each input is (e.g. "--train") -> its path; compared by real path (symlinks, "..")
    force : whether existing outputs may be replaced
    """
    import os

    real_in = {os.path.realpath(str(p)): name for name, p in inputs.items() if p is not None}
    existing = []
    for name, paths in outputs.items():
        for p in (paths if isinstance(paths, (list, tuple)) else [paths]):
            check_path(p, name)
            real = os.path.realpath(str(p))
            if real in real_in:
                raise InputError(f"{name} {p} is the input {real_in[real]} of this run; an output never replaces "
                                 "an input: choose another file name")
            if os.path.lexists(p):
                existing.append(str(p))
    if existing and not force:
        shown = ", ".join(existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise InputError(f"{shown} already exist(s); pass --force to replace, or choose another output name")
