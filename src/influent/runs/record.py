"""The run record on disk: write a run's outputs (scores.parquet, run.json, report.html) together,
read a run folder back, and rebuild its report."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any
import numpy as np
import pandas as pd
from ..data.validate import InputError, check_output_dir, os_message
from ..data.scores import Scores, jsonable
from ..data.atomic import atomic_write, move_new, remove_stale, staging_folder
from .inputs import Data, load_data
from .config import ATTRIBUTION_DIR, OUTPUT_FILES, RunConfig
from .pipeline import Outcome
from ..report import build_report


def write_outputs(out: str | Path, outcome: Outcome, replace: bool = False) -> list[Path]:
    """Write scores.parquet, run.json and report.html (and a staged ``--topk`` attribution folder) under
    `out`, all or nothing, and without a trace on a failure or an interruption.

    A new `out` is staged whole as a hidden folder beside it and moved into place with `move_new`: of two runs
    writing the same new folder exactly one wins, the other gets the "already exists" error. Into an existing
    folder the files are staged beside their destinations and moved together (`atomic_group`), replacing
    earlier outputs only with ``replace=True`` (``--force``); an earlier run's ``attribution/`` is replaced
    by the new one, or removed when this run has none. Stale staging files of killed runs are removed.
    `OSError` (a full disk, a name too long) becomes a one-line `InputError`.
    """
    out = Path(out)
    check_output_dir(out)
    made: list[Path] = []  # folders above `out` created here, removed again on a failure
    staged = None
    try:
        if not out.exists():
            for folder in reversed([out.parent, *out.parent.parents]):
                if not folder.exists():
                    folder.mkdir()
                    made.append(folder)
            staged = staging_folder(out.name, out.parent)
            written = _write_files(staged, outcome, replace=True)
            move_new(staged, out)
            return [out / p.relative_to(staged) for p in written]
        remove_stale(out)
        return _write_files(out, outcome, replace=replace)
    except BaseException as exc:
        for folder in (staged, outcome.attribution):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:  # not empty: something else wrote there meanwhile
                break
        if isinstance(exc, FileExistsError):
            raise InputError(f"{out} already exists (another run wrote it meanwhile); pass --force to replace it, "
                             "or choose another --out") from None
        if isinstance(exc, OSError):
            raise InputError(f"cannot write the outputs: {os_message(exc)}" if exc.filename else
                             f"cannot write to {out}: {os_message(exc)}") from None
        raise


def _write_files(out: Path, outcome: Outcome, replace: bool) -> list[Path]:
    """Stage the three files in `out` and move them in together, then the attribution folder (see
    `write_outputs`)."""
    from ..data.atomic import atomic_group

    with atomic_group(replace=replace):
        outcome.scores.save(out / "scores.parquet")
        write_json(out / "run.json", outcome.record)
        atomic_write(out / "report.html", lambda p: p.write_text(outcome.html, encoding="utf-8"))
    written = [out / name for name in OUTPUT_FILES]
    if outcome.attribution is not None:  # --topk: staged on the same filesystem, moved in after the files
        folder = staging_folder(ATTRIBUTION_DIR, out)
        shutil.move(str(outcome.attribution), str(folder / ATTRIBUTION_DIR))
        _replace_folder(folder / ATTRIBUTION_DIR, out / ATTRIBUTION_DIR, replace)
        written.append(out / ATTRIBUTION_DIR)
    elif replace and (out / ATTRIBUTION_DIR / "topk.npz").is_file():  # an earlier run's (--force): stale now
        shutil.rmtree(out / ATTRIBUTION_DIR)
    return written


def _replace_folder(src: Path, dest: Path, replace: bool = True) -> None:
    """Move folder `src` to `dest` (same filesystem), replacing an earlier `dest` only with `replace` and only
    once the new one is in place; the staging folder around `src` is removed."""
    import os

    old = None
    if replace and dest.exists():
        old = src.parent / (dest.name + ".old")
        os.replace(dest, old)
    try:
        move_new(src, dest)
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
    check_record(record, path)
    return record, RunConfig.from_dict(record["config"])


_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "None": (type(None),),
          "list": (list,), "dict": (dict,), "Any": (object,)}


def _expected(annotation: str) -> tuple[type, ...] | None:
    """The Python types a `RunConfig` field's annotation ("str | None", "list[int] | None", ...) allows as a
    JSON value, or None where the annotation says something this reading does not know."""
    found: tuple[type, ...] = ()
    for part in str(annotation).split("|"):
        kind = _TYPES.get(part.strip().split("[", 1)[0])
        if kind is None:
            return None
        found += kind
    return found


def check_record(record: dict[str, Any], path: str | Path = "run.json") -> None:
    """Raise a one-line `InputError` unless `record` (a parsed run.json) has the structure a run writes: a
    ``config`` object whose settings have their `RunConfig` types, and ``data`` / ``results`` /
    ``results.summary`` objects where present."""
    cfg = record.get("config")
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: 'config' is {_kind(cfg)}, not an object of settings; the file is damaged "
                         "or not written by influent: run influent score again")
    fields = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    for key, value in cfg.items():
        want = _expected(fields[key]) if key in fields else None
        if want is not None and not (isinstance(value, want) and not (isinstance(value, bool) and bool not in want)):
            raise InputError(f"{path}: config setting {key!r} is {_kind(value)}, not {fields[key]}; the file is "
                             "damaged: run influent score again")
    for key in ("data", "results", "timings"):
        if key in record and not isinstance(record[key], dict):
            raise InputError(f"{path}: {key!r} is {_kind(record[key])}, not an object; the file is damaged: "
                             "run influent score again")
    for role, entry in (record.get("data") or {}).items():
        if entry is not None and not isinstance(entry, dict):
            raise InputError(f"{path}: data.{role} is {_kind(entry)}, not an object; the file is damaged: "
                             "run influent score again")
    results = record.get("results") or {}
    summary = results.get("summary")
    if "summary" in results and not isinstance(summary, dict):
        raise InputError(f"{path}: results.summary is {_kind(summary)}, not an object; the file is damaged: "
                         "run influent score again")


def _kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__} ({json.dumps(value)[:40]})"


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
    want = ((record.get("data") or {}).get("train") or {}).get("fingerprint")
    got = data.train.fingerprint()
    if want and want != got:
        raise InputError(f"the training data {cfg.train} changed since it was scored (fingerprint {got} != {want}); "
                         "run influent score again")
    if len(scores) != len(data.train) or not np.array_equal(np.asarray(scores.ids).astype(str),
                                                            np.asarray(data.train.ids).astype(str)):
        raise InputError(f"{folder}/scores.parquet does not match the training data (ids differ); run influent score again")
    return record, cfg, data, scores


def write_rows(path: str | Path, rows: Any, replace: bool = True) -> Path:
    """Write rows (a DataFrame: .csv/.parquet; NPZ arrays: .npz) atomically; ``replace=False``: never over an
    existing file (`FileExistsError`, see `atomic_write`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if isinstance(rows, pd.DataFrame):
        if suffix == ".csv":
            return atomic_write(path, lambda p: rows.to_csv(p, index=False), replace)
        if suffix in (".parquet", ".pq"):
            return atomic_write(path, lambda p: rows.to_parquet(p, index=False), replace)
        raise InputError(f"{path}: write a table as .csv or .parquet, not {suffix or 'no suffix'!r}")
    if suffix != ".npz":
        raise InputError(f"{path}: the training data is NPZ, so write the result as .npz")

    def save(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, **rows)

    return atomic_write(path, save, replace)


def write_report(folder: str | Path) -> Path:
    """Rebuild ``folder/report.html`` from ``folder/run.json`` (atomically) and return its path."""
    record, _ = load_run(folder)
    if "results" not in record or "summary" not in record.get("results", {}):
        raise InputError(f"{folder}/run.json has no results; run influent score again")
    try:
        html = build_report(record)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise InputError(f"{Path(folder) / 'run.json'} is not a complete run record ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:80]}); run influent score again") from None
    try:
        return atomic_write(Path(folder) / "report.html", lambda p: p.write_text(html, encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot write {Path(folder) / 'report.html'}: {exc.strerror or exc}; "
                         "make the folder writable or copy it elsewhere") from None
