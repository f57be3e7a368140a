"""The style sheet and small number formats shared by the report pages (`html`, `clean`)."""

from __future__ import annotations

CSS = """
:root{--ink:#1f2328;--muted:#57606a;--line:#d0d7de;--soft:#f6f8fa;--harm:#b04400;--help:#0072B2;--flip:#8a5a00;}
*{box-sizing:border-box}
body{margin:0;font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--ink);background:#fff}
main{max-width:1080px;margin:0 auto;padding:28px 28px 56px}
header{padding-bottom:4px}
h1{font-size:28px;margin:0 0 4px;letter-spacing:-.01em}
h2{font-size:21px;margin:40px 0 6px;padding-top:8px;border-top:1px solid var(--line)}
h3{font-size:16px;margin:22px 0 8px}
.sub{color:var(--muted);margin:0}
nav{display:flex;flex-wrap:wrap;gap:6px 14px;margin:12px 0 0;font-size:14px}
nav a{color:var(--help);text-decoration:none}
nav a:hover{text-decoration:underline}
.lead{font-size:19px;margin:22px 0 10px;max-width:62em}
.lead strong{color:var(--harm)}
.findings{margin:6px 0 18px;padding-left:20px;max-width:62em}
.findings li{margin:4px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:12px;margin:16px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:12px 14px;background:var(--soft)}
.card .k{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);margin:0}
.card .v{font-size:17px;font-weight:600;margin:2px 0}
.card .d{font-size:14px;color:var(--muted);margin:0}
.big{font-size:30px!important;color:var(--harm)}
p.note{color:var(--muted);font-size:14px;max-width:62em;margin:6px 0}
figure{margin:12px 0}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:18px}
figcaption{font-size:14px;color:var(--muted);margin-top:4px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px}
.sample{border:1px solid var(--line);border-radius:8px;padding:10px;background:#fff;font-size:13px;line-height:1.4}
.sample img{width:100%;max-width:128px;display:block;margin:0 auto 8px;image-rendering:pixelated;border:1px solid var(--line);border-radius:4px}
.sample .rank{font-weight:700}
.sample .val{font-variant-numeric:tabular-nums}
.texts{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.texts blockquote{margin:0 0 8px;font-size:14px;line-height:1.45;max-height:9.5em;overflow:auto}
.badge{display:inline-block;border-radius:10px;padding:0 7px;font-size:12px;font-weight:600;margin-top:4px}
.badge.flip{background:#fff1d6;color:var(--flip);border:1px solid #e6b655}
.badge.ok{background:#eef1f4;color:var(--muted);border:1px solid var(--line)}
table{border-collapse:collapse;font-size:14px;margin:8px 0;width:100%}
table.compact{width:auto;min-width:420px}
.legend{display:flex;flex-wrap:wrap;gap:4px 18px;font-size:13px;margin:8px 0 2px}
.key{display:inline-flex;align-items:center;gap:6px}
th,td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.feat{white-space:nowrap;margin-right:10px}
.neg{color:var(--harm)}
details{margin:10px 0}
summary{cursor:pointer;font-weight:600}
code,pre{font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:10px;overflow:auto;max-height:420px}
.rec{font-size:22px;font-weight:650;margin:18px 0 6px}
.rec.none{color:var(--muted)}
.rec.act{color:#1a7f37}
tr.chosen td{background:#eef8f0;font-weight:600}
footer{margin-top:48px;color:var(--muted);font-size:13px;border-top:1px solid var(--line);padding-top:12px}
@media print{nav{display:none} h2{break-before:auto}}
"""


def pct(x: float | None, digits: int = 1) -> str:
    """A share as a percentage, "–" for None."""
    return "–" if x is None else f"{100 * x:.{digits}f}%"
