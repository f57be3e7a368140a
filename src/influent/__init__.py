"""influent: training-data influence — score every training sample, then act on the scores.

The subpackages and the names below are imported on first use (PEP 562), so that ``influent --help``
and ``import influent`` do not pay for torch and scikit-learn before they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("data", "models", "grads", "backends", "curvature", "targets", "methods", "api", "actions",
               "evaluation", "report", "runs")
_NAMES = {"score": "api", "find_label_issues": "api", "clean": "actions", "CleanResult": "actions", "attribute": "api", "attribute_stream": "api", "Scores": "data.scores", "Split": "data",
          "InputError": "data", "from_arrays": "data", "from_file": "data", "from_frame": "data",
          "TrainingRecorder": "models", "from_texts": "data"}

__all__ = ["score", "find_label_issues", "clean", "CleanResult", "attribute", "attribute_stream", "Scores", "Split", "InputError", "from_arrays", "from_file", "from_frame",
           "TrainingRecorder", "from_texts", "data", "models", "grads", "curvature", "targets", "methods", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
