"""Estimators. Each registers a `score(job) -> Result` and, where it has one, a pairwise form."""

from . import baselines, hessian_free, influence  # noqa: F401  (register the methods)
from .registry import METHODS, Job, MethodSpec, Result, register_method, register_pairwise

__all__ = ["METHODS", "Job", "MethodSpec", "Result", "register_method", "register_pairwise"]
