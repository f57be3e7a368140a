"""Streaming pairwise attribution: the (n_train, n_test) matrix written to zarr in column blocks, and the
top-k most helpful and most harmful training samples of every test sample kept on the way.

Only one block of `block` test columns, (n_train, block), is in memory at a time: the matrix itself lives on
disk (design promise 4). Entry (i, j) is `influent.attribute`'s: how much test sample j's loss rises when
training sample i is removed, so the *largest* entries of column j are the training samples that help j most
and the *smallest* (most negative) are those that harm it most.

Layout of the output folder: ``attribution.zarr`` (array (n_train, n_test), chunked (n_train, block)),
``topk.npz`` (helpful_index, helpful_value, harmful_index, harmful_value, each (n_test, k); train_ids,
test_ids) and ``meta.json`` (method, options, sizes). `explain` reads a folder back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Split
from ..data.validate import InputError, check_number
from ..data.atomic import atomic_group, atomic_write
from ..data.io import read_table
from ..methods import DEFAULT_ATTRIBUTION
from ..models.base import _eval_mode
from .verbs import _check_test, _check_used, _job, _pairwise


@dataclass
class TopK:
    """The k most helpful and most harmful training rows of each test sample (row indices into train).

    Attributes
    ----------
    helpful_index, helpful_value : (n_test, k) largest attributions per test sample, in decreasing order
    harmful_index, harmful_value : (n_test, k) smallest attributions per test sample, in increasing order
    train_ids, test_ids : the splits' sample ids
    """

    helpful_index: np.ndarray
    helpful_value: np.ndarray
    harmful_index: np.ndarray
    harmful_value: np.ndarray
    train_ids: np.ndarray
    test_ids: np.ndarray


def _top(A: np.ndarray, k: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per column of A (n, m): the k rows with the largest (or smallest) entries, in that order, and their
    values; both (m, k). O(n m) with a partial partition."""
    B = -A if largest else A
    n = A.shape[0]
    part = np.argpartition(B, k - 1, axis=0)[:k] if k < n else np.repeat(np.arange(n)[:, None], A.shape[1], 1)
    order = np.argsort(np.take_along_axis(B, part, 0), axis=0, kind="stable")
    idx = np.take_along_axis(part, order, 0)
    return idx.T, np.take_along_axis(A, idx, 0).T


def _topk(A: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (*_top(A, k, True), *_top(A, k, False))


def attribute_stream(model: Any, train: Split, test: Split, out: str | Path, method: str = DEFAULT_ATTRIBUTION, *,
                     k: int = 10, block: int = 64, chunk_size: int = 512, seed: int = 0, force: bool = False,
                     check_options: bool = True, **options: Any) -> TopK:
    """Write the (n_train, n_test) attributions of `method` to `out` block by block; return the top-k.

    Parameters
    ----------
    model, train, test, method, chunk_size, seed, **options : as in `influent.attribute`
    out : output folder (created; an existing one is replaced only with `force`)
    k : how many most helpful and most harmful training samples to keep per test sample
    block : test samples per block; memory O(n_train * block) for the block plus the method's own
        (a solver is fitted once and reused for every block)
    check_options : refuse options the pairwise form never read (a misspelt option); False for the options of
        a score run, already checked there, which may hold options only the method's score form reads
    """
    spec = _pairwise(method)
    k = check_number(k, "k", kind=int, low=1)
    block = check_number(block, "block", kind=int, low=1)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"{out} already holds outputs; pass force=True (--force) to replace them")
    job = _job(model, train, None, options, chunk_size, None, seed, None, method)  # checked before `out` exists
    _check_test(model, test)
    out.mkdir(parents=True, exist_ok=True)
    import zarr

    solver = None
    fit_solver = job.solver

    def cached_solver():  # the curvature does not depend on the test block: fit it once
        nonlocal solver
        if solver is None:
            solver = fit_solver()
        return solver

    job.solver = cached_solver  # type: ignore[method-assign]
    n, m = len(train), len(test)
    kk = min(int(k), n)
    Z = zarr.open_array(str(out / "attribution.zarr"), mode="w", shape=(n, m), chunks=(n, int(block)), dtype="float64")
    hi_i, hi_v = np.empty((m, kk), np.int64), np.empty((m, kk))
    lo_i, lo_v = np.empty((m, kk), np.int64), np.empty((m, kk))
    with _eval_mode(model._require_fitted()):
        for s in range(0, m, int(block)):
            e = min(m, s + int(block))
            A = np.asarray(spec.pairwise(job, test.subset(np.arange(s, e))), dtype=np.float64)  # (n, e - s)
            Z[:, s:e] = A
            hi_i[s:e], hi_v[s:e], lo_i[s:e], lo_v[s:e] = _topk(A, kk)
    if check_options:
        _check_used(job, method)
    top = TopK(hi_i, hi_v, lo_i, lo_v, np.asarray(train.ids), np.asarray(test.ids))
    settings = job.settings()
    meta = {"method": method, "k": kk, "block": int(block), "n_train": n, "n_test": m, "options": settings}

    def write_topk(path: Path) -> None:
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to the staged name
            np.savez(f, **asdict(top))

    with atomic_group():  # both files appear together, with the umask's modes, or neither
        atomic_write(out / "topk.npz", write_topk)
        atomic_write(out / "meta.json", lambda path: path.write_text(json.dumps(meta, default=str, indent=1)))
    return top


