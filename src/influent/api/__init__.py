"""The verbs: `score` (one value per training sample), `attribute` (train x test matrix) and
`attribute_stream` (the matrix in zarr blocks with the top-k training samples of each test sample)."""

from .stream import TopK, attribute_stream, explain, load_topk
from .issues import find_label_issues
from .verbs import attribute, score

__all__ = ["score", "attribute", "find_label_issues", "attribute_stream", "explain", "load_topk", "TopK"]
