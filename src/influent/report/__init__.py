"""The HTML report: one self-contained, offline page per run (inline SVG charts, no scripts, no network).

``build_report(record)`` turns a run record (the dict saved as ``run.json``; its ``results`` section is
computed by `influent.report.compute.report_data`) into the page; ``write_report(folder)`` rebuilds
``folder/report.html`` from ``folder/run.json``.
"""

from __future__ import annotations

from pathlib import Path

from ..data.validate import InputError
from ..scores import atomic_write
from .html import SECTIONS, build_report

__all__ = ["build_report", "write_report", "SECTIONS"]


def write_report(folder: str | Path) -> Path:
    """Rebuild ``folder/report.html`` from ``folder/run.json`` (atomically) and return its path."""
    from ..run import load_run

    record, _ = load_run(folder)
    if "results" not in record or "summary" not in record.get("results", {}):
        raise InputError(f"{folder}/run.json has no results; run influent score again")
    html = build_report(record)
    try:
        return atomic_write(Path(folder) / "report.html", lambda p: p.write_text(html, encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot write {Path(folder) / 'report.html'}: {exc.strerror or exc}; "
                         "make the folder writable or copy it elsewhere") from None
