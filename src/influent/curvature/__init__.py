"""Inverse-Hessian-vector-product solvers behind one interface and one damping meaning.
Every module in this package registers its solvers on import."""

import importlib
import pkgutil

from .base import SOLVERS, CurvatureContext, Solver, make_solver, register

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["CurvatureContext", "Solver", "make_solver", "register", "SOLVERS"]
