"""The targets the CLI and the run configuration name: ``utility``, ``demographic-parity``,
``equal-opportunity``, ``robustness``."""

from __future__ import annotations

from ..data import Split
from ..data.validate import InputError
from .base import Target
from .impact import DemographicParity, EqualOpportunity, Robustness, Utility

TARGETS = ("utility", "demographic-parity", "equal-opportunity", "robustness")
_CLASSES = {"utility": Utility, "demographic-parity": DemographicParity, "equal-opportunity": EqualOpportunity,
            "robustness": Robustness}


def make_target(kind: str, split: Split) -> Target:
    """The target object named by `kind`, measured on `split`."""
    if kind not in _CLASSES:
        raise InputError(f"unknown target {kind!r}; choose one of {list(TARGETS)}")
    return _CLASSES[kind](split)
