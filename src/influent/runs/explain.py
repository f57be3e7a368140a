"""`influent explain` on a run folder: the most helpful and most harmful training samples of chosen test rows,
shown as the rows themselves (features as given, or text), read from the run's ``attribution/`` (``--topk``) or
computed for those rows alone when the run has none."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..data.validate import InputError
from .inputs import Data
from .steps import Steps

SHOWN_COLUMNS = 10  # a table row shows this many columns, then "(+N more)"
TEXT_CHARS = 200


def row_text(data: Data, role: str, position: int, cfg: Any) -> str:
    """One row of `role` as the user gave it: its text (``--text-column``), else its feature columns as
    read ("name=value", the first `SHOWN_COLUMNS`), else its array shape (NPZ)."""
    frame = data.frames.get(role)
    if isinstance(frame, pd.DataFrame):
        pos = int(position)
        if cfg.text_column and cfg.text_column in frame.columns:
            text = " ".join(str(frame[cfg.text_column].iat[pos]).split())
            return repr(text[:TEXT_CHARS] + ("..." if len(text) > TEXT_CHARS else ""))
        aside = {cfg.label, cfg.group, cfg.id_column, cfg.clean_label_column, *cfg.drop}
        cols = [c for c in frame.columns if c not in aside]
        parts = [f"{c}={frame[c].iat[pos]}" for c in cols[:SHOWN_COLUMNS]]  # each column's own type
        more = len(cols) - SHOWN_COLUMNS
        return ", ".join(parts) + (f" (+{more} more)" if more > 0 else "")
    split = getattr(data, role)
    return f"array of shape {tuple(np.shape(split.X)[1:])}"


def check_explainable(folder: str | Path, test_rows: Sequence[int]) -> None:
    """One-line `InputError` before any work when the run in `folder` has no test split or a row is out of
    range (read from run.json alone)."""
    from .record import load_run

    record, cfg = load_run(folder)
    if not cfg.test:
        raise InputError(f"{folder} was scored without a test split; explain needs test rows: score again with "
                         "--test FILE (add --topk K to keep the top-k of every test sample)")
    m = (record.get("data", {}).get("test") or {}).get("rows")
    bad = [int(j) for j in test_rows if m is not None and not 0 <= int(j) < int(m)]
    if bad:
        raise InputError(f"--test-row must be in [0, {int(m) - 1}], got {bad[0]}")


def explain_run(folder: str | Path, test_rows: Sequence[int], k: int = 10, steps: Steps | None = None) -> dict[str, Any]:
    """The top-k training samples of `test_rows` of the run in `folder`, with their rows.

    From the run's ``attribution/`` when it has one (``--topk``); otherwise the run's model is refitted
    (deterministically, as `influent score` fitted it) and the attribution of those test rows alone is
    computed with the method's pairwise form (else "ip", as ``--topk``). Returns {"method", "k", "source"
    ("attribution folder" or "computed"), "note", "examples": [{"test_row", "test_id", "label", "row",
    "helpful": [{"id", "label", "value", "row"}], "harmful": [...]}]}.
    """
    from ..api.stream import load_topk, topk_rows
    from .pipeline import fit_model, pairwise_method
    from .record import reload_train

    steps = steps or Steps()
    folder = Path(folder)
    with steps.step("read data"):
        record, cfg, data, _ = reload_train(folder)
    if data.test is None:
        raise InputError(f"{folder} was scored without a test split; explain needs test rows: score again with "
                         "--test FILE (add --topk K to keep the top-k of every test sample)")
    m = len(data.test)
    rows = [int(j) for j in test_rows]
    bad = [j for j in rows if not 0 <= j < m]
    if bad:
        raise InputError(f"--test-row must be in [0, {m - 1}], got {bad[0]}")
    has_topk = (folder / "attribution" / "topk.npz").is_file()
    if has_topk:
        top, meta = load_topk(folder)
        method, note, source = meta.get("method", cfg.method), None, "attribution folder"
        index = {"helpful": top.helpful_index[rows], "harmful": top.harmful_index[rows]}
        value = {"helpful": top.helpful_value[rows], "harmful": top.harmful_value[rows]}
    else:
        method, options, note = pairwise_method(cfg)
        model, _ = fit_model(cfg, data, steps)
        with steps.step(f"attribution of {len(rows)} test row(s) ({method})"):
            top = topk_rows(model, data.train, data.test.subset(np.asarray(rows)), method, k=k,
                            chunk_size=cfg.chunk_size, seed=cfg.seed, check_options=False, **options)
        source = "computed"
        index = {"helpful": top.helpful_index, "harmful": top.harmful_index}
        value = {"helpful": top.helpful_value, "harmful": top.harmful_value}
    kk = min(int(k), index["helpful"].shape[1])
    train_y, test_y = np.asarray(data.train.y), np.asarray(data.test.y)
    examples = []
    for r, j in enumerate(rows):
        ex: dict[str, Any] = {"test_row": j, "test_id": data.test.ids[j].item(), "label": str(test_y[j]),
                              "row": row_text(data, "test", j, cfg)}
        for kind in ("helpful", "harmful"):
            ex[kind] = [{"id": data.train.ids[i].item(), "label": str(train_y[i]), "value": float(v),
                         "row": row_text(data, "train", int(i), cfg)}
                        for i, v in zip(index[kind][r][:kk], value[kind][r][:kk])]
        examples.append(ex)
    return {"method": method, "k": kk, "source": source, "note": note, "examples": examples}
