"""The report page: one self-contained HTML file built from a run record (``run.json``).

No scripts, no external style sheets, fonts or images: charts are inline SVG and sample images are
``data:`` PNGs, so the page works offline and opened straight from disk.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from . import svg
from .clean import clean_section
from .style import CSS, pct as _pct
from .svg import fmt_value

SECTIONS = ("summary", "clean", "distribution", "samples", "removal", "detection", "comparison", "attribution", "settings")




def _n(x: Any) -> str:
    return "–" if x is None else f"{int(x):,}"


def _method_name(m: str) -> str:
    """The method's title from the method registry (the name itself for a method not registered)."""
    from ..methods import METHODS

    spec = METHODS.get(m)
    return spec.title if spec is not None and spec.title else m


def _target_text(t: str) -> str:
    """What the report calls a target (its registry entry's text; the name itself when unknown)."""
    from ..targets import TARGETS

    spec = TARGETS.get(t)
    return spec.text if spec is not None and spec.text else t


def _options_text(settings: dict[str, Any]) -> str:
    keep = {k: v for k, v in settings.items() if k in ("solver", "damping", "n_checkpoints", "members", "solver_options")
            and v not in (None, {}, "")}
    return ", ".join(f"{k} {v}" for k, v in keep.items())


def _closest(curve: dict[str, Any], want: float = 0.1) -> int | None:
    fr = curve["fractions"]
    cands = [i for i, f in enumerate(fr) if f > 0 and curve["harmful"]["accuracy"][i] is not None]
    return min(cands, key=lambda i: abs(fr[i] - want)) if cands else None


# ---- the words for low-valued samples ------------------------------------------------------------------------
def _lead(s: dict[str, Any], target_txt: str) -> str:
    """The summary's first sentence: "harmful" only for a signed effect on a target (rule "negative"); wrong-label
    detectors say "likely mislabelled" with their estimated count; other methods say "unusual"."""
    n, nh = s["n_train"], s["n_harmful"]
    share = f"({100 * nh / max(1, n):.1f}%)"
    method = escape(_method_name(s["method"]))
    if s["rule"] == "negative":
        return (f"<strong>{nh:,} of {n:,} training samples {share} look harmful</strong> to the "
                f"{escape(target_txt)}: removing any one of them alone is predicted to lower it.")
    if s["rule"] == "count":
        return (f"<strong>{nh:,} of {n:,} training labels {share} look wrong</strong> (likely mislabelled): the "
                f"estimated number of wrong labels (confident learning's count on out-of-sample probabilities); "
                f"the {nh:,} lowest-valued by the {method} are flagged.")
    if s["rule"] == "method":
        what = "likely mislabelled" if s.get("says") == "mislabelled" else "flagged"
        return (f"<strong>{nh:,} of {n:,} training samples {share} are {what}</strong> by the {method} statistic "
                f"(value below {escape(fmt_value(s['threshold']))}: the given label is more likely wrong than right).")
    return (f"<strong>{nh:,} of {n:,} training samples {share} look unusual</strong>: outliers of the {method} "
            "statistic. This method has no target: it flags unusual samples, which are often mislabelled, not "
            "samples shown to be harmful.")


def _card_title(s: dict[str, Any]) -> str:
    return {"negative": "Harmful", "count": "Likely mislabelled"}.get(
        s["rule"], "Likely mislabelled" if s.get("says") == "mislabelled" else "Unusual")


def _low_word(s: dict[str, Any]) -> str:
    """What the distribution's vermillion bars are, in the same words as the lead."""
    return {"negative": "look harmful", "count": "are counted as likely mislabelled",
            "method": "are flagged as likely mislabelled" if s.get("says") == "mislabelled" else "are flagged"}.get(
        s["rule"], "look unusual (outliers of the statistic)")


