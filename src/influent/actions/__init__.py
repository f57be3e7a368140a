"""Actions on scores: trim, relabel, reweight, coreset (`edit`), the measured choice between them (`clean`),
active learning (`active`), Diff-In tasks (`diffin_tasks`, import the submodule)."""

from .active import STRATEGIES, ActiveLearner, RoundRecord, percentile_mean
from .clean import CleanResult, clean
from .edit import Edit, coreset, relabel, reweight, trim

__all__ = ["ActiveLearner", "RoundRecord", "STRATEGIES", "percentile_mean", "Edit", "trim", "relabel", "reweight",
           "coreset", "clean", "CleanResult"]
