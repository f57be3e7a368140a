"""Outlier gradient analysis [OGA]: detrimental samples are outliers among per-sample gradients.

The per-sample gradients of a parameter subset (default: the last layer of a neural net, every
parameter of a linear model), optionally randomly projected, form a point cloud; a detector scores
each training sample: Isolation Forest, L1 norm, L2 norm, or a One-Class SVM fitted on validation
gradients as inliers. ``raw`` is the outlier score (higher = more outlying) and ``values = -raw``.

For class detection ("which training samples relate to this test sample"), `class_forests` fits
one Isolation Forest per class on that class's training gradients and scores test gradients with
each; the pairwise form of ``method="outlier"`` spreads those scores over the training samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..backends.planner import MATRIX_COPIES
from ..data import Split
from ..data.validate import InputError, check_choice, check_number, class_codes
from ..grads.source import GradientSource
from ..models.base import ModelAdapter, resolve_params
from .options import ProjectionOptions, check_params, opt
from .registry import Job, Result, register_method, register_pairwise, to_numpy

if TYPE_CHECKING:  # scikit-learn loads where a detector is fitted: a Ray worker importing the methods skips it
    from sklearn.ensemble import IsolationForest

DETECTORS = ("iforest", "l1", "l2", "ocsvm")
KERNELS = ("linear", "poly", "rbf", "sigmoid")  # those of scikit-learn's OneClassSVM taking gradient rows
_MAX_CACHED_PROJECTION = 1 << 24  # entries of R kept in memory; larger projections are regenerated per chunk
_BLOCK = 4096  # rows of R generated from one seed


class GaussianProjection:
    """x -> x R / sqrt(k) with R (p, k) of independent N(0, 1) entries, reproducible from `seed`.

    Rows of R come in blocks of 4096: block b is drawn from `torch.Generator().manual_seed(seed * 1_000_003 + b)`,
    so R never has to be held whole (it is cached when p * k <= 2^24). Inner products and norms are
    preserved in expectation (Johnson-Lindenstrauss). Blocks are drawn on the CPU and moved to `device`
    (default CPU; the model's device in `gradient_features`), so a seed gives the same R on every device.
    """

    def __init__(self, p: int, k: int, seed: int = 0, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> None:
        if int(k) < 1:
            raise InputError(f"project must be a positive number of dimensions, got {k}")
        self.p, self.k, self.seed, self.dtype = int(p), int(k), int(seed), dtype
        self.device = torch.device("cpu" if device is None else device)
        self._R = self.matrix() if self.p * self.k <= _MAX_CACHED_PROJECTION else None

    def _block(self, b: int) -> torch.Tensor:
        rows = min(_BLOCK, self.p - b * _BLOCK)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
        return torch.randn(rows, self.k, generator=gen, dtype=torch.float64).to(device=self.device, dtype=self.dtype)

    def matrix(self) -> torch.Tensor:
        """R, shape (p, k) (unscaled)."""
        return torch.cat([self._block(b) for b in range((self.p + _BLOCK - 1) // _BLOCK)])

    def __call__(self, G: torch.Tensor) -> torch.Tensor:
        """(B, p) -> (B, k)."""
        G = G.to(device=self.device, dtype=self.dtype)
        if self._R is not None:
            return G @ self._R / self.k**0.5
        out = torch.zeros(G.shape[0], self.k, dtype=self.dtype, device=self.device)
        for b in range((self.p + _BLOCK - 1) // _BLOCK):
            out += G[:, b * _BLOCK:(b + 1) * _BLOCK] @ self._block(b)
        return out / self.k**0.5


def gradient_features(adapter: ModelAdapter, split: Split, project: int | None = None, seed: int = 0,
                      chunk_size: int = 512, source: GradientSource | None = None) -> np.ndarray:
    """(n, p) per-sample gradients of `split` under `adapter`, or (n, k) with `project=k`."""
    src = source or GradientSource(adapter, split, chunk_size)
    if project is None:
        return src.to_numpy()
    proj = GaussianProjection(src.p, int(project), seed, adapter.dtype, adapter.device)
    return torch.cat([proj(G) for _, G in src.chunks()]).cpu().numpy()


@dataclass
class OutlierOptions(ProjectionOptions):
    """Options of outlier gradient analysis [OGA] (and of its pairwise per-class forests)."""

    detector: str = opt("iforest", "'iforest' (Isolation Forest) | 'l1' | 'l2' (gradient norms) | 'ocsvm' "
                                   "(One-Class SVM on the target's validation gradients)")
    params: Any = opt("auto", "parameters analysed: 'auto' (last layer of a neural net, all of a linear model), "
                              "'all', 'last' or module names")
    project: int | None = opt(None, "k: seeded Gaussian random projection of the gradients to k dimensions; "
                                    "None: the raw gradients")
    n_estimators: int = opt(100, "trees of the Isolation Forest")
    max_samples: Any = opt("auto", "samples per tree of the Isolation Forest: 'auto', a count or a fraction in (0, 1]")
    contamination: Any = opt("auto", "'auto' or the trimming budget as a fraction in (0, 0.5]: sets only the "
                                     "flagging threshold (n_flagged), never the ranking")
    kernel: str = opt("rbf", "kernel of the One-Class SVM: 'linear' | 'poly' | 'rbf' | 'sigmoid'")
    nu: float = opt(0.1, "nu of the One-Class SVM, in (0, 1]")
    gamma: Any = opt("scale", "gamma of the One-Class SVM: 'scale' | 'auto' | a number >= 0")
    normalize: bool = opt(True, "pairwise form: normalise each class forest's scores")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.detector, DETECTORS, "detector", unknown="detector")
        self.project = check_number(self.project, "project", kind=int, low=1, none=True)
        self.n_estimators = check_number(self.n_estimators, "n_estimators", kind=int, low=1)
        if self.contamination != "auto" and not 0 < check_number(self.contamination, "contamination") <= 0.5:
            raise InputError(f"contamination must be 'auto' or in (0, 0.5], got {self.contamination}")
        if self.max_samples != "auto":  # scikit-learn's IsolationForest: a count, or a fraction of n
            if isinstance(self.max_samples, float):
                self.max_samples = check_number(self.max_samples, "max_samples (a fraction)", low=0, high=1,
                                                low_open=True)
            else:
                self.max_samples = check_number(self.max_samples, "max_samples ('auto', a count or a fraction)",
                                                kind=int, low=1)
        check_choice(self.kernel, KERNELS, "kernel")
        self.nu = check_number(self.nu, "nu", low=0, high=1, low_open=True)
        if self.gamma not in ("scale", "auto"):
            self.gamma = check_number(self.gamma, "gamma ('scale', 'auto' or a number)", low=0)
        check_choice(self.normalize, (True, False), "normalize")
        check_params(self.params)


def _features(job: Job, view: ModelAdapter, split: Split | None = None) -> np.ndarray:
    project = job.options.project
    fitted = view is job.adapter and split is None
    src = job.source() if fitted else job.source(view, split or job.train)
    return gradient_features(view, split or job.train, project, job.seed, job.chunk_size, src)


def _forest(job: Job) -> IsolationForest:
    contamination = job.options.contamination
    if contamination != "auto":
        contamination = float(contamination)
    from sklearn.ensemble import IsolationForest

    return IsolationForest(n_estimators=int(job.options.n_estimators), contamination=contamination,
                           max_samples=job.options.max_samples, random_state=job.seed)


def _view(model: ModelAdapter, options: dict) -> ModelAdapter:
    """The analysed view: the `params` option (default "auto")."""
    return resolve_params(model, options.get("params", "auto"))


def _memory(view: ModelAdapter, options: dict, n: int, dim: int, item: int) -> dict[str, int]:
    """Planner terms: the Isolation Forest / One-Class SVM hold the whole (n, dim) gradient matrix."""
    if options.get("detector", "iforest") not in ("iforest", "ocsvm"):
        return {}
    return {"gradient matrix (n x p)": int(MATRIX_COPIES * n * dim * item)}


@register_method("outlier", needs_target=False, title="outlier gradient analysis", options=OutlierOptions,
                 view=_view, memory=_memory,
                 on_driver="the detector, on the per-sample gradients gathered from the shards")
def outlier(job: Job) -> Result:
    """Outlier gradient analysis: raw = outlier score of g_z (higher = more outlying); values = -raw.

    iforest: raw = -score_samples, the forest's anomaly score in (0, 1] (`contamination` sets only the
    flagging threshold, recorded as `n_flagged`, never the ranking). l1 / l2: raw = |g|_1, |g|_2, streamed
    in chunks. ocsvm: fitted on the target's validation gradients as inliers (needs a target); raw =
    -decision_function. The forest and the SVM need the whole (n, p) matrix, so use `project` for large
    models. Options: `OutlierOptions` (``influent methods outlier``).
    """
    detector = job.options.detector
    view = resolve_params(job.adapter, job.options.params)
    job.used["n_params_analysed"] = view.n_params()
    if detector in ("l1", "l2"):  # streamed chunk by chunk: memory O(chunk_size * p)
        project = job.options.project
        src = job.source() if view is job.adapter else job.source(view, job.train)
        if detector == "l2" and project is None:
            r = to_numpy(src.sq_norms().clamp_min(0).sqrt())
        else:
            proj = None if project is None else GaussianProjection(src.p, int(project), job.seed, view.dtype,
                                                                   view.device)
            r = np.empty(len(job.train))
            for sl, G in src.chunks():
                G = G if proj is None else proj(G)
                r[sl] = to_numpy(G.abs().sum(1) if detector == "l1" else G.norm(dim=1))
        return Result(-r, r)
    Z = _features(job, view)  # the detectors need the whole (n, p) or (n, k) matrix
    if detector == "iforest":
        forest = _forest(job).fit(Z)
        raw = -forest.score_samples(Z)
        job.used["n_flagged"] = int((forest.predict(Z) == -1).sum())
    else:
        target = job.need_target("outlier (detector='ocsvm')")
        Zv = _features(job, view, target.valid)
        o = job.options
        from sklearn.svm import OneClassSVM

        svm = OneClassSVM(kernel=o.kernel, nu=float(o.nu), gamma=o.gamma)
        raw = -svm.fit(Zv).decision_function(Z)
    raw = np.asarray(raw, dtype=np.float64)
    return Result(-raw, raw)


@dataclass
class ClassDetection:
    """Per-class forests scored on test gradients.

    Attributes
    ----------
    scores : (n_test, K) normality of each test gradient under class c's forest (`score_samples`,
        higher = more typical of the class; in [-1, 0))
    classes : (K,) the model's classes, in column order
    predicted : (n_test,) the class whose forest finds the test gradient most typical
    """

    scores: np.ndarray
    classes: np.ndarray
    predicted: np.ndarray

    def accuracy(self, y: np.ndarray) -> float:
        """Fraction of test samples whose detected class equals `y`."""
        return float(np.mean(self.predicted == np.asarray(y)))

    def relatedness(self, train_y: np.ndarray) -> np.ndarray:
        """(n_train, n_test): entry (i, j) is the normality of test sample j under the forest of training
        sample i's class (higher = i's class relates to j); every sample of a class shares its column
        entries. Feed it to `influent.evaluation.class_detection.class_detection` for [OGA]'s AUC and recall."""
        col = class_codes(np.asarray(train_y), self.classes)
        return self.scores.T[col]


