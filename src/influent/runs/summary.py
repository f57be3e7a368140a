"""What the report shows, computed once at scoring time and stored in ``run.json`` under ``results``.

Everything here is JSON-able and bounded in size (histograms on shared bins, the `top` most harmful
samples, a removal curve of a few points), so `influent report DIR` rebuilds the page from ``run.json``
alone, and the page stays small for any number of training samples.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import numpy as np

from ..data import Split
from ..data.validate import InputError
from ..data.scores import Scores, jsonable
from ..models.base import ModelAdapter
from .config import RunConfig
from .inputs import Data
from .steps import Steps

N_BINS = 40


# ---- which samples "look harmful" ---------------------------------------------------------------------
def harmful_rule(values: np.ndarray, settings: dict[str, Any] | None = None, says: str = "harmful",
                 count: int | None = None) -> dict[str, Any]:
    """The rule that flags low-valued samples, and its threshold; `says` is what the method's registry entry
    lets the report call them (`MethodSpec.says`).

    A method that states its own threshold (``settings["flag_below"]``, e.g. label quality: the given
    label is less likely than not) is flagged by it (rule "method").

    "harmful" (a signed effect on a target): a sample is harmful when its value is negative, i.e. removing it
    alone is predicted to lower the target cost (rule "negative"). "mislabelled" with an estimated number of
    wrong labels `count` (confident learning's): the `count` lowest values are flagged (rule "count"). Otherwise
    (unsigned statistics such as self-influence and outlier scores, or no count): a sample is flagged when its
    value lies below the lower Tukey fence Q1 - 1.5 IQR, i.e. it is an outlier of the method's own statistic
    (rule "outlier": unusual, not shown to be harmful).
    """
    v = values[np.isfinite(values)]
    if settings and settings.get("flag_below") is not None:
        return {"rule": "method", "threshold": float(settings["flag_below"])}
    if says == "mislabelled" and count is not None and v.size:
        srt = np.sort(v)
        thr = float(srt[count]) if count < len(srt) else float(np.nextafter(srt[-1], np.inf))
        return {"rule": "count", "threshold": thr, "count": int(count)}
    if says == "harmful" and v.size and (v > 0).any() and (v < 0).any():
        return {"rule": "negative", "threshold": 0.0}
    if not v.size:
        return {"rule": "outlier", "threshold": float("nan")}
    q1, q3 = np.quantile(v, [0.25, 0.75])
    return {"rule": "outlier", "threshold": float(q1 - 1.5 * (q3 - q1))}


def estimated_wrong_labels(model: ModelAdapter, train: Split) -> int | None:
    """Confident learning's estimate of the number of wrong labels (`find_label_issues`), or None where the
    model does not support it."""
    from ..api.issues import find_label_issues

    try:
        return int(find_label_issues(model, train)["is_issue"].sum())
    except (InputError, ValueError, RuntimeError, NotImplementedError):
        return None


def harmful_mask(values: np.ndarray, rule: dict[str, Any]) -> np.ndarray:
    return np.isfinite(values) & (values < rule["threshold"])


# ---- which rankings an ensemble agrees on ---------------------------------------------------------------
def stability(scores: Scores, k: int, z: float = 1.96) -> dict[str, Any] | None:
    """Of the `k` lowest- and `k` highest-valued samples, how many keep their side of the median across the
    ensemble's members: value + z * stderr below the median (harmful) or value - z * stderr above it
    (helpful). None without a standard error (one model)."""
    if scores.stderr is None or not len(scores):
        return None
    v, se = scores.values, scores.stderr
    med = float(np.nanmedian(v))
    k = max(0, min(int(k), len(v)))
    low, high = scores.most_harmful(k), scores.most_helpful(k)
    ens = scores.settings.get("ensemble") or {}
    return {"k": k, "z": z, "median": med, "members": ens.get("models", ens.get("members")),
            "harmful": int(np.sum(v[low] + z * se[low] < med)), "helpful": int(np.sum(v[high] - z * se[high] > med))}


# ---- score distribution by class -----------------------------------------------------------------------
def bin_edges(values: np.ndarray, threshold: float, n_bins: int = N_BINS) -> tuple[np.ndarray, bool]:
    """Shared bin edges over the values: the full range, or the central 99% when the tails would squash
    the bulk into a few bins (then the end bins gather the tails). Returns (edges, clipped)."""
    v = values[np.isfinite(values)]
    lo, hi = float(v.min()), float(v.max())
    qlo, qhi = (float(q) for q in np.quantile(v, [0.005, 0.995]))
    clipped = (hi - lo) > 3 * max(qhi - qlo, 1e-300)
    if clipped:
        lo, hi = qlo, qhi
    if np.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, n_bins + 1), clipped


def _hist(v: np.ndarray, edges: np.ndarray) -> list[int]:
    v = v[np.isfinite(v)]
    return np.histogram(np.clip(v, edges[0], edges[-1]), edges)[0].astype(int).tolist()


def class_names(y: np.ndarray) -> list[str]:
    return [str(c) for c in np.unique(y)]


def distribution(values: np.ndarray, y: np.ndarray, rule: dict[str, Any], is_classifier: bool = True) -> dict[str, Any]:
    """Histogram rows per class on shared bins, with the count of harmful samples per class."""
    edges, clipped = bin_edges(values, rule["threshold"])
    harm = harmful_mask(values, rule)
    rows = []
    groups = [(str(c), y == c) for c in np.unique(y)] if is_classifier and len(np.unique(y)) <= 50 else [("all", np.ones(len(y), bool))]
    for name, m in groups:
        rows.append({"label": name, "n": int(m.sum()), "harmful": int((harm & m).sum()),
                     "median": float(np.nanmedian(values[m])) if m.any() else None, "counts": _hist(values[m], edges)})
    return {"edges": edges.tolist(), "clipped": bool(clipped), "rows": rows,
            "below": int((values < edges[0]).sum()), "above": int((values > edges[-1]).sum())}


# ---- samples in their own form -------------------------------------------------------------------------
def png(img: np.ndarray) -> str:
    """A base64 PNG of an (H, W) gray or (H, W, 3) colour uint8 image (stdlib zlib, no imaging library)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape[:2]
    colour = 2 if img.ndim == 3 else 0
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return base64.b64encode(data).decode("ascii")


def as_image(x: np.ndarray, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray | None:
    """One sample as a uint8 image: gray (dark ink on light paper) or RGB; None if the shape is not an image."""
    a = np.asarray(x, dtype=np.float64).reshape(shape)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        return None
    scaled = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)
    if a.ndim == 2:
        scaled = 1.0 - scaled  # ink dark on a light background, as on paper
    return np.round(scaled * 255).astype(np.uint8)


def sample_kind(data: Data) -> str:
    if getattr(data, "text", None) is not None:
        return "text"
    if getattr(data, "image_shape", None):
        return "image"
    return "tabular"


def samples(positions: np.ndarray, scores: Scores, train: Split, model: ModelAdapter, data: Data, kind: str,
            threshold: float = 0.0) -> list[dict[str, Any]]:
    """One record per sample at `positions`: id, label, the model's prediction, value, rank, and its
    content: an image (base64 PNG), a text, or its most unusual feature values (z-scores). Content shows
    the data as the user gave it (`data.raw_X` when the model sees standardised features)."""
    if len(positions) == 0:
        return []
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[scores.order()] = np.arange(len(scores))
    proba = model.predict_proba(train.X[positions])
    classes = getattr(model, "classes_", None)
    out = []
    shown = getattr(data, "raw_X", None)
    shown = train.X if shown is None else shown
    if kind == "image":
        lo, hi = float(np.min(shown)), float(np.max(shown))
    X2 = shown.reshape(len(train), -1)
    mu, sd = X2.mean(0), X2.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    names = train.columns or [f"x{j}" for j in range(X2.shape[1])]
    for row, i in enumerate(positions):
        rec: dict[str, Any] = {"position": int(i), "id": jsonable(train.ids[i]), "label": str(train.y[i]),
                               "value": float(scores.values[i]), "rank": int(ranks[i]) + 1,
                               "flagged": bool(scores.values[i] < threshold)}
        if scores.raw is not None:
            rec["raw"] = float(scores.raw[i])
        if classes is not None:
            p = proba[row]
            j = int(np.argmax(p))
            rec["predicted"] = str(classes[j])
            rec["p_predicted"] = float(p[j])
            k = np.flatnonzero(np.asarray(classes).astype(str) == str(train.y[i]))
            rec["p_label"] = float(p[k[0]]) if k.size else None
        if getattr(data, "clean", None) is not None:
            rec["clean"] = str(data.clean[i])
        if kind == "image":
            img = as_image(shown[i], tuple(data.image_shape), lo, hi)
            if img is not None:
                rec["image"] = png(img)
        elif kind == "text":
            rec["text"] = str(data.text[i])[:600]
        z = (X2[i] - mu) / sd
        pick = np.arange(len(z)) if len(z) <= 8 else np.argsort(-np.abs(z), kind="stable")[:5]
        rec["features"] = [[str(names[j]), float(X2[i, j]), float(z[j])] for j in pick]
        out.append(rec)
    return out


# ---- removal curve --------------------------------------------------------------------------------------
def removal_curve(model: ModelAdapter, train: Split, test: Split, scores: Scores, fractions: list[float], repeats: int,
                  seed: int, target_kind: str, tick: Any = None) -> dict[str, Any]:
    """Test accuracy and test target cost after removing the k lowest-valued samples (harmful first), the
    k highest-valued (helpful first) and k random samples (`repeats` nested random orders), refitting each
    time (`evaluation.curves.removal_curve`). The target is prepared on the test split against the fitted
    model, as in the scores. A refit that fails with an `InputError` (one class left) is None."""
    from ..evaluation.curves import removal_curve as curve
    from ..models.factory import fast_refit_model
    from ..models.refit import Accuracy, Several, TargetValue
    from ..targets import make_target

    n = len(train)
    ks = sorted({min(n - 2, max(0, int(round(f * n)))) for f in fractions})
    target = make_target(target_kind, test).prepare(model)
    res = curve(fast_refit_model(model), train, scores, ks, Several({"accuracy": Accuracy(test), "cost": TargetValue(target)}),
                ends=("lowest", "highest"), repeats=repeats, seed=seed, skip=(InputError,), tick=tick)
    pick = lambda values, key: [None if v is None else v[key] for v in values]
    curves = {name: {key: pick(res.curves[end], key) for key in ("accuracy", "cost")}
              for name, end in (("harmful", "lowest"), ("helpful", "highest"))}
    rand = {}
    with np.errstate(all="ignore"):
        for key in ("accuracy", "cost"):
            r = np.array([[np.nan if v is None else v for v in pick(row, key)] for row in res.random],
                         dtype=np.float64).reshape(repeats, len(ks))
            rand.update({key: np.nanmean(r, 0), f"{key}_min": np.nanmin(r, 0), f"{key}_max": np.nanmax(r, 0)})
    rand = {k: [None if not np.isfinite(x) else float(x) for x in rand[k]]
            for k in ("accuracy", "accuracy_min", "accuracy_max", "cost", "cost_min", "cost_max")}
    cost_label = "test loss" if target_kind == "utility" else f"test {target_kind.replace('-', ' ')} gap"
    return {"k": ks, "fractions": [k / n for k in ks], "harmful": curves["harmful"], "helpful": curves["helpful"],
            "random": rand, "repeats": repeats, "cost_label": cost_label, "n_test": len(test)}


# ---- mislabel detection ---------------------------------------------------------------------------------
def detection_data(values: np.ndarray, noisy: np.ndarray, edges: list[float]) -> dict[str, Any]:
    """AUC, precision@k and the recall curve of "lowest value first" against the known noisy rows."""
    from ..evaluation.detection import detection

    d = detection(values, noisy)
    order = np.argsort(np.where(np.isnan(values), np.inf, values), kind="stable")
    found = np.concatenate([[0], np.cumsum(noisy[order])]) / max(1, noisy.sum())
    n = len(values)
    grid = np.unique(np.round(np.linspace(0, n, min(n, 200) + 1)).astype(int))
    e = np.asarray(edges)
    return {**d.as_dict(), "n": n, "inspected": (grid / n).tolist(), "found": found[grid].tolist(),
            "hist_noisy": _hist(values[noisy], e), "hist_clean": _hist(values[~noisy], e)}


# ---- everything -----------------------------------------------------------------------------------------
def report_data(cfg: RunConfig, data: Data, model: ModelAdapter, scores: Scores, steps: Steps) -> dict[str, Any]:
    """The `results` section of run.json: summary numbers, distribution, samples, curve, detection."""
    from ..methods import METHODS

    values = scores.values
    train = data.train
    spec = METHODS.get(cfg.method)
    says = spec.says if spec is not None else "unusual"
    count = estimated_wrong_labels(model, train) if says == "mislabelled" and not scores.settings.get("flag_below") \
        else None
    rule = harmful_rule(values, scores.settings, says, count)
    harm = harmful_mask(values, rule)
    is_classifier = getattr(model, "classes_", None) is not None
    kind = sample_kind(data)
    summary: dict[str, Any] = {
        "train_file": _name(cfg.train), "valid_file": _name(cfg.valid), "test_file": _name(cfg.test),
        "n_train": len(train), "n_features": train.n_features, "n_valid": None if data.valid is None else len(data.valid),
        "n_test": None if data.test is None else len(data.test),
        "classes": class_names(train.y)[:50] if is_classifier else None,
        "method": cfg.method, "method_summary": METHODS[cfg.method].summary if cfg.method in METHODS else "",
        "target": cfg.target, "n_harmful": int(harm.sum()), **rule, "says": says, "kind": kind,
        "valid_accuracy": model.accuracy(data.valid) if is_classifier and data.valid is not None else None,
        "test_accuracy": model.accuracy(data.test) if is_classifier and data.test is not None else None,
        "n_nan": int(np.isnan(values).sum()),
    }
    stable = stability(scores, max(1, int(cfg.top)))
    if stable is not None:
        summary["stable"] = stable
    dist = distribution(values, train.y, rule, is_classifier)
    with steps.step("pick samples"):
        top = max(0, min(int(cfg.top), len(train)))
        worst = scores.most_harmful(top)
        best = scores.most_helpful(min(len(train), max(0, top // 2)))
        thr = rule["threshold"]
        sample_sets = {"kind": kind, "harmful": samples(worst, scores, train, model, data, kind, thr),
                       "helpful": samples(best, scores, train, model, data, kind, thr)}
    out: dict[str, Any] = {"summary": summary, "distribution": dist, "samples": sample_sets}
    if data.test is not None and cfg.curve and is_classifier:
        n_ks = len({min(len(train) - 2, max(0, int(round(f * len(train))))) for f in cfg.curve_fractions})
        with steps.step("removal curve", total=n_ks * (2 + cfg.curve_repeats)) as tick:
            out["curve"] = removal_curve(model, train, data.test, scores, list(cfg.curve_fractions),
                                         int(cfg.curve_repeats), cfg.seed, cfg.target, tick)
    if getattr(data, "clean", None) is not None:
        noisy = np.asarray(data.clean).astype(str) != np.asarray(train.y).astype(str)
        summary["n_noisy"] = int(noisy.sum())
        if 0 < noisy.sum() < len(noisy):
            out["detection"] = detection_data(values, noisy, dist["edges"])
            summary["noisy_among_harmful"] = int((noisy & harm).sum())
    return jsonable(out)


def _name(path: str | None) -> str | None:
    if not path:
        return None
    from pathlib import Path

    return Path(path).name
