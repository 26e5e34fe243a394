"""Render report blocks as Markdown (for a code host) and as one self-contained HTML file.

Every piece of text comes from configs or run files, so all of it is escaped here: HTML gets
`html.escape`, Markdown gets backslash escapes plus HTML entities (code hosts render inline HTML).
The HTML page references nothing outside itself: CSS is inline and figures are base64 PNG.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from objbench.reports.document import Block, Bullets, Callout, Heading, Image, Paragraph, Table

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~#$])")  # $ starts math on code hosts
_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1300px; margin: 1.2em auto; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1 { margin: 0.2em 0 0.3em; } h2 { margin: 1em 0 0.4em; } p { margin: 0.4em 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top;
         overflow-wrap: anywhere; }
.callout { border-left: 5px solid #2a7a2a; background: #eef7ee; padding: 0.5em 0.9em; margin: 0.6em 0; }
.callout.warning { border-color: #b45309; background: #fff4e5; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; }
figure img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9em; }
"""


def md_escape(text: object) -> str:
    """Text that Markdown shows literally, on one line (table cells must not break)."""
    text = html.escape(str(text), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\r", " ").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table; `tabulate` (pandas' to_markdown) is not a dependency."""
    header = "| " + " | ".join(md_escape(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(md_escape(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def to_markdown(blocks: list[Block], base: Path, figures: bool = True) -> str:
    """Markdown with image links relative to `base`, the folder report.md is written to; without
    `figures`, each figure is named with where `objbench report` draws it instead."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + md_escape(block.text))
        elif isinstance(block, Paragraph):
            parts.append(md_escape(block.text))
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {md_escape(item)}" for item in block.items))
        elif isinstance(block, Table):
            parts.append(markdown_table(block.frame))
        elif isinstance(block, Callout):
            parts.append("> " + ("**Warning:** " if block.warning else "") + md_escape(block.text))
        elif isinstance(block, Image) and not figures:
            parts.append(md_escape(f"({block.figure.caption} Not in this copy: `objbench report` on"
                                   f" the study folder draws it as {block.figure.png.relative_to(base)}.)"))
        elif isinstance(block, Image):
            link = block.figure.png.relative_to(base).as_posix()
            svg = block.figure.svg.relative_to(base).as_posix()
            parts.append(f"![{md_escape(block.figure.title)}]({link})\n\n"
                         f"{md_escape(block.figure.caption)} ([SVG]({svg}))")
    return "\n\n".join(parts) + "\n"


def to_html(blocks: list[Block], title: str) -> str:
    """One HTML page with no external references."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_esc(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_esc(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_esc(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            body.append(_html_table(block.frame))
        elif isinstance(block, Callout):
            tone, lead = ("callout warning", "<strong>Warning:</strong> ") if block.warning else ("callout", "")
            body.append(f'<div class="{tone}">{lead}{_esc(block.text)}</div>')
        elif isinstance(block, Image):
            png = base64.b64encode(block.figure.png.read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{_esc(block.figure.title)}" src="data:image/png;base64,{png}">'
                f"<figcaption>{_esc(block.figure.caption)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
