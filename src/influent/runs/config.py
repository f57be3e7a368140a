"""`RunConfig`: every setting of one `influent score` run (saved as ``config`` in run.json), the
environment versions and input fingerprints recorded with it."""

from __future__ import annotations

import dataclasses
import hashlib
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from ..data.validate import InputError
from ..data.scores import jsonable


RUN_FORMAT = 1
OUTPUT_FILES = ("scores.parquet", "run.json", "report.html")
ATTRIBUTION_DIR = "attribution"  # the streamed top-k attribution of a run with --topk (a folder)


# ---- configuration ---------------------------------------------------------------------------------
STANDARDIZED_MODELS = ("logistic", "mlp")  # the built-in models the command line z-scores by default


def default_standardize(model: str, encoder: str | None = None) -> bool:
    """Whether ``influent score`` standardises the features of `model` when neither --standardize nor
    --no-standardize is given: yes for the built-in logistic regression and MLP, whose solvers (lbfgs, Adam
    with one learning rate for every weight) slow down or stall on features of very different scales (the
    breast-cancer quick start: 30 features from 0.001 to 4,000); no for a user's model file and for LoRA,
    which take the data as given, nor for the embeddings of a sentence `encoder`, which share one scale."""
    return model in STANDARDIZED_MODELS and not encoder


def _default_method() -> str:
    """`methods.DEFAULT_METHOD`, read when a config is made without a method (reading the module imports no
    method)."""
    from ..methods import DEFAULT_METHOD

    return DEFAULT_METHOD


@dataclass
class RunConfig:
    """Every setting of one run; saved as ``config`` in ``run.json`` and enough to repeat the run.

    Attributes
    ----------
    train, valid, test : paths of CSV / Parquet / NPZ files (test optional: it enables the removal curve)
    label, group, id_column : column (or NPZ array) names of the label, the group attribute, the sample ids
    text_column : a column holding each row's raw text; not a feature, shown in the report
    clean_label_column : a column holding each row's known clean label (noisy-label experiments); not a
        feature; the report measures how well the scores find the rows whose label differs from it
    drop : further columns that are not features
    standardize : z-score features with the training mean and standard deviation (the command line's default:
        `default_standardize`; here False, the data as given)
    image_shape : render each row as an image of this shape (e.g. [8, 8]); default: the NPZ array's shape
    model : "logistic" | "mlp" | "path/to/file.py:function"
    model_options : C (logistic); hidden, epochs, lr, batch_size, weight_decay (mlp and torch models)
    method, method_options : the scoring method and its options (solver, damping, ...)
    target : a name in `influent.targets.TARGETS` ("utility", the default, or a fairness/robustness target)
    chunk_size, seed : as in `influent.score`
    top : how many of the most harmful samples the report shows
    curve, curve_fractions, curve_repeats : the removal curve (needs a test split): the fractions of the
        training set removed, and how many random removals are averaged
    title : the report's title (default: method and data)
    params : the analysed parameters ("all", "last", "auto" or module names; `resolve_params`), applied to
        the fitted model before scoring; None: the model's own choice
    store : folder of an on-disk gradient store (chunked, resumable: an interrupted run computes only the
        chunks it had not finished), or None
    backend : "local" or "ray" (`influent.score`'s backend; with "ray" the removal curve's refits run there too)
    ray_address : the Ray cluster to attach to (else RAY_ADDRESS, else a local Ray)
    topk : with a test split, the k most helpful and most harmful training samples of every test sample
        (streamed train x test attribution, `api.stream.attribute_stream`, in ``attribution/`` of the run
        folder; the method's pairwise form, else "ip"); 0: off
    """

    train: str | None = None
    valid: str | None = None
    test: str | None = None
    label: str = "y"
    group: str | None = None
    id_column: str | None = None
    text_column: str | None = None
    clean_label_column: str | None = None
    drop: list[str] = field(default_factory=list)
    standardize: bool = False
    image_shape: list[int] | None = None
    model: str = "logistic"
    model_options: dict[str, Any] = field(default_factory=dict)
    method: str = field(default_factory=_default_method)
    method_options: dict[str, Any] = field(default_factory=dict)
    target: str = "utility"
    chunk_size: int = 512
    seed: int = 0
    top: int = 12
    curve: bool = True
    curve_fractions: list[float] = field(default_factory=lambda: [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3])
    curve_repeats: int = 3
    title: str | None = None
    params: str | list[str] | None = None
    store: str | None = None
    encoder: str | None = None  # embed text_column with this sentence encoder: the embeddings are the features
    ensemble: int = 0  # > 0: the scores are the mean over this many models, each trained with its own seed
    embed_cache: str | None = None  # folder of the embedding cache (default ~/.cache/influent/embeddings)
    backend: str = "local"
    ray_address: str | None = None
    topk: int = 0

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))

    def backend_options(self) -> dict[str, Any] | None:
        """The ``backend_options`` of the run's backend: the cluster address when one is given."""
        return {"address": self.ray_address} if self.ray_address else None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"run config: unknown setting(s) {unknown}")
        return cls(**d)


# ---- environment ---------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    """Versions of Python, the platform and every library a run depends on."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("influent", "torch", "numpy", "scipy", "scikit-learn", "pandas", "pyarrow", "zarr", "typer", "rich"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