def topk_rows(model: Any, train: Split, test: Split, method: str = DEFAULT_ATTRIBUTION, *, k: int = 10,
              chunk_size: int = 512, seed: int = 0, check_options: bool = True, **options: Any) -> TopK:
    """The top-k of a few test samples computed in memory, nothing written: the (n_train, len(test))
    attribution of `method`'s pairwise form (as `influent.attribute`) reduced to the k most helpful and most
    harmful training samples of each. For `influent explain` on a run scored without ``--topk``."""
    spec = _pairwise(method)
    k = check_number(k, "k", kind=int, low=1)
    job = _job(model, train, None, options, chunk_size, None, seed, None, method)
    _check_test(model, test)
    with _eval_mode(model._require_fitted()):
        A = np.asarray(spec.pairwise(job, test), dtype=np.float64)  # (n_train, len(test))
    if check_options:
        _check_used(job, method)
    return TopK(*_topk(A, min(k, len(train))), np.asarray(train.ids), np.asarray(test.ids))


def load_topk(folder: str | Path) -> tuple[TopK, dict[str, Any]]:
    """(TopK, meta) of a folder written by `attribute_stream`, or of a run folder of ``influent score --topk K``
    (its ``attribution/`` sub-folder); else a one-line `InputError`."""
    folder = Path(folder)
    if not (folder / "topk.npz").is_file() and (folder / "attribution" / "topk.npz").is_file():
        folder = folder / "attribution"
    if not (folder / "topk.npz").is_file() or not (folder / "meta.json").is_file():
        raise InputError(f"{folder} holds no streamed attribution (topk.npz, meta.json); write one with "
                         "influent score --test FILE --topk K, or influent.attribute_stream")
    again = "write it again with influent score --test FILE --topk K --force"
    z = read_table(folder / "topk.npz", "the streamed attribution", kinds=("npz",), advice=again)
    try:
        top = TopK(**{f.name: z[f.name] for f in fields(TopK)})
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError, KeyError) as exc:  # a foreign topk.npz or a truncated meta.json
        raise InputError(f"the streamed attribution: cannot read {folder} ({type(exc).__name__}: {exc}); "
                         f"{again}") from None
    return top, meta


def explain(folder: str | Path, test_row: int) -> dict[str, list[tuple[Any, float]]]:
    """{"helpful": [(train id, attribution), ...], "harmful": [...]} for test row `test_row` of a folder."""
    top, _ = load_topk(folder)
    m = top.helpful_index.shape[0]
    if not 0 <= int(test_row) < m:
        raise InputError(f"--test-row must be in [0, {m - 1}], got {test_row}")
    j = int(test_row)
    return {"helpful": [(top.train_ids[i].item(), float(v)) for i, v in zip(top.helpful_index[j], top.helpful_value[j])],
            "harmful": [(top.train_ids[i].item(), float(v)) for i, v in zip(top.harmful_index[j], top.harmful_value[j])]}
