"""Targets ("impact functions"): differentiable costs on a target split (lower is better)."""

from .base import Target, mean_loss
from .impact import DemographicParity, EqualOpportunity, Robustness, Utility
from .margin import Margin, margin_scale, margins
from .factory import TARGETS, TargetSpec, make_target

__all__ = ["Target", "Utility", "DemographicParity", "EqualOpportunity", "Robustness", "Margin", "margins", "margin_scale", "mean_loss", "TARGETS", "TargetSpec", "make_target"]
