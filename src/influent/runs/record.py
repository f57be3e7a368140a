"""The run record on disk: write a run's outputs (scores.parquet, run.json, report.html) together,
read a run folder back, and rebuild its report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any
import numpy as np
import pandas as pd
from ..data.validate import InputError, check_output_dir
from ..data.scores import Scores, jsonable
from ..data.atomic import atomic_write
from .inputs import Data, load_data
from .config import ATTRIBUTION_DIR, OUTPUT_FILES, RunConfig
from .pipeline import Outcome
from ..report import build_report


def write_outputs(out: str | Path, outcome: Outcome) -> list[Path]:
    """Write scores.parquet, run.json and report.html under `out`, all or nothing: each is written to a
    temporary file and flushed, and the three are moved into place together (`atomic_group`); on a failure
    or an interruption none is, and `out` is removed again when this call created it. A staged top-k
    attribution folder (``--topk``) is moved to ``out/attribution`` after them; without one, an earlier run's
    ``out/attribution`` (replaced with --force) is removed."""
    from ..data.atomic import atomic_group

    out = Path(out)
    check_output_dir(out)
    created = not out.exists()
    written = [out / name for name in OUTPUT_FILES]
    staged = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        if outcome.attribution is not None:  # --topk: staged beside its destination, moved in after the files
            import shutil
            import tempfile

            staged = Path(tempfile.mkdtemp(prefix=f".{ATTRIBUTION_DIR}.", suffix=".tmp", dir=out))
            shutil.move(str(outcome.attribution), str(staged / ATTRIBUTION_DIR))
        with atomic_group():
            outcome.scores.save(out / "scores.parquet")
            write_json(out / "run.json", outcome.record)
            atomic_write(out / "report.html", lambda p: p.write_text(outcome.html, encoding="utf-8"))
        if staged is not None:
            _replace_folder(staged / ATTRIBUTION_DIR, out / ATTRIBUTION_DIR)
            written.append(out / ATTRIBUTION_DIR)
        elif (out / ATTRIBUTION_DIR / "topk.npz").is_file():  # an earlier run's (replaced with --force): stale now
            import shutil

            shutil.rmtree(out / ATTRIBUTION_DIR)
    except BaseException as exc:
        import shutil

        for folder in (staged, outcome.attribution):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        if created and out.exists() and not any(out.iterdir()):
            out.rmdir()
        if isinstance(exc, OSError):
            raise InputError(f"cannot write to {out}: {exc.strerror or exc}; choose another --out") from None
        raise
    return written


def _replace_folder(src: Path, dest: Path) -> None:
    """Move folder `src` to `dest` (same filesystem), replacing an earlier `dest` (checked by the caller's
    --force) only once the new one is in place; the staging folder around `src` is removed."""
    import os
    import shutil

    old = None
    if dest.exists():
        old = src.parent / (dest.name + ".old")
        os.replace(dest, old)
    try:
        os.replace(src, dest)
    except BaseException:
        if old is not None:  # the earlier folder goes back where it was
            os.replace(old, dest)
        raise
    shutil.rmtree(src.parent, ignore_errors=True)


def input_paths(cfg: RunConfig) -> dict[str, str]:
    """The files a run reads: option name -> path (the model file of a "file.py:function" model too)."""
    found = {"--train": cfg.train, "--valid": cfg.valid, "--test": cfg.test}
    if ":" in cfg.model:
        found["--model"] = cfg.model.rsplit(":", 1)[0]
    return {k: v for k, v in found.items() if v}


def write_json(path: str | Path, obj: Any) -> Path:
    text = json.dumps(jsonable(obj), indent=1)
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def load_run(folder: str | Path) -> tuple[dict[str, Any], RunConfig]:
    """The record and config of a finished run folder (as written by `write_outputs`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"run folder not found: {folder}; pass the --out folder of `influent score`")
    path = folder / "run.json"
    if not path.is_file():
        raise InputError(f"{folder} has no run.json; is it the --out folder of `influent score`?")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise InputError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(record, dict) or "config" not in record:
        raise InputError(f"{path} has no 'config'; is it written by influent?")
    return record, RunConfig.from_dict(record["config"])


def absolute_inputs(record: dict[str, Any], cfg: RunConfig) -> RunConfig:
    """`cfg` with each data file given by a relative path replaced by the absolute path the run recorded
    (`run.json` "data"), so that a run folder can be used from any working directory."""
    files = record.get("data") or {}
    changes = {role: files[role]["path"] for role in ("train", "valid", "test")
               if getattr(cfg, role) and not Path(getattr(cfg, role)).is_absolute()
               and isinstance(files.get(role), dict) and files[role].get("path")}
    return dataclasses.replace(cfg, **changes)


def reload_train(folder: str | Path) -> tuple[dict[str, Any], RunConfig, Data, Scores]:
    """Re-read the training data of a finished run, check it is unchanged, and load its scores."""
    record, cfg = load_run(folder)
    cfg = absolute_inputs(record, cfg)
    scores = Scores.load(Path(folder) / "scores.parquet")
    data = load_data(cfg)
    want = record.get("data", {}).get("train", {}).get("fingerprint")
    got = data.train.fingerprint()
    if want and want != got:
        raise InputError(f"the training data {cfg.train} changed since it was scored (fingerprint {got} != {want}); "
                         "run influent score again")
    if len(scores) != len(data.train) or not np.array_equal(np.asarray(scores.ids).astype(str),
                                                            np.asarray(data.train.ids).astype(str)):
        raise InputError(f"{folder}/scores.parquet does not match the training data (ids differ); run influent score again")
    return record, cfg, data, scores


def write_rows(path: str | Path, rows: Any) -> Path:
    """Write rows (a DataFrame: .csv/.parquet; NPZ arrays: .npz) atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if isinstance(rows, pd.DataFrame):
        if suffix == ".csv":
            return atomic_write(path, lambda p: rows.to_csv(p, index=False))
        if suffix in (".parquet", ".pq"):
            return atomic_write(path, lambda p: rows.to_parquet(p, index=False))
        raise InputError(f"{path}: write a table as .csv or .parquet, not {suffix or 'no suffix'!r}")
    if suffix != ".npz":
        raise InputError(f"{path}: the training data is NPZ, so write the result as .npz")

    def save(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **rows)

    return atomic_write(path, save)


def write_report(folder: str | Path) -> Path:
    """Rebuild ``folder/report.html`` from ``folder/run.json`` (atomically) and return its path."""
    record, _ = load_run(folder)
    if "results" not in record or "summary" not in record.get("results", {}):
        raise InputError(f"{folder}/run.json has no results; run influent score again")
    html = build_report(record)
    try:
        return atomic_write(Path(folder) / "report.html", lambda p: p.write_text(html, encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot write {Path(folder) / 'report.html'}: {exc.strerror or exc}; "
                         "make the folder writable or copy it elsewhere") from None
