"""Targets ("impact functions"): differentiable costs on a target split (lower is better)."""

from .base import Target, mean_loss
from .impact import DemographicParity, EqualOpportunity, Robustness, Utility
from .factory import TARGETS, TargetSpec, make_target

__all__ = ["Target", "Utility", "DemographicParity", "EqualOpportunity", "Robustness", "mean_loss", "TARGETS", "TargetSpec", "make_target"]
