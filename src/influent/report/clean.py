"""The report page of `influent clean`: the recommendation with its gain and interval, the command that
repeats it, every candidate tried (a table and an interval chart), and the samples most likely mislabelled.

Built from the record of `influent.runs.clean.clean_record`; self-contained like the score report."""

from __future__ import annotations

import math
from html import escape
from typing import Any

from .html import CSS, _pct
from .svg import BLUE, FONT, GREY, HARM_TEXT, INK, nice_ticks

def _gain(x: float | None, metric: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.1f}" if metric == "accuracy" else f"{x:+.3f}"


def _unit(metric: str) -> str:
    return "validation accuracy, points" if metric == "accuracy" else "decrease of validation log-loss"


def interval_chart(cands: list[dict[str, Any]], metric: str, width: int = 640) -> str:
    """One row per candidate: its gain over "none" (dot) and simultaneous interval (line); 0 marked."""
    rows = [c for c in cands[1:] if c.get("gain") is not None and not math.isnan(c["gain"])]
    if not rows:
        return ""
    vals = [v for c in rows for v in (c["gain_low"], c["gain_high"], c["gain"]) if v is not None and not math.isnan(v)]
    lo, hi = min(vals + [0.0]), max(vals + [0.0])
    pad = (hi - lo) * 0.06 or 1.0
    lo, hi = lo - pad, hi + pad
    left, right, top, rh = 150, 20, 26, 22
    h = top + rh * len(rows) + 34
    x = lambda v: left + (v - lo) / (hi - lo) * (width - left - right)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {h}" width="100%" role="img" '
             f'style="{FONT};max-width:{width}px"><title>Gain of every candidate over leaving the data alone, with '
             f'its interval</title>',
             f'<line x1="{x(0):.1f}" y1="{top - 8}" x2="{x(0):.1f}" y2="{h - 30}" stroke="{GREY}" stroke-dasharray="4 3"/>',
             f'<text x="{x(0):.1f}" y="{top - 12}" font-size="11" fill="{GREY}" text-anchor="middle">no change</text>']
    for i, c in enumerate(rows):
        y = top + rh * i + rh / 2
        colour = BLUE if c.get("chosen") else (HARM_TEXT if c["gain_high"] < 0 else INK)
        label = f'{c["action"]} {int(c["budget"]):,}'
        tip = f'{label}: {_gain(c["gain"], metric)} [{_gain(c["gain_low"], metric)}, {_gain(c["gain_high"], metric)}]'
        bold = ' font-weight="700"' if c.get("chosen") else ""
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" font-size="12" text-anchor="end" fill="{colour}"'
                     f'{bold}>{escape(label)}</text>')
        parts.append(f'<g><title>{escape(tip)}</title><line x1="{x(c["gain_low"]):.1f}" y1="{y:.1f}" '
                     f'x2="{x(c["gain_high"]):.1f}" y2="{y:.1f}" stroke="{colour}" stroke-width="2"/>'
                     f'<circle cx="{x(c["gain"]):.1f}" cy="{y:.1f}" r="4" fill="{colour}"/></g>')
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
    cands, metric = rec["candidates"], rec["metric"]
    worse = [c for c in cands[1:] if c["action"] == "trim" and c.get("gain") is not None and c["gain"] < 0]
    if not worse:
        return ""
    w = min(worse, key=lambda c: c["gain"])
    helps = ("nothing tried helps beyond its interval: keep the data and check the labels by hand, most likely "
             "wrong first (issues file, rank 0 first)" if rec["action"] == "none"
             else f"what helps is {escape(rec['summary'])}")
    return (f'<p class="note"><b>Trimming can hurt.</b> Removing the {int(w["budget"]):,} samples most likely '
            f'mislabelled changes the {escape(_unit(metric))} by {_gain(w["gain"], metric)} '
            f'[{_gain(w["gain_low"], metric)}, {_gain(w["gain_high"], metric)}]; {helps}.</p>')


def candidates_table(rec: dict[str, Any]) -> str:
    metric = rec["metric"]
    head = ("<tr><th>action</th><th>samples changed</th><th>validation accuracy</th><th>validation log-loss</th>"
            f"<th>gain ({escape(_unit(metric))})</th><th>interval</th><th>note</th></tr>")
    body = []
    for c in rec["candidates"]:
        ok = c.get("accuracy") is not None and not math.isnan(c["accuracy"])
        interval = ("baseline" if c["action"] == "none" else
                    f'[{_gain(c["gain_low"], metric)}, {_gain(c["gain_high"], metric)}]')
        body.append(f'<tr class="{"chosen" if c.get("chosen") else ""}"><td>{escape(c["action"])}'
                    f'{" ✓" if c.get("chosen") else ""}</td><td class="num">{int(c["n_changed"]):,}</td>'
                    f'<td class="num">{_pct(c["accuracy"]) if ok else "–"}</td>'
                    f'<td class="num">{format(c["log_loss"], ".4f") if ok else "–"}</td>'
                    f'<td class="num">{_gain(c["gain"], metric) if ok else "–"}</td><td class="num">{interval}</td>'
                    f'<td>{escape(str(c.get("note") or ""))}</td></tr>')
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
    level, metric = rec["level"], rec["metric"]
    m = max(1, len(rec["candidates"]) - 1)
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
            f'<p class="note">Each candidate acts on the samples most likely mislabelled: trim removes them, relabel '
            f'gives them their suggested label, reweight gives them the weight p(given label). Gains are over a refit on '
            f'the data as given (the same procedure), with paired bootstrap intervals over the validation samples at '
            f'the joint level {level:g} for the {m} candidates (each at {1 - (1 - level) / m:.4f}, Bonferroni), so '
            f'that picking the best of them stays honest. An action is recommended only when its lower bound is above '
            f'0; among those, the most parsimonious one not significantly worse than the best.</p>'
            f'<figure>{interval_chart(rec["candidates"], metric)}</figure>{candidates_table(rec)}'
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