def _trim_hurts(res: dict[str, Any], before: float, after: float) -> str:
    """When removing the lowest-valued samples lowers test accuracy, say so, and name what helps."""
    if after is None or before is None or after >= before:
        return ""
    cl = res.get("clean")
    helps = (f"what the measured choice recommends: {escape(cl['summary'])}" if cl else
             "<code>influent clean</code> measures trim, relabel and reweight against leaving the data alone and "
             "recommends one only when it helps beyond its bound")
    return f" <b>Trimming them lowers test accuracy</b>; {helps}."


# ---- sections ------------------------------------------------------------------------------------------
def summary_section(rec: dict[str, Any]) -> str:
    res = rec["results"]
    s = res["summary"]
    cfg = rec["config"]
    n, nh = s["n_train"], s["n_harmful"]
    target_txt = _target_text(s["target"])
    lead = _lead(s, target_txt)
    finds = []
    if "detection" in res:
        d = res["detection"]
        finds.append(f"<b>Flipped labels.</b> {d['n_noisy']:,} training labels are known to be wrong. Among the "
                     f"{d['k']:,} lowest-valued samples, {round(d['precision_at_k'] * d['k']):,} are flipped "
                     f"(precision {_pct(d['precision_at_k'], 0)}); ranking by value separates flipped from clean "
                     f"samples with ROC AUC {d['auc']:.3f} (0.5 = chance).")
    if "curve" in res:
        c = res["curve"]
        i = _closest(c)
        if i is not None:
            a0, a1, ar = c["harmful"]["accuracy"][0], c["harmful"]["accuracy"][i], c["random"]["accuracy"][i]
            finds.append(f"<b>Removal.</b> Removing the {_pct(c['fractions'][i], 0)} lowest-valued samples "
                         f"({c['k'][i]:,}) and refitting takes test accuracy from {_pct(a0)} to <b>{_pct(a1)}</b>; "
                         f"removing a random {_pct(c['fractions'][i], 0)} gives {_pct(ar)}." + _trim_hurts(res, a0, a1))
    if s.get("stable"):
        st = s["stable"]
        finds.append(f"<b>Ensemble.</b> The values are the mean over {st['members'] or 'several'} models. Of the "
                     f"{st['k']:,} lowest-valued samples, <b>{st['harmful']:,}</b> lie below the median by more than "
                     f"{st['z']:g} standard errors across the models (a stable ranking); of the {st['k']:,} "
                     f"highest-valued, <b>{st['helpful']:,}</b> lie above it.")
    if s.get("n_nan"):
        finds.append(f"{s['n_nan']:,} samples have no score (NaN); they rank last.")
    model = res.get("model_label", cfg["model"])
    acc = []
    if s.get("valid_accuracy") is not None:
        acc.append(f"validation accuracy {_pct(s['valid_accuracy'])}")
    if s.get("test_accuracy") is not None:
        acc.append(f"test {_pct(s['test_accuracy'])}")
    classes = s.get("classes")
    shape = f"{n:,} rows × {s['n_features']:,} features" + (f", {len(classes)} classes" if classes else "")
    splits = (f"validation {s['n_valid']:,}" if s.get("n_valid") is not None else "no validation split") + (f", test {s['n_test']:,}" if s.get("n_test") else ", no test split")
    opts = _options_text(rec.get("method", {}).get("settings", {}))
    cards = [
        (_card_title(s), f'<p class="v big">{nh:,}</p>',
         f"{100 * nh / max(1, n):.1f}% of the training set" + (" (value &lt; 0)" if s["rule"] == "negative"
                                                               else f" (value below {escape(fmt_value(s['threshold']))})")),
        ("Method", f'<p class="v">{escape(s["method"])} · {escape(_method_name(s["method"]))}</p>',
         escape(opts) or "default options"),
        ("Target", f'<p class="v">{escape(s["target"])}</p>', escape(target_txt)),
        ("Data", f'<p class="v">{escape(s.get("train_file") or "train")}</p>', f"{shape}; {splits}"),
        ("Model", f'<p class="v">{escape(model)}</p>', escape(", ".join(acc)) or "&nbsp;"),
    ]
    cards_html = "".join(f'<div class="card"><p class="k">{k}</p>{v}<p class="d">{d}</p></div>' for k, v, d in cards)
    find_html = f'<ul class="findings">{"".join(f"<li>{f}</li>" for f in finds)}</ul>' if finds else ""
    rec_html = ""
    if res.get("clean"):
        cl = res["clean"]
        test = ""
        if cl.get("test_before") is not None:
            test = (f' On {cl["n_test"]:,} held-out test samples the model refit on this choice has accuracy '
                    f'<b>{_pct(cl["test_after"])}</b> (as trained: {_pct(cl["test_before"])}).')
        rec_html = (f'<p class="rec {"none" if cl["action"] == "none" else "act"}">{escape(cl["summary"])}</p>'
                    f'<p class="note">What to do, measured: see <a href="#clean">the candidates</a>.{test}</p>')
    return (f'<section id="summary"><h2>Summary</h2>{rec_html}<p class="lead">{lead}</p>{find_html}'
            f'<div class="cards">{cards_html}</div>'
            '<p class="note">Scores follow one convention for every method: higher = more valuable to the target, '
            'the lowest are removed first. The value of a sample estimates how much the target cost would rise if '
            'that sample were left out of training.</p></section>')


