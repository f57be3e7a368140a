"""One `influent clean` run: read the data, fit the model, `influent.clean`, and write the issues table, the
cleaned training file (in the input's format) and report.html, all or nothing."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..actions.clean import CleanResult, clean
from ..data.scores import jsonable
from ..data.validate import InputError
from .config import RunConfig, versions
from .inputs import Data, frame_rows
from .steps import Steps

CLEAN_FILES = ("issues", "train-clean", "report.html")  # issues.<fmt>, train-clean.<fmt>, report.html
ISSUE_COLUMNS = ("suggested_label", "p_label", "score", "is_issue", "rank")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".npz")
TOP = 12


@dataclass
class CleanOutcome:
    """What a clean run writes: the issues rows, the cleaned rows, the record (JSON-able) and the report."""

    result: CleanResult
    issues_rows: Any
    clean_rows: Any
    record: dict[str, Any]
    html: str


def output_paths(out: Path, train_path: str) -> dict[str, Path]:
    """The files written under `out`: issues and train-clean in the training file's format, report.html."""
    suffix = Path(train_path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"--train {train_path}: use a .csv, .parquet or .npz file")
    return {"issues": out / f"issues{suffix}", "train-clean": out / f"train-clean{suffix}",
            "report": out / "report.html"}


DECISION_FLAGS = {"guard": "--guard", "select": "--select", "budget_factors": "--budget-factor"}


