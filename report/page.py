"""The report's HTML: one self-contained page (inline CSS, no scripts), figures as relative ``<img>`` links."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from negdb.report.captions import num

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.6em; }
figure { margin: 1em 0 .5em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .88em; color: #333; margin-top: .4em; }
figcaption p { margin: .2em 0; }
table { border-collapse: collapse; font-size: .82em; margin: .6em 0 1.2em; }
th, td { border: 1px solid #ddd; padding: .2em .5em; text-align: right; }
th { background: #f4f4f4; } td.t { text-align: left; }
.note { background: #fff8e6; border-left: 4px solid #e0a800; padding: .5em .8em; font-size: .92em; }
code { background: #f4f4f4; padding: .05em .3em; border-radius: 3px; }
.meta { color: #555; font-size: .9em; }
"""


@dataclass
class Block:
    """One figure (or a note in its place) with its caption lines and tables of key numbers."""

    key: str
    title: str
    image: str | None = None
    alt: str = ""
    caption: list[str] = field(default_factory=list)
    tables: list[tuple[str, pl.DataFrame | str]] = field(default_factory=list)
    """(title, frame) pairs; a string is a table already rendered as HTML (by :func:`table`)."""
    note: str | None = None
    command: str | None = None


@dataclass
class Section:
    """One model: a facts table and its blocks."""

    anchor: str
    title: str
    facts: list[tuple[str, str]]
    blocks: list[Block]


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _cell(v: Any) -> str:
    cls = ' class="t"' if isinstance(v, str) or v is None else ""
    if isinstance(v, (list, tuple)):
        v = ", ".join(str(x) for x in v)
        cls = ' class="t"'
    return f"<td{cls}>{esc(num(v))}</td>"


def table(frame: pl.DataFrame, max_rows: int = 120) -> str:
    """An HTML table of ``frame`` (numbers to 4 significant digits; at most ``max_rows`` rows, then a count)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    body = ["<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in frame.head(max_rows).rows()]
    more = (f'<tr><td class="t" colspan="{len(frame.columns)}">... {frame.height - max_rows} more rows</td></tr>'
            if frame.height > max_rows else "")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}{more}</tbody></table>"


def _block(b: Block) -> str:
    out = [f'<h3 id="{esc(b.key)}">{esc(b.title)}</h3>']
    if b.image is not None:
        caption = "".join(f"<p>{esc(line)}</p>" for line in b.caption)
        out.append(f'<figure><img src="{esc(b.image)}" alt="{esc(b.alt)}">'
                   f"<figcaption>{caption}</figcaption></figure>")
    if b.note is not None:
        cmd = f" Run <code>{esc(b.command)}</code> to produce it." if b.command else ""
        out.append(f'<p class="note">{esc(b.note)}{cmd}</p>')
    for title, frame in b.tables:
        out.append(f"<p><b>{esc(title)}</b></p>" + (frame if isinstance(frame, str) else table(frame)))
    return "\n".join(out)


def render(title: str, meta: list[str], sections: list[Section]) -> str:
    """The whole page."""
    toc = "".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a></li>' for s in sections)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(title)}</title><style>{CSS}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    parts += [f'<p class="meta">{esc(m)}</p>' for m in meta]
    parts.append(f"<ul>{toc}</ul>")
    for s in sections:
        parts.append(f'<h2 id="{esc(s.anchor)}">{esc(s.title)}</h2>')
        parts.append("<table>" + "".join(f'<tr><th>{esc(k)}</th><td class="t">{esc(v)}</td></tr>'
                                         for k, v in s.facts) + "</table>")
        parts.extend(_block(b) for b in s.blocks)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