def class_forests(model: ModelAdapter, train: Split, test: Split, params: str | Sequence[str] = "auto",
                  project: int | None = None, normalize: bool = True, n_estimators: int = 100,
                  max_samples: Any = "auto", seed: int = 0, chunk_size: int = 512) -> ClassDetection:
    """Class detection [OGA]: one Isolation Forest per class on that class's training gradients;
    each test gradient is scored by every forest.

    Test gradients use the labels in `test.y` (pass predicted labels for unlabelled data). The same
    random projection (seeded by `seed`) is applied to training and test gradients. With `normalize`
    (default) every gradient is scaled to unit L2 norm first: a well-fitted sample has a near-zero
    gradient whose *direction* still tells its class, while raw gradients of every class crowd
    around the origin (on iris / digits with logistic regression, unit norms raise the detection
    accuracy from 0.68 / 0.70 to 0.88 / 0.87).
    """
    if model.classes_ is None:
        raise InputError("class detection needs a classifier (loss 'cross_entropy' or 'bce')")
    view = resolve_params(model, params)
    Z = gradient_features(view, train, project, seed, chunk_size)
    Zt = gradient_features(view, test, project, seed, chunk_size)
    if normalize:
        Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-300)
        Zt = Zt / np.maximum(np.linalg.norm(Zt, axis=1, keepdims=True), 1e-300)
    cols = []
    for c in model.classes_:
        rows = np.flatnonzero(train.y == c)
        if rows.size < 2:
            raise InputError(f"class {c!r} has {rows.size} training sample(s); a forest needs at least 2")
        from sklearn.ensemble import IsolationForest

        forest = IsolationForest(n_estimators=int(n_estimators), max_samples=max_samples, random_state=seed)
        cols.append(forest.fit(Z[rows]).score_samples(Zt))
    S = np.stack(cols, axis=1)
    return ClassDetection(S, np.asarray(model.classes_), np.asarray(model.classes_)[S.argmax(1)])


@register_pairwise("outlier")
def outlier_pairwise(job: Job, test: Split) -> np.ndarray:
    """(n_train, n_test): entry (i, j) is the normality of test sample j under the forest of training
    sample i's class (`class_forests`; detector "iforest" only; options params, project, normalize (True),
    n_estimators, max_samples); higher = i's class relates to j."""
    detector = job.options.detector
    if detector != "iforest":
        raise InputError(f"the pairwise form of 'outlier' uses per-class forests; detector must be 'iforest', "
                         f"got {detector!r}")
    o = job.options
    det = class_forests(job.adapter, job.train, test, o.params, o.project, bool(o.normalize), int(o.n_estimators),
                        o.max_samples, job.seed, job.chunk_size)
    return det.relatedness(job.train.y)
