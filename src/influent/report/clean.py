"""The report page of `influent clean`: the recommendation with its gains and bounds, the command that
repeats it, every candidate tried (a table and two bound charts), and the samples most likely mislabelled.

Built from the record of `influent.runs.clean.clean_record`; self-contained like the score report."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from .style import CSS, pct as _pct
from .svg import BLUE, FONT, GREY, HARM_TEXT, INK, nice_ticks


def _gain(x: float | None, metric: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.1f}" if metric == "accuracy" else f"{x:+.3f}"


def _unit(metric: str) -> str:
    return "validation accuracy, points" if metric == "accuracy" else "decrease of validation log-loss"


def _finite(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def interval_chart(cands: list[dict[str, Any]], metric: str, width: int = 520) -> str:
    """One row per candidate: its gain over "none" in `metric` ("accuracy": points, "log_loss": decrease) as
    a dot and its one-sided bounds as a line; 0 marked."""
    key = metric
    rows = [c for c in cands[1:] if _finite(c.get(f"{key}_gain")) and _finite(c.get(f"{key}_low"))]
    if not rows:
        return ""
    vals = [v for c in rows for v in (c[f"{key}_low"], c[f"{key}_high"], c[f"{key}_gain"]) if _finite(v)]
    lo, hi = min(vals + [0.0]), max(vals + [0.0])
    pad = (hi - lo) * 0.06 or 1.0
    lo, hi = lo - pad, hi + pad
    left, right, top, rh = 200, 16, 26, 22
    h = top + rh * len(rows) + 34
    x = lambda v: left + (v - lo) / (hi - lo) * (width - left - right)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {h}" width="100%" role="img" '
             f'style="{FONT};max-width:{width}px"><title>{escape(_unit(metric))}: gain of every candidate over '
             f'leaving the data alone, with its bounds</title>',
             f'<line x1="{x(0):.1f}" y1="{top - 8}" x2="{x(0):.1f}" y2="{h - 30}" stroke="{GREY}" stroke-dasharray="4 3"/>',
             f'<text x="{x(0):.1f}" y="{top - 12}" font-size="11" fill="{GREY}" text-anchor="middle">no change</text>']
    for i, c in enumerate(rows):
        y = top + rh * i + rh / 2
        g, g_lo, g_hi = c[f"{key}_gain"], c[f"{key}_low"], c[f"{key}_high"]
        colour = BLUE if c.get("chosen") else (HARM_TEXT if g_hi < 0 else INK)
        label = f'{c["action"]} {int(c["budget"]):,}' + (f' ({c["ranking"]})' if c.get("ranking") not in (None, "", "default") else "")
        tip = f'{label}: {_gain(g, metric)} [{_gain(g_lo, metric)}, {_gain(g_hi, metric)}]'
        bold = ' font-weight="700"' if c.get("chosen") else ""
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="12" text-anchor="end" fill="{colour}"'
                     f'{bold}>{escape(label)}</text>')
        parts.append(f'<g><title>{escape(tip)}</title><line x1="{x(g_lo):.1f}" y1="{y:.1f}" '
                     f'x2="{x(g_hi):.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="2"/>'
                     f'<circle cx="{x(g):.1f}" cy="{y:.1f}" r="4" fill="{colour}"/></g>')
    for v in nice_ticks(lo, hi, 6):
        parts.append(f'<text x="{x(v):.1f}" y="{h - 14}" font-size="11" text-anchor="middle" fill="{GREY}">'
                     f'{_gain(v, metric)}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.1f}" y="{h - 1}" font-size="11" text-anchor="middle" '
                 f'fill="{INK}">{escape(_unit(metric))}</text></svg>')
    return "".join(parts)


def _headline(rec: dict[str, Any]) -> str:
    cls = "none" if rec["action"] == "none" else "act"
    return f'<p class="rec {cls}">{escape(rec["summary"])}</p>'


def _trim_note(rec: dict[str, Any]) -> str:
    """Say plainly when removing samples lowers the target, and what does help."""
    cands, metric = rec["candidates"], "accuracy"
    worse = [c for c in cands[1:] if c["action"] == "trim" and _finite(c.get("accuracy_gain")) and c["accuracy_gain"] < 0]
    if not worse:
        return ""
    w = min(worse, key=lambda c: c["accuracy_gain"])
    helps = ("nothing tried helps beyond its bound: keep the data and check the labels by hand, most likely "
             "wrong first (issues file, rank 0 first)" if rec["action"] == "none"
             else f"what helps is {escape(rec['summary'])}")
    return (f'<p class="note"><b>Trimming can hurt.</b> Removing the {int(w["budget"]):,} samples most likely '
            f'mislabelled changes the {escape(_unit(metric))} by {_gain(w["accuracy_gain"], metric)} '
            f'[{_gain(w["accuracy_low"], metric)}, {_gain(w["accuracy_high"], metric)}]; {helps}.</p>')


def candidates_table(rec: dict[str, Any]) -> str:
    head = ("<tr><th>action</th><th>ranking</th><th>samples changed</th><th>validation accuracy</th>"
            "<th>validation log-loss</th><th>accuracy gain, points [bounds]</th><th>log-loss decrease [bounds]</th>"
            "<th>passed</th><th>note</th></tr>")
    body = []
    for c in rec["candidates"]:
        ok = _finite(c.get("accuracy"))

        def cell(key: str) -> str:
            if c["action"] == "none":
                return '<td class="num">baseline</td>'
            if not ok:
                return '<td class="num">–</td>'
            return (f'<td class="num">{_gain(c[f"{key}_gain"], key)} [{_gain(c[f"{key}_low"], key)}, '
                    f'{_gain(c[f"{key}_high"], key)}]</td>')

        passed = "" if c["action"] == "none" else ("yes" if c.get("passed") else "no")
        body.append(f'<tr class="{"chosen" if c.get("chosen") else ""}"><td>{escape(c["action"])}'
                    f'{" ✓" if c.get("chosen") else ""}</td><td>{escape(str(c.get("ranking") or ""))}</td>'
                    f'<td class="num">{int(c["n_changed"]):,}</td>'
                    f'<td class="num">{_pct(c["accuracy"]) if ok else "–"}</td>'
                    f'<td class="num">{format(c["log_loss"], ".4f") if ok else "–"}</td>'
                    + cell("accuracy") + cell("log_loss")
                    + f'<td>{passed}</td><td>{escape(str(c.get("note") or ""))}</td></tr>')
    return f"<table>{head}{''.join(body)}</table>"


def top_table(rec: dict[str, Any]) -> str:
    rows = rec["top"]
    if not rows:
        return ""
    has_clean = any("clean" in r for r in rows)
    has_text = any("text" in r for r in rows)
    head = ("<tr><th>rank</th><th>id</th><th>given label</th><th>suggested</th><th>p(given label)</th>"
            + ("<th>known clean label</th>" if has_clean else "") + "<th>counted wrong</th><th>acted on</th>"
            + ("<th>text</th>" if has_text else "") + "</tr>")
    body = "".join(
        f'<tr><td class="num">{k}</td><td>{escape(str(r["id"]))}</td><td>{escape(r["label"])}</td>'
        f'<td>{escape(r["suggested"])}</td><td class="num">{_pct(r["p_label"])}</td>'
        + (f'<td>{escape(r.get("clean", ""))}{" (flipped)" if r.get("clean") != r["label"] else ""}</td>' if has_clean else "")
        + f'<td>{"yes" if r["is_issue"] else "no"}</td><td>{"yes" if r["acted"] else "no"}</td>'
        + (f'<td>{escape(r.get("text", ""))}</td>' if has_text else "") + "</tr>"
        for k, r in enumerate(rows))
    return f"<table>{head}{body}</table>"


def clean_section(rec: dict[str, Any], heading: str = "Recommendation") -> str:
    """The recommendation, the candidates (chart and table) and the most likely mislabelled samples: used by
    the clean report and, as one section, by the demo's report."""
    level = rec["level"]
    noisy = rec.get("noisy")
    known = ""
    if noisy:
        known = (f' The labels of {noisy["n_flipped"]:,} training samples are known to be flipped; '
                 f'{noisy["flipped_among_issues"]:,} of them are among the {rec["n_issues"]:,} counted wrong, and '
                 f'{noisy["flipped_among_acted"]:,} among the {rec["budget"]:,} acted on.')
    return (f'<section id="clean"><h2>{escape(heading)}</h2>{_headline(rec)}'
            f'<p class="note">Reproduce: <code>{escape(rec["reproduce"])}</code></p>'
            f'<p class="lead"><b>{rec["n_issues"]:,} of {rec["n_train"]:,} training labels look wrong</b> '
            f'(likely mislabelled: confident learning\'s count on out-of-sample probabilities).{known}</p>'
            f'{_trim_note(rec)}'
            f'<h3>Every candidate, refit and measured on {rec["n_valid"]:,} validation samples</h3>'
            f'<p class="note">Each candidate acts on the samples most likely mislabelled, by the detector\'s default '
            f'ranking or by confident learning\'s per-class thresholds (calibrate=True): trim removes them, relabel '
            f'gives them their suggested label, reweight gives them the weight p(given label). Gains are over a refit '
            f'on the data as given (the same procedure), with one-sided paired bootstrap bounds over the validation '
            f'samples. A candidate passes when its validation accuracy gain is above 0 beyond its bound, or its '
            f'log-loss decrease is above 0 beyond its bound without lower accuracy; the tests run in a fixed order '
            f'per ranking (the budget closest to the estimated count first; trim, relabel, reweight) and stop at '
            f'the first that fails, so that all of them hold together with probability {level:g} however many '
            f'candidates are tried. Of those that pass, the largest log-loss decrease is recommended.</p>'
            f'<div class="charts"><figure>{interval_chart(rec["candidates"], "accuracy")}</figure>'
            f'<figure>{interval_chart(rec["candidates"], "log_loss")}</figure></div>{candidates_table(rec)}'
            f'<h3>Samples most likely mislabelled</h3>{top_table(rec)}'
            f'<p class="note">{escape(rec["refit_note"])}. {escape("; ".join(rec.get("notes", [])))}.</p></section>')


def build_clean_report(rec: dict[str, Any]) -> str:
    """The complete HTML page of an `influent clean` run."""
    version = rec.get("versions", {}).get("influent", "")
    title = f"What to do about the wrong labels in {rec.get('train_file') or 'the training set'}"
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in rec.get("timings", {}).items())
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)} · influent</title><style>{CSS}</style></head><body><main>"
            f'<header><h1>{escape(title)}</h1><p class="sub">influent {escape(version)} · clean · model '
            f'{escape(str(rec.get("model", "")))}</p></header>{clean_section(rec)}'
            f'<footer>Made by influent {escape(version)}. {escape(timings)}. This page is self-contained: it loads '
            "nothing from the network.</footer></main></body></html>\n")
