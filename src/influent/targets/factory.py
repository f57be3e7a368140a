"""The targets the CLI and the run configuration name, in one registry: ``utility``, ``demographic-parity``,
``equal-opportunity``, ``robustness``, ``margin``. Each entry holds the class and the words the report uses for it."""

from __future__ import annotations

from dataclasses import dataclass

from ..data import Split
from ..data.registry import Entry, Registry
from .base import Target
from .impact import DemographicParity, EqualOpportunity, Robustness, Utility
from .margin import Margin


@dataclass(frozen=True)
class TargetSpec(Entry):
    """A registered target: ``obj`` is the `Target` class (built on a split); ``text`` is what the
    report calls the measured cost ("removing it lowers the <text>")."""

    text: str = ""


TARGETS: Registry[TargetSpec] = Registry("target")
for _cls, _text in ((Utility, "validation loss"),
                    (DemographicParity, "demographic-parity gap on the validation set"),
                    (EqualOpportunity, "equal-opportunity gap on the validation set"),
                    (Robustness, "loss on an adversarial copy of the validation set"),
                    (Margin, "minus the mean margin log(p/(1-p)) of the correct class on the validation set")):
    TARGETS.add(TargetSpec(_cls.name, _cls, text=_text))


def make_target(kind: str, split: Split) -> Target:
    """The target object named by `kind`, measured on `split` (an unknown name: the one-line `InputError`)."""
    return TARGETS[kind](split)
