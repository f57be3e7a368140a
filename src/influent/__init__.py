"""influent: training-data influence — score every training sample, then act on the scores."""

from . import curvature, data, grads, methods, models, targets
from .api import attribute, score
from .data import InputError, Split, from_arrays, from_file, from_frame
from .models import TrainingRecorder
from .scores import Scores

__version__ = "0.1.0"

__all__ = ["score", "attribute", "Scores", "Split", "InputError", "from_arrays", "from_file", "from_frame",
           "TrainingRecorder", "data", "models", "grads", "curvature", "targets", "methods", "__version__"]
