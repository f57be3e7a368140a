"""The HTML report: one self-contained, offline page per run (inline SVG charts, no scripts, no network).

``build_report(record)`` turns a run record (the dict saved as ``run.json``; its ``results`` section is
computed by `influent.runs.summary.report_data`) into the page. It formats what it is given and computes
nothing; `influent.runs.record.write_report(folder)` rebuilds ``folder/report.html`` from ``folder/run.json``.
"""

from __future__ import annotations

from .html import SECTIONS, build_report

__all__ = ["build_report", "SECTIONS"]