def clean_report_section(rec: dict[str, Any]) -> str:
    """`influent.clean`'s recommendation and candidates (the demo's loop); empty without it."""
    cl = rec["results"].get("clean")
    if not cl:
        return ""
    return clean_section(cl, "What to do about the wrong labels, measured")


def distribution_section(rec: dict[str, Any]) -> str:
    res = rec["results"]
    s, dist = res["summary"], res["distribution"]
    chart = svg.class_rows(dist, s["threshold"], s["rule"])
    tails = ""
    if dist.get("clipped"):
        tails = (f" The axis covers the central 99% of values; {dist['below']:,} lower and {dist['above']:,} higher "
                 "values are counted in the end bins.")
    per = "by class" if len(dist["rows"]) > 1 else ""
    word = _low_word(s)
    return (f'<section id="distribution"><h2>Score distribution {per}</h2>'
            f'<p class="note">One histogram per class on a shared axis (each row scaled to its own peak; bar height '
            f'grows with the square root of the count, so single samples stay visible). Vermillion bars are samples '
            f'that {word}; the numbers on the right count them.{tails}</p>'
            f"<figure>{chart}</figure></section>")


def _sample_meta(r: dict[str, Any]) -> str:
    bits = [f'<div><span class="rank">#{r["rank"]:,}</span> · id {escape(str(r["id"]))}</div>']
    if "predicted" in r:
        agree = r["predicted"] == r["label"]
        bits.append(f'<div>label <b>{escape(r["label"])}</b>' + ("" if agree else
                    f' · model says <b>{escape(r["predicted"])}</b> ({_pct(r["p_predicted"], 0)})') + "</div>")
    else:
        bits.append(f'<div>label <b>{escape(r["label"])}</b></div>')
    bits.append(f'<div class="val">value <span class="{"neg" if r.get("flagged") else ""}">{escape(fmt_value(r["value"]))}</span></div>')
    if "clean" in r:
        if r["clean"] != r["label"]:
            bits.append(f'<span class="badge flip">flipped · true {escape(r["clean"])}</span>')
        else:
            bits.append('<span class="badge ok">label correct</span>')
    return "".join(bits)


