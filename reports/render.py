"""The report's document model (sections of blocks) and its two renderings.

Markdown refers to ``figures/*.png`` next to it; HTML embeds every figure as a base64 data URI,
so ``report.html`` is one self-contained file that opens from disk with no server. The page
carries two small inline scripts that let a headless browser check it: one counts script and
resource errors into ``<html data-console-errors>``, one marks ``<body data-broken-images>``
with the images that did not decode (``naturalWidth == 0``) after load.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from reports.tables import Table, markdown_table

__all__ = ["Figure", "Heading", "Note", "Section", "Text", "render_html", "render_markdown"]


@dataclass
class Text:
    """A paragraph; `backticks` become code, **stars** bold."""

    text: str


@dataclass
class Note:
    """A missing input or a caveat, shown highlighted."""

    text: str


@dataclass
class Heading:
    """A sub-heading inside a section."""

    text: str


@dataclass
class Figure:
    """A PNG file of the report and its caption."""

    path: Path
    caption: str


Block = Text | Note | Heading | Figure | Table


@dataclass
class Section:
    """A numbered section of the report."""

    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        """Append blocks in order."""
        self.blocks.extend(blocks)


# ------------------------------------------------------------------------------ markdown


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def render_markdown(title: str, intro: list[Block], sections: list[Section], base: Path) -> str:
    """The report as Markdown; figures and table files linked relative to ``base``."""
    lines = [f"# {title}", ""]
    for block in intro:
        lines += _md_block(block, base)
    lines += ["## Contents", ""]
    lines += [f"{i}. [{s.title}](#{s.anchor})" for i, s in enumerate(sections, 1)] + [""]
    for i, section in enumerate(sections, 1):
        lines += [f'<a id="{section.anchor}"></a>', "", f"## {i}. {section.title}", ""]
        for block in section.blocks:
            lines += _md_block(block, base)
    return "\n".join(lines).rstrip() + "\n"


def _md_block(block: Block, base: Path) -> list[str]:
    if isinstance(block, Heading):
        return [f"### {block.text}", ""]
    if isinstance(block, Text):
        return [block.text, ""]
    if isinstance(block, Note):
        return [f"> **Note:** {block.text}", ""]
    if isinstance(block, Figure):
        return [f"![{block.caption}]({_rel(block.path, base)})", "", f"*{block.caption}*", ""]
    links = " · ".join(
        f"[{p.suffix[1:].upper()}]({_rel(p, base)})" for p in (block.csv, block.tex) if p
    )
    return [f"**{block.caption}** ({links})", "", markdown_table(block.frame), ""]


# ---------------------------------------------------------------------------------- html

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:1.5em 2em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #345;padding-bottom:.3em}h2{margin-top:2em;border-bottom:1px solid #ccd}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.85em;display:block;overflow-x:auto}
th,td{border:1px solid #ccd;padding:.25em .55em;text-align:left;white-space:nowrap}
th{background:#eef1f6}tr:nth-child(even) td{background:#fafbfd}
figure{margin:1em 0 2em}figure img{max-width:100%;border:1px solid #dde}
figcaption{font-size:.9em;color:#555}.note{background:#fff6e0;border-left:4px solid #e0a000;
padding:.5em .9em;margin:.8em 0}.caption{font-weight:600;margin-bottom:.2em}
.files a{font-size:.85em;margin-left:.4em}code{background:#f2f2f5;padding:0 .25em}
nav ol{columns:2}
"""

# Counts script errors, console.error calls and failed resource loads (captured on window).
_HEAD_SCRIPT = """(function(){var d=document.documentElement;d.dataset.consoleErrors="0";
function bump(){d.dataset.consoleErrors=String(Number(d.dataset.consoleErrors)+1);}
window.addEventListener("error",bump,true);
var original=console.error;console.error=function(){bump();return original.apply(console,arguments);};
})();"""

# After load: how many images did not decode.
_TAIL_SCRIPT = """window.addEventListener("load",function(){var broken=0;
for(var i=0;i<document.images.length;i++){var im=document.images[i];
if(!im.complete||im.naturalWidth===0){broken++;}}
document.body.dataset.images=String(document.images.length);
document.body.dataset.brokenImages=String(broken);document.body.dataset.checked="1";});"""


def _inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_block(block: Block, base: Path) -> str:
    if isinstance(block, Heading):
        return f"<h3>{html.escape(block.text)}</h3>"
    if isinstance(block, Text):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Note):
        return f'<div class="note"><strong>Note:</strong> {_inline(block.text)}</div>'
    if isinstance(block, Figure):
        alt = html.escape(block.caption, quote=True)
        return (
            f'<figure><img src="{_data_uri(block.path)}" alt="{alt}">'
            f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
        )
    links = "".join(
        f'<a href="{html.escape(_rel(p, base), quote=True)}">{p.suffix[1:].upper()}</a>'
        for p in (block.csv, block.tex)
        if p
    )
    table = block.frame.to_html(index=False, border=0, na_rep="", escape=True)
    return (
        f'<div class="caption">{_inline(block.caption)}<span class="files">{links}</span></div>'
        f"{table}"
    )


def render_html(title: str, intro: list[Block], sections: list[Section], base: Path) -> str:
    """The report as one self-contained HTML page (figures embedded)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<script>{_HEAD_SCRIPT}</script>",
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [_html_block(b, base) for b in intro]
    parts.append("<nav><h2>Contents</h2><ol>")
    parts += [f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections]
    parts.append("</ol></nav>")
    for i, section in enumerate(sections, 1):
        parts.append(f'<section id="{section.anchor}"><h2>{i}. {html.escape(section.title)}</h2>')
        parts += [_html_block(b, base) for b in section.blocks]
        parts.append("</section>")
    parts.append(f"<script>{_TAIL_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"
