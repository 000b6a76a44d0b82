"""The HTML page every report is written into: self-contained (plotly.js embedded, so the file opens offline)."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go

from shivam.userfiles import write_text

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script>/* record script errors on the page itself, so a headless browser's DOM dump shows them */
(function(){{var note=function(m){{var d=document.documentElement;
d.setAttribute('data-errors',(d.getAttribute('data-errors')||'')+m+';');}};
window.addEventListener('error',function(e){{note(e.message);}});var ce=console.error;
console.error=function(){{note([].join.call(arguments,' '));ce.apply(console,arguments);}};}})();</script>
<style>body{{font-family:system-ui,sans-serif;margin:24px;max-width:1200px}}
table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f3f3f3}} .fig{{margin:28px 0}}
code{{background:#f6f6f6;padding:1px 4px}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_page(path: str | Path, title: str, sections: list[str], figures: list[go.Figure]) -> None:
    parts = list(sections)
    for i, fig in enumerate(figures):
        fig.update_layout(template="plotly_white", height=460, margin=dict(l=70, r=30, t=60, b=60))
        parts.append(
            '<div class="fig">' + fig.to_html(include_plotlyjs=(i == 0), full_html=False, div_id=f"fig{i}") + "</div>"
        )
    write_text(path, _PAGE.format(title=html.escape(title), body="\n".join(parts)), "report")