def _samples_html(rows: list[dict[str, Any]], kind: str) -> str:
    if not rows:
        return '<p class="note">None.</p>'
    if kind == "image":
        cells = []
        for r in rows:
            img = (f'<img alt="sample {escape(str(r["id"]))}, label {escape(r["label"])}" '
                   f'src="data:image/png;base64,{r["image"]}">' if r.get("image") else "")
            cells.append(f'<div class="sample">{img}{_sample_meta(r)}</div>')
        return f'<div class="gallery">{"".join(cells)}</div>'
    if kind == "text":
        cells = [f'<div class="sample"><blockquote>{escape(r.get("text", ""))}</blockquote>{_sample_meta(r)}</div>'
                 for r in rows]
        return f'<div class="texts">{"".join(cells)}</div>'
    has_clean = any("clean" in r for r in rows)
    has_pred = any("predicted" in r for r in rows)
    head = ("<tr><th>rank</th><th>id</th><th>label</th>" + ("<th>model says</th>" if has_pred else "")
            + ("<th>known clean label</th>" if has_clean else "") + "<th>value</th><th>features (z-score against the "
            "training set)</th></tr>")
    body = []
    for r in rows:
        feats = "".join(f'<span class="feat">{escape(n)} = {escape(fmt_value(v))} '
                        f'<small>({"+" if z >= 0 else "−"}{abs(z):.1f})</small></span> ' for n, v, z in r["features"])
        pred = f'<td>{escape(r.get("predicted", ""))} ({_pct(r.get("p_predicted"), 0)})</td>' if has_pred else ""
        flip = ' <span class="badge flip">flipped</span>' if r.get("clean") != r["label"] else ""
        clean = f'<td>{escape(r.get("clean", ""))}{flip}</td>' if has_clean else ""
        body.append(f'<tr><td class="num">{r["rank"]:,}</td><td>{escape(str(r["id"]))}</td><td>{escape(r["label"])}</td>'
                    f'{pred}{clean}<td class="num {"neg" if r.get("flagged") else ""}">{escape(fmt_value(r["value"]))}</td>'
                    f"<td>{feats}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def samples_section(rec: dict[str, Any]) -> str:
    smp = rec["results"]["samples"]
    signed = rec["results"]["summary"]["rule"] == "negative"
    kind = smp["kind"]
    form = {"image": "as images", "text": "as text", "tabular": "as table rows"}[kind]
    extra = "" if kind != "tabular" else " For wide tables only the five most unusual features of each row are shown."
    title, first, contrast = (("Most harmful samples", "most harmful first", "Most helpful samples, for contrast") if signed
                              else ("Most likely mislabelled samples", "most likely wrong first",
                                    "Surest labels, for contrast") if rec["results"]["summary"].get("says") == "mislabelled"
                              else ("Most unusual samples", "most unusual first", "Most typical samples, for contrast"))
    return (f'<section id="samples"><h2>{title}</h2>'
            f'<p class="note">The lowest-valued training samples, {form}, {first}. A label the model '
            f'disagrees with is a common sign of a labelling mistake.{extra}</p>'
            f'{_samples_html(smp["harmful"], kind)}'
            f'<h3>{contrast}</h3>{_samples_html(smp["helpful"], kind)}</section>')


def removal_section(rec: dict[str, Any]) -> str:
    res = rec["results"]
    if "curve" not in res:
        return ('<section id="removal"><h2>Removal curve</h2><p class="note">No test split was given, so the removal '
                "curve was not measured. Pass <code>--test FILE</code> to see how test accuracy changes when the "
                "lowest-valued samples are removed.</p></section>")
    c = res["curve"]
    m = res["summary"]["method"]
    a = svg.removal_chart(c, "accuracy", "test accuracy", m)
    b = svg.removal_chart(c, "cost", c["cost_label"], m)
    return (f'<section id="removal"><h2>Removal curve</h2>'
            f'<p class="note">The model is refit after removing the lowest-valued samples (vermillion, solid), a random '
            f'set of the same size (grey, dashed; mean and range of {c["repeats"]} draws) and the highest-valued '
            f'samples (blue, dotted), measured on {c["n_test"]:,} test samples. Scores that mean something lift the '
            f'vermillion line above the grey one and push the blue one below it.</p>'
            f'{svg.removal_legend(m, c["repeats"])}'
            f'<div class="charts"><figure>{a}</figure><figure>{b}</figure></div></section>')


def detection_section(rec: dict[str, Any]) -> str:
    res = rec["results"]
    if "detection" not in res:
        return ""
    d = res["detection"]
    m = res["summary"]["method"]
    a = svg.recall_chart(d, m)
    b = svg.noisy_hist(d, res["distribution"]["edges"], res["summary"]["threshold"])
    rows = [("ROC AUC (0.5 = chance, 1 = perfect)", f"{d['auc']:.3f}"),
            (f"precision among the {d['k']:,} lowest-valued", _pct(d["precision_at_k"])),
            (f"flipped labels found among the {d['k']:,} lowest-valued", _pct(d["recall_at_k"])),
            ("average precision", f"{d['average_precision']:.3f}"),
            ("flipped labels / training samples", f"{d['n_noisy']:,} / {d['n']:,}")]
    table = '<table class="compact">' + "".join(f'<tr><th>{k}</th><td class="num">{v}</td></tr>' for k, v in rows) + "</table>"
    return (f'<section id="detection"><h2>Detection of flipped labels</h2>'
            f'<p class="note">These labels were flipped on purpose, so we know which samples are wrong. Good scores put '
            f'them first: the vermillion curve climbs towards the green one (a perfect ranking) and far above the '
            f'grey diagonal (a random order).</p>{table}'
            f'<div class="charts"><figure>{svg.recall_legend(m)}{a}</figure><figure>{svg.noisy_legend(d)}{b}</figure></div>'
            '</section>')


def comparison_section(rec: dict[str, Any]) -> str:
    rows = rec["results"].get("comparison")
    if not rows:
        return ""
    budget = rec["results"].get("comparison_budget")
    head = ("<tr><th>method</th><th>what it is</th><th>seconds</th><th>ROC AUC</th>"
            f"<th>precision@{budget}</th><th>test accuracy after removing {budget}</th></tr>")
    body = "".join(
        f'<tr><td><b>{escape(r["method"])}</b></td><td>{escape(_method_name(r["method"]))}</td>'
        f'<td class="num">{r["seconds"]:.2f}</td><td class="num">{r["auc"]:.3f}</td>'
        f'<td class="num">{_pct(r["precision_at_budget"])}</td><td class="num">{_pct(r["test_acc_after_trim"])}</td></tr>'
        for r in rows)
    base = rec["results"].get("comparison_base_accuracy")
    note = f" Test accuracy before removing anything: {_pct(base)}." if base is not None else ""
    return (f'<section id="comparison"><h2>Methods compared on the same data</h2>'
            f'<p class="note">Each method scores the same noisy training set; the {budget} lowest-valued samples are '
            f'removed and the model refit.{note}</p><table>{head}{body}</table></section>')


def attribution_section(rec: dict[str, Any]) -> str:
    """The top-k training samples of a few test samples (``influent score --topk K``); empty without it."""
    att = rec["results"].get("attribution")
    if not att:
        return ""
    if "skipped" in att:
        return (f'<section id="attribution"><h2>Training samples behind test predictions</h2>'
                f'<p class="note">Not computed: {escape(att["skipped"])}.</p></section>')

    def table(rows: list[dict[str, Any]]) -> str:
        body = "".join(f'<tr><td class="num">{r}</td><td>{escape(str(x["id"]))}</td><td>{escape(x["label"])}</td>'
                       f'<td class="num">{escape(fmt_value(x["value"]))}</td></tr>' for r, x in enumerate(rows, 1))
        return f'<table class="compact"><tr><th>rank</th><th>train id</th><th>label</th><th>attribution</th></tr>{body}</table>'

    blocks = "".join(
        f'<h3>Test sample {escape(str(e["test_id"]))} (row {e["test_row"]}, label {escape(e["label"])})</h3>'
        f'<div class="charts"><div><p class="note">Most helpful</p>{table(e["helpful"])}</div>'
        f'<div><p class="note">Most harmful</p>{table(e["harmful"])}</div></div>' for e in att["examples"])
    note = f' {escape(att["note"])}.' if att.get("note") else ""
    return (f'<section id="attribution"><h2>Training samples behind test predictions</h2>'
            f'<p class="note">For the first {len(att["examples"])} of {att["n_test"]:,} test samples: the training samples '
            f'whose removal would raise that sample\'s loss most (helpful) and lower it most (harmful), by '
            f'{escape(_method_name(att["method"]))}.{note} The top {att["k"]} of every test sample are in '
            f'<code>{escape(att["folder"])}/</code>: <code>influent explain --scores RUN --test-row J</code>.</p>'
            f'{blocks}</section>')


def _kv_table(d: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        return escape(v if isinstance(v, str) else json.dumps(v))

    return "<table>" + "".join(f"<tr><th>{escape(str(k))}</th><td><code>{show(v)}</code></td></tr>"
                               for k, v in d.items()) + "</table>"


def settings_section(rec: dict[str, Any]) -> str:
    files = rec.get("data", {})
    frows = "".join(f'<tr><td>{escape(role)}</td><td><code>{escape(str(f.get("path", "")))}</code></td>'
                    f'<td class="num">{_n(f.get("rows"))}</td><td><code>{escape(str(f.get("sha256", ""))[:16])}</code></td>'
                    f'<td><code>{escape(str(f.get("fingerprint", "")))}</code></td></tr>' for role, f in files.items())
    ftable = ("<table><tr><th>split</th><th>file</th><th>rows</th><th>sha256 (first 16)</th><th>data fingerprint</th></tr>"
              f"{frows}</table>") if frows else ""
    timings = {k: (f"{v:.2f} s" if isinstance(v, (int, float)) else v) for k, v in rec.get("timings", {}).items()
               if k != "build report"}
    return (f'<section id="settings"><h2>Settings and provenance</h2>'
            f'<p class="note">Everything needed to repeat this run; the same record is in <code>run.json</code>.</p>'
            f"{ftable}"
            f'<details><summary>Run settings</summary>{_kv_table(rec.get("config", {}))}</details>'
            f'<details><summary>Method settings</summary>{_kv_table(rec.get("method", {}).get("settings", {}))}</details>'
            f'<details><summary>Model</summary>{_kv_table(rec.get("model", {}))}</details>'
            f'<details><summary>Timings</summary>{_kv_table(timings)}</details>'
            f'<details><summary>Versions</summary>{_kv_table(rec.get("versions", {}))}</details></section>')


def build_report(rec: dict[str, Any]) -> str:
    """The complete HTML page for a run record (the dict saved as run.json)."""
    s = rec["results"]["summary"]
    cfg = rec["config"]
    title = cfg.get("title") or f"{s['method']} scores for {s.get('train_file') or 'the training set'}"
    present = [("summary", "Summary")] + ([("clean", "What to do")] if rec["results"].get("clean") else []) + [
               ("distribution", "Distribution"),
               ("samples", "Harmful samples" if s["rule"] == "negative" else "Suspicious samples"),
               ("removal", "Removal curve")]
    if "detection" in rec["results"]:
        present.append(("detection", "Flipped labels"))
    if rec["results"].get("comparison"):
        present.append(("comparison", "Methods compared"))
    if rec["results"].get("attribution"):
        present.append(("attribution", "Test attribution"))
    present.append(("settings", "Settings"))
    nav = "".join(f'<a href="#{k}">{v}</a>' for k, v in present)
    version = rec.get("versions", {}).get("influent", "")
    body = "".join([summary_section(rec), clean_report_section(rec), distribution_section(rec), samples_section(rec), removal_section(rec),
                    detection_section(rec), comparison_section(rec), attribution_section(rec),
                    settings_section(rec)])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)} · influent</title><style>{CSS}</style></head><body><main>"
            f'<header><h1>{escape(title)}</h1><p class="sub">influent {escape(version)} · '
            f'{escape(rec.get("command", "score"))} · {escape(rec.get("created", ""))}</p><nav>{nav}</nav></header>'
            f"{body}<footer>Made by influent {escape(version)}. This page is self-contained: it loads nothing from the "
            "network and works opened from disk. Rebuild it with <code>influent report DIR</code>.</footer>"
            "</main></body></html>\n")
