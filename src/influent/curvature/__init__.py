"""Inverse-Hessian-vector-product solvers behind one interface and one damping meaning."""

from . import exact  # noqa: F401  (registers identity, exact)
from .base import SOLVERS, CurvatureContext, Solver, make_solver, register

for _mod in ("iterative", "arnoldi", "kfac", "datainf"):
    try:  # solvers register themselves on import
        __import__(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _exc:  # pragma: no cover - only while a solver module is missing
        if _exc.name != f"{__name__}.{_mod}":
            raise

__all__ = ["CurvatureContext", "Solver", "make_solver", "register", "SOLVERS"]
