"""Small inline-SVG charts for the report, written directly (no plotting library, no scripts).

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies); every
series also differs by line style or marker, and every mark carries a `<title>` tooltip.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any, Sequence

BLUE = "#0072B2"        # helpful / the method
VERMILLION = "#D55E00"  # harmful (marks)
HARM_TEXT = "#B04400"   # harmful (text: 5:1 contrast on white)
ORANGE = "#E69F00"      # flipped labels
GREEN = "#009E73"
SKY = "#56B4E9"
GREY = "#767676"        # random / reference (4.5:1 on white)
INK = "#1f2328"
GRID = "#e6e8eb"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    return ticks


def scale_exponent(values: Sequence[float]) -> int:
    """A power of ten (multiple of 3) to factor out of tick labels, or 0 when plain numbers read well."""
    m = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    if m == 0 or 1e-2 <= m < 1e4:
        return 0
    return int(3 * math.floor(math.log10(m) / 3))


def superscript(n: int) -> str:
    return str(n).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))


def fmt(v: float, exponent: int = 0, digits: int = 3) -> str:
    """A tick or value label with a real minus sign, after dividing by 10**exponent."""
    if v is None or not math.isfinite(v):
        return "–"
    x = v / 10 ** exponent
    s = f"{x:.{digits}g}"
    if "e" in s:
        mant, e = s.split("e")
        s = f"{mant}×10{superscript(int(e))}"
    return s.replace("-", "−")


def fmt_value(v: float) -> str:
    """A score value for text: 3 significant digits, scientific when tiny or huge."""
    if v is None or not math.isfinite(v):
        return "–"
    if v == 0:
        return "0"
    e = math.floor(math.log10(abs(v)))
    if -3 <= e < 5:
        return fmt(v, 0, 3)
    return f"{v / 10 ** e:.2f}×10{superscript(e)}".replace("-", "−")


class Chart:
    """An SVG canvas with one pair of linear axes."""

    def __init__(self, width: int, height: int, margin: tuple[int, int, int, int] = (16, 16, 44, 56),
                 label: str = "", desc: str = "") -> None:
        self.w, self.h = width, height
        self.top, self.right, self.bottom, self.left = margin
        self.parts: list[str] = []
        self.label, self.desc = label, desc
        self.x0, self.x1, self.y0, self.y1 = 0.0, 1.0, 0.0, 1.0

    # scales
    def domain(self, x0: float, x1: float, y0: float, y1: float) -> "Chart":
        self.x0, self.x1 = (x0, x1) if x1 > x0 else (x0 - 0.5, x0 + 0.5)
        self.y0, self.y1 = (y0, y1) if y1 > y0 else (y0 - 0.5, y0 + 0.5)
        return self

    def x(self, v: float) -> float:
        return self.left + (v - self.x0) / (self.x1 - self.x0) * (self.w - self.left - self.right)

    def y(self, v: float) -> float:
        return self.h - self.bottom - (v - self.y0) / (self.y1 - self.y0) * (self.h - self.top - self.bottom)

    # marks
    def add(self, s: str) -> None:
        self.parts.append(s)

    def text(self, x: float, y: float, s: str, anchor: str = "start", size: int = 12, color: str = INK,
             weight: str = "normal", rotate: float | None = None) -> None:
        rot = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" fill="{color}" '
                 f'font-weight="{weight}"{rot}>{escape(s)}</text>')

    def axes(self, xticks: Sequence[float], yticks: Sequence[float], xlabel: str = "", ylabel: str = "",
             xpercent: bool = False, ypercent: bool = False) -> None:
        """Grid lines, tick labels and axis titles; a shared power of ten goes into the axis title."""
        ex = 0 if xpercent else scale_exponent(xticks)
        ey = 0 if ypercent else scale_exponent(yticks)
        for t in yticks:
            yy = self.y(t)
            self.add(f'<line x1="{self.left}" x2="{self.w - self.right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{GRID}"/>')
            self.text(self.left - 6, yy + 4, f"{t * 100:.0f}%" if ypercent else fmt(t, ey), "end", 11)
        for t in xticks:
            xx = self.x(t)
            self.add(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{self.top}" y2="{self.h - self.bottom}" stroke="{GRID}"/>')
            self.text(xx, self.h - self.bottom + 16, f"{t * 100:.0f}%" if xpercent else fmt(t, ex), "middle", 11)
        self.add(f'<line x1="{self.left}" x2="{self.w - self.right}" y1="{self.h - self.bottom}" '
                 f'y2="{self.h - self.bottom}" stroke="{INK}"/>')
        if xlabel:
            self.text((self.left + self.w - self.right) / 2, self.h - 8,
                      xlabel + (f" (×10{superscript(ex)})" if ex else ""), "middle", 12)
        if ylabel:
            cy = (self.top + self.h - self.bottom) / 2
            self.text(14, cy, ylabel + (f" (×10{superscript(ey)})" if ey else ""), "middle", 12, rotate=-90)

    def line(self, xs: Sequence[float], ys: Sequence[float | None], color: str, dash: str | None = None,
             marker: str | None = None, width: float = 2.2, name: str = "", tips: Sequence[str] | None = None) -> None:
        pts = [(self.x(a), self.y(b)) for a, b in zip(xs, ys) if b is not None and math.isfinite(b)]
        if not pts:
            return
        d = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py) in enumerate(pts))
        da = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="{width}"{da} stroke-linejoin="round">'
                 f'<title>{escape(name)}</title></path>')
        if marker:
            k = 0
            for a, b in zip(xs, ys):
                if b is None or not math.isfinite(b):
                    continue
                self.add(self.marker(marker, self.x(a), self.y(b), color, tip=tips[k] if tips else f"{name}: {fmt(b)}"))
                k += 1

    @staticmethod
    def marker(kind: str, x: float, y: float, color: str, r: float = 4.0, tip: str | None = None) -> str:
        """A circle, square or triangle mark, with an optional tooltip."""
        title = f"<title>{escape(tip)}</title>" if tip else ""
        style = f'fill="{color}" stroke="white" stroke-width="1"'
        if kind == "circle":
            return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" {style}>{title}</circle>'
        if kind == "square":
            return f'<path d="M{x - r:.1f},{y - r:.1f}h{2 * r}v{2 * r}h{-2 * r}z" {style}>{title}</path>'
        return (f'<path d="M{x:.1f},{y - r - 1:.1f}L{x + r + 1:.1f},{y + r:.1f}L{x - r - 1:.1f},{y + r:.1f}z" '
                f'{style}>{title}</path>')

    def band(self, xs: Sequence[float], lo: Sequence[float | None], hi: Sequence[float | None], color: str,
             opacity: float = 0.15, name: str = "") -> None:
        pts = [(a, b, c) for a, b, c in zip(xs, lo, hi) if b is not None and c is not None]
        if len(pts) < 2:
            return
        up = " ".join(f"{self.x(a):.1f},{self.y(c):.1f}" for a, _, c in pts)
        down = " ".join(f"{self.x(a):.1f},{self.y(b):.1f}" for a, b, _ in reversed(pts))
        self.add(f'<polygon points="{up} {down}" fill="{color}" opacity="{opacity}"><title>{escape(name)}</title></polygon>')

    def legend(self, items: Sequence[tuple[str, str, str | None, str | None]], x: float, y: float) -> None:
        """items: (name, colour, dash, marker); drawn as a column starting at (x, y)."""
        for i, (name, color, dash, marker) in enumerate(items):
            yy = y + i * 18
            da = f' stroke-dasharray="{dash}"' if dash else ""
            self.add(f'<line x1="{x:.1f}" x2="{x + 26:.1f}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{color}" '
                     f'stroke-width="2.2"{da}/>')
            if marker:
                self.add(self.marker(marker, x + 13, yy, color, 3.5))
            self.text(x + 32, yy + 4, name, "start", 12)

    def svg(self) -> str:
        label = escape(self.label)
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.w} {self.h}" width="100%" '
                f'role="img" aria-label="{label}" style="{FONT};max-width:{self.w}px">'
                f'<title>{label}</title>' + (f"<desc>{escape(self.desc)}</desc>" if self.desc else "")
                + "".join(self.parts) + "</svg>")


# ---- the report's charts ---------------------------------------------------------------------------------
def class_rows(dist: dict[str, Any], threshold: float, rule: str, width: int = 1020) -> str:
    """One small histogram per class on shared bins (a ridgeline; bar height ~ sqrt(count / row peak), so
    that single samples stay visible): bars below the threshold in vermillion (harmful), the others in blue,
    the count of harmful samples at the right end of each row."""
    rows = dist["rows"]
    edges = dist["edges"]
    row_h, gap = 30, 6
    top, bottom, left, right = 28, 46, 70, 150
    height = top + bottom + len(rows) * (row_h + gap)
    flagged = "look harmful" if rule == "negative" else "are flagged (likely mislabelled or unusual, not shown harmful)"
    c = Chart(width, height, (top, right, bottom, left), "Score distribution by class",
              f"Histogram of score values per class; bars left of the threshold line are samples that {flagged}.")
    c.domain(edges[0], edges[-1], 0, 1)
    ticks = [t for t in nice_ticks(edges[0], edges[-1], 6) if edges[0] <= t <= edges[-1]]
    ex = scale_exponent(ticks)
    for t in ticks:
        xx = c.x(t)
        c.add(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top - 4}" y2="{height - bottom}" stroke="{GRID}"/>')
        c.text(xx, height - bottom + 16, fmt(t, ex), "middle", 11)
    word = "harmful" if rule == "negative" else "flagged"
    c.text((left + width - right) / 2, height - 10,
           "score value: lower = " + ("more harmful" if rule == "negative" else "more suspicious") + (f" (×10{superscript(ex)})" if ex else ""), "middle", 12)
    c.text(width - right + 12, top - 10, word, "start", 11, GREY, "bold")
    bw = (c.w - left - right) / (len(edges) - 1)
    for r, row in enumerate(rows):
        y_base = top + r * (row_h + gap) + row_h
        peak = max(row["counts"]) or 1
        c.text(left - 8, y_base - row_h / 2 + 4, row["label"], "end", 12, INK, "bold")
        c.add(f'<line x1="{left}" x2="{width - right}" y1="{y_base:.1f}" y2="{y_base:.1f}" stroke="#c9ced4"/>')
        for b, n in enumerate(row["counts"]):
            if not n:
                continue
            hgt = max(1.5, row_h * math.sqrt(n / peak))
            x_left = c.x(edges[b])
            centre = (edges[b] + edges[b + 1]) / 2
            col = VERMILLION if centre < threshold else BLUE
            tip = f"class {row['label']}: {n} sample{'s' if n != 1 else ''} with value in [{fmt_value(edges[b])}, {fmt_value(edges[b + 1])}]"
            c.add(f'<rect x="{x_left + 0.5:.1f}" y="{y_base - hgt:.1f}" width="{max(0.5, bw - 1):.1f}" height="{hgt:.1f}" '
                  f'fill="{col}"><title>{escape(tip)}</title></rect>')
        pct = 100 * row["harmful"] / max(1, row["n"])
        c.text(width - right + 12, y_base - row_h / 2 + 4, f"{row['harmful']} of {row['n']} ({pct:.0f}%)", "start", 12)
    if math.isfinite(threshold):
        xt = c.x(threshold)
        c.add(f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{top - 8}" y2="{height - bottom}" stroke="{INK}" '
              f'stroke-width="1.5" stroke-dasharray="4 3"/>')
        if xt - 80 > left - 40:
            c.text(xt - 6, top - 12, f"◀ {word}", "end", 11, HARM_TEXT, "bold")
        if xt + 80 < width - right:
            c.text(xt + 6, top - 12, "helpful ▶" if rule == "negative" else "typical ▶", "start", 11, BLUE, "bold")
    return c.svg()


def removal_chart(curve: dict[str, Any], metric: str, ylabel: str, method: str, width: int = 470) -> str:
    """Lines of a test metric against the fraction of training data removed: lowest values first, random
    (mean with min-max band), highest values first (harmful and helpful first only for a signed effect on a
    target, which is why the lines are named by value)."""
    xs = curve["fractions"]
    h = curve["harmful"][metric]
    hp = curve["helpful"][metric]
    rm, rlo, rhi = curve["random"][metric], curve["random"][f"{metric}_min"], curve["random"][f"{metric}_max"]
    vals = [v for v in list(h) + list(hp) + list(rlo) + list(rhi) if v is not None]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 0.01
    c = Chart(width, 290, (14, 14, 44, 62), f"{ylabel} after removing training samples",
              f"{ylabel} when the lowest-valued, random, or highest-valued training samples are removed and the model refit.")
    c.domain(0, max(xs) if max(xs) > 0 else 1, lo - pad, hi + pad)
    percent = metric == "accuracy"
    c.axes(nice_ticks(0, c.x1, 5), nice_ticks(c.y0, c.y1, 5), "share of training data removed", ylabel, True, percent)
    c.band(xs, rlo, rhi, GREY, 0.18, f"random removal: min-max over {curve['repeats']} draws")

    def tips(name: str, ys: Sequence[float | None]) -> list[str]:
        return [f"{name}, {k} removed ({f * 100:.0f}%): {ylabel} {('%.1f%%' % (y * 100)) if percent else fmt(y)}"
                for k, f, y in zip(curve["k"], xs, ys) if y is not None]

    c.line(xs, rm, GREY, "6 4", "square", name="random", tips=tips("random (mean)", rm))
    c.line(xs, hp, BLUE, "2 3", "triangle", name="highest values first", tips=tips("highest values first", hp))
    c.line(xs, h, VERMILLION, None, "circle", name="lowest values first", tips=tips("lowest values first", h))
    return c.svg()


def recall_chart(det: dict[str, Any], method: str, width: int = 470) -> str:
    """Share of the flipped labels found against the share of training data inspected, lowest values first."""
    n, n_noisy = det["n"], det["n_noisy"]
    c = Chart(width, 290, (14, 14, 44, 62), "Flipped labels found when inspecting the lowest-valued samples first",
              "Cumulative share of flipped labels found, against the share of the training set inspected in score order.")
    c.domain(0, 1, 0, 1)
    c.axes(nice_ticks(0, 1, 5), nice_ticks(0, 1, 5), "share of training data inspected", "flipped labels found", True, True)
    best = n_noisy / n
    c.line([0, best, 1], [0, 1, 1], GREEN, "2 3", name="perfect ranking")
    c.line([0, 1], [0, 1], GREY, "6 4", name="random order")
    xs, ys = det["inspected"], det["found"]
    c.line(xs, ys, VERMILLION, None, None, name=method)
    k = det["k"]
    xk = k / n
    yk = det["recall_at_k"]
    c.add(c.marker("circle", c.x(xk), c.y(yk), VERMILLION, 5, f"after {k} samples: {yk * 100:.0f}% of the flipped labels found"))
    c.text(c.x(xk) + 8, c.y(yk) + 16, f"{yk * 100:.0f}% after {k}", "start", 11, INK)
    return c.svg()


def noisy_hist(det: dict[str, Any], edges: Sequence[float], threshold: float, width: int = 470) -> str:
    """Overlaid histograms of the values of flipped and clean samples (shared bins, counts on a sqrt axis)."""
    hn, hc = det["hist_noisy"], det["hist_clean"]
    peak = max(max(hn), max(hc), 1)
    c = Chart(width, 290, (14, 14, 44, 62), "Score values of flipped and clean samples",
              "Histogram of score values for samples whose label was flipped and for clean samples.")
    c.domain(edges[0], edges[-1], 0, math.sqrt(peak) * 1.05)
    yt = sqrt_ticks(peak)
    ex = scale_exponent(nice_ticks(edges[0], edges[-1], 5))
    for t in yt:
        yy = c.y(math.sqrt(t))
        c.add(f'<line x1="{c.left}" x2="{c.w - c.right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{GRID}"/>')
        c.text(c.left - 6, yy + 4, f"{t:g}", "end", 11)
    for t in nice_ticks(edges[0], edges[-1], 5):
        if edges[0] <= t <= edges[-1]:
            c.text(c.x(t), c.h - c.bottom + 16, fmt(t, ex), "middle", 11)
    c.text((c.left + c.w - c.right) / 2, c.h - 8, "score value" + (f" (×10{superscript(ex)})" if ex else ""), "middle", 12)
    c.text(14, (c.top + c.h - c.bottom) / 2, "samples (square-root scale)", "middle", 12, rotate=-90)
    bw = (c.w - c.left - c.right) / (len(edges) - 1)
    for counts, color, name, op in ((hc, SKY, "correct labels", 1.0), (hn, ORANGE, "flipped labels", 0.85)):
        for b, n in enumerate(counts):
            if n:
                y = c.y(math.sqrt(n))
                c.add(f'<rect x="{c.x(edges[b]) + 0.5:.1f}" y="{y:.1f}" width="{max(0.5, bw - 1):.1f}" '
                      f'height="{c.y(0) - y:.1f}" fill="{color}" opacity="{op}"><title>{n} {name} in '
                      f'[{escape(fmt_value(edges[b]))}, {escape(fmt_value(edges[b + 1]))}]</title></rect>')
    if math.isfinite(threshold) and edges[0] <= threshold <= edges[-1]:
        xt = c.x(threshold)
        c.add(f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{c.top}" y2="{c.h - c.bottom}" stroke="{INK}" stroke-dasharray="4 3"/>')
    return c.svg()


def sqrt_ticks(peak: float) -> list[float]:
    """Round counts (1, 2, 5 x 10^k) for a square-root axis up to `peak`, spaced evenly enough to read."""
    cands = [m * 10 ** e for e in range(0, 9) for m in (1, 2, 5) if m * 10 ** e <= peak]
    ticks = [0.0]
    for t in cands:
        if math.sqrt(t) - math.sqrt(ticks[-1]) >= 0.15 * math.sqrt(max(peak, 1)):
            ticks.append(float(t))
    return ticks


def legend_html(items: Sequence[tuple[str, str, str | None, str | None]]) -> str:
    """An HTML legend (wraps with the page): items are (name, colour, dash or "bar", marker)."""
    out = []
    for name, color, dash, marker in items:
        if dash == "bar":
            mark = f'<rect x="8" y="1" width="14" height="12" fill="{color}"/>'
        else:
            da = f' stroke-dasharray="{dash}"' if dash else ""
            mark = f'<line x1="1" x2="29" y1="7" y2="7" stroke="{color}" stroke-width="2.4"{da}/>'
            if marker:
                mark += Chart.marker(marker, 15, 7, color, 3.5)
        out.append(f'<span class="key"><svg width="30" height="14" aria-hidden="true">{mark}</svg>{escape(name)}</span>')
    return f'<div class="legend">{"".join(out)}</div>'


def removal_legend(method: str, repeats: int) -> str:
    return legend_html([(f"lowest values first ({method})", VERMILLION, None, "circle"),
                        (f"random (mean; band: min–max of {repeats})", GREY, "6 4", "square"),
                        ("highest values first", BLUE, "2 3", "triangle")])


def recall_legend(method: str) -> str:
    return legend_html([(f"lowest values first ({method})", VERMILLION, None, None),
                        ("perfect ranking", GREEN, "2 3", None), ("random order", GREY, "6 4", None)])


def noisy_legend(det: dict[str, Any]) -> str:
    return legend_html([(f"flipped labels ({det['n_noisy']:,})", ORANGE, "bar", None),
                        (f"correct labels ({det['n'] - det['n_noisy']:,})", SKY, "bar", None)])
