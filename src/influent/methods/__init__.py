"""Estimators. Each module registers `score(job) -> Result` functions (and pairwise forms) on import;
every module in this package is imported here, so a new method needs only its own file."""

import importlib
import pkgutil

from .options import MethodOptions, opt
from .registry import (DEFAULT_ATTRIBUTION, DEFAULT_DETECTOR, DEFAULT_METHOD, METHODS, Job, M, MethodSpec, Result,
                       register_method, register_pairwise)

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in ("registry", "options"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["DEFAULT_ATTRIBUTION", "DEFAULT_DETECTOR", "DEFAULT_METHOD", "METHODS", "Job", "M", "MethodOptions",
           "MethodSpec", "Result", "opt", "register_method", "register_pairwise"]
