"""Actions on scores: trim, relabel, reweight, coreset (`edit`), active learning (`active`), Diff-In tasks
(`diffin_tasks`, import the submodule)."""

from .active import STRATEGIES, ActiveLearner, RoundRecord, percentile_mean
from .edit import Edit, coreset, relabel, reweight, trim

__all__ = ["ActiveLearner", "RoundRecord", "STRATEGIES", "percentile_mean", "Edit", "trim", "relabel", "reweight",
           "coreset"]