def reproduce_command(cfg: RunConfig, out: Path, actions: Sequence[str] | None, budgets: Sequence[Any] | None,
                      metric: str, n_boot: int, level: float, options: dict[str, Any], evidence: str | None = None,
                      holdout: str = "valid+cv", decision: dict[str, Any] | None = None) -> str:
    """The `influent clean` command line that repeats this run (absolute input paths, every setting; `decision`:
    the decision rule's options given, `guard`, `select`, `budget_factors`)."""
    args = ["influent", "clean", "--train", cfg.train, "--valid", cfg.valid, "--label", cfg.label]
    for flag, value in (("--id", cfg.id_column), ("--group", cfg.group)):
        if value:
            args += [flag, value]
    for col in cfg.drop:
        args += ["--drop", col]
    args.append("--standardize" if cfg.standardize else "--no-standardize")  # explicit: the default depends on --model
    args += ["--model", cfg.model]
    for key, value in cfg.model_options.items():
        flag = "--C" if key == "C" else "--" + key.replace("_", "-")
        args += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    args += ["--holdout", holdout]
    if actions is not None:
        args += ["--actions", ",".join(actions)]
    for b in budgets or ():
        args += ["--budget", str(b)]
    for key, value in (decision or {}).items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            args += [DECISION_FLAGS[key], f"{v:g}" if isinstance(v, float) else str(v)]
    args += ["--metric", metric]
    if evidence is not None:
        args += ["--evidence", evidence]
    args += ["--n-boot", str(n_boot), "--level", f"{level:g}", "--seed", str(cfg.seed)]
    for key, value in options.items():
        import json

        args += ["-o", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    args += ["--out", str(out)]
    return shlex.join(str(a) for a in args)


def _add_issue_columns(rows: Any, issues: Any) -> Any:
    """The original rows plus the issue columns (prefixed ``issue_`` where the table already has the name)."""
    import pandas as pd

    cols = {}
    for c in ISSUE_COLUMNS:
        name = c if c not in (rows.columns if isinstance(rows, pd.DataFrame) else rows) else f"issue_{c}"
        cols[name] = issues[c].to_numpy()
    if isinstance(rows, pd.DataFrame):
        return rows.assign(**cols)
    return {**rows, **cols}


def cleaned_rows(data: Data, cfg: RunConfig, res: CleanResult) -> Any:
    """The training rows as the user gave them, with the action applied: trim drops `positions`, relabel
    writes the new labels into the label column, reweight adds a ``weight`` column, none copies the rows."""
    import pandas as pd

    n = len(data.train)
    if res.action == "trim":
        keep = np.setdiff1d(np.arange(n), res.positions)
        return frame_rows(data, keep)
    rows = frame_rows(data, np.arange(n))
    if res.action == "relabel":
        y = res.train.y
        if isinstance(rows, pd.DataFrame):
            rows = rows.copy()
            rows[cfg.label] = pd.Series(y).astype(rows[cfg.label].dtype, errors="ignore")
            return rows
        return {**rows, cfg.label: y}
    if res.action == "reweight":
        if "weight" in (rows.columns if isinstance(rows, pd.DataFrame) else rows):
            raise InputError("the training data already has a 'weight' column; rename it to write the weights")
        return rows.assign(weight=res.weights) if isinstance(rows, pd.DataFrame) else {**rows, "weight": res.weights}
    return rows


def clean_record(res: CleanResult, cfg: RunConfig, data: Data, model_label: str, command: str,
                 timings: dict[str, float], kind: str = "clean") -> dict[str, Any]:
    """The JSON-able facts the report shows (and that a test can check)."""
    issues = res.issues
    order = np.argsort(issues["rank"].to_numpy(), kind="stable")[:TOP]
    top = []
    for i in order:
        r = issues.iloc[int(i)]
        rec = {"position": int(i), "id": jsonable(r["id"]), "label": str(r["label"]),
               "suggested": str(r["suggested_label"]), "p_label": float(r["p_label"]), "is_issue": bool(r["is_issue"]),
               "acted": bool(np.isin(i, res.positions))}
        if data.clean is not None:
            rec["clean"] = str(data.clean[i])
        if data.text is not None:
            rec["text"] = str(data.text[i])[:300]
        top.append(rec)
    noisy = None
    if data.clean is not None:
        flipped = np.asarray(data.clean).astype(str) != np.asarray(data.train.y).astype(str)
        noisy = {"n_flipped": int(flipped.sum()), "flipped_among_issues": int((flipped & issues["is_issue"].to_numpy()).sum()),
                 "flipped_among_acted": int(flipped[res.positions].sum())}
    return jsonable({
        "command": kind, "reproduce": command, "summary": res.summary(), "action": res.action, "budget": res.budget,
        "gain": res.gain, "gain_ci": list(res.gain_ci), "metric": res.metric, "evidence": res.evidence,
        "level": res.level,
        "n_train": len(data.train), "n_valid": len(data.valid), "n_issues": res.n_issues,
        "train_file": Path(cfg.train).name, "valid_file": Path(cfg.valid).name, "label": cfg.label,
        "model": model_label, "refit_note": res.refit_note, "notes": res.notes,
        "candidates": res.candidates.to_dict(orient="records"), "top": top, "noisy": noisy,
        "timings": timings, "versions": versions(), "config": cfg.to_dict(),
    })


def run_clean(cfg: RunConfig, data: Data, steps: Steps, *, out: Path, actions: Sequence[str] | None,
              budgets: Sequence[Any] | None, metric: str, n_boot: int, level: float, n_jobs: int,
              options: dict[str, Any], model: Any = None, evidence: str | None = None,
              holdout: str = "valid+cv", decision: dict[str, Any] | None = None) -> CleanOutcome:
    """Fit the model of `cfg` on the training split (unless a fitted `model` is given), run `clean` (with the
    decision rule's options `decision`: guard, select, budget_factors), and build what `write_clean` writes."""
    decision = dict(decision or {})
    both = sorted(set(decision) & set(options))
    if both:
        raise InputError(f"{both[0]} is an option of clean's decision, not of the detector: use --{both[0].replace('_', '-')}")
    from ..models.factory import build_model, model_label
    from ..report.clean import build_clean_report

    if data.valid is None:
        raise InputError("no validation data: pass --valid FILE (the candidates are measured on it)")
    if model is None:
        with steps.step("fit model"):
            model = build_model(cfg.model, cfg.model_options, data.train, cfg.seed)
            if not model.fitted:
                model.fit(data.train)
    with steps.step("find label issues, refit candidates, bootstrap"):
        res = clean(model, data.train, data.valid, actions=actions, budgets=budgets, metric=metric, n_boot=n_boot,
                    level=level, n_jobs=n_jobs, seed=cfg.seed, evidence=evidence, holdout=holdout,
                    backend=cfg.backend, backend_options=cfg.backend_options(), **decision, **options)
    with steps.step("build report"):
        issues_rows = _add_issue_columns(frame_rows(data, np.arange(len(data.train))), res.issues)
        rows = cleaned_rows(data, cfg, res)
        command = reproduce_command(cfg, out, actions, budgets, metric, n_boot, level, options, evidence, holdout,
                                    decision)
        record = clean_record(res, cfg, data, model_label(cfg.model, model), command, dict(steps.timings))
        html = build_clean_report(record)
    return CleanOutcome(res, issues_rows, rows, record, html)


def write_clean(out: Path, paths: dict[str, Path], outcome: CleanOutcome) -> list[Path]:
    """Write the three files together (`atomic_group`): all or none."""
    from ..data.atomic import atomic_group, atomic_write
    from .record import write_rows

    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_group():
            write_rows(paths["issues"], outcome.issues_rows)
            write_rows(paths["train-clean"], outcome.clean_rows)
            atomic_write(paths["report"], lambda p: p.write_text(outcome.html, encoding="utf-8"))
    except BaseException as exc:
        if created and out.exists() and not any(out.iterdir()):
            out.rmdir()
        if isinstance(exc, OSError):
            raise InputError(f"cannot write to {out}: {exc.strerror or exc}; choose another --out") from None
        raise
    return list(paths.values())
