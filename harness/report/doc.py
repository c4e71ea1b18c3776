"""A tiny document model that renders to Markdown and to self-contained HTML (images inlined as data URIs).

The report is built once as a list of blocks (headings, paragraphs, tables, images, lists), so the Markdown
and the HTML always say the same thing. Inline text is CommonMark (``*italics*``, ``**bold**``, ```code```,
``[text](href)``), rendered to HTML by markdown-it-py with raw HTML escaped.
"""

from __future__ import annotations

import base64
import html
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from markdown_it import MarkdownIt


def num(value: Any, digits: int = 4) -> str:
    """A measured number as the report prints it: ``digits`` significant digits, "–" for a missing value."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:.{digits}g}"
    return str(value)


def pct(value: float | None) -> str:
    """A percentage: whole numbers from 10 up, two significant digits below ("–" for a missing value)."""
    if value is None or value != value:
        return "–"
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}"


def slug(text: str) -> str:
    """An anchor name for a heading."""
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")


@dataclass
class Doc:
    """Blocks of a report; :meth:`markdown` and :meth:`html` render them."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, level: int, text: str, anchor: str | None = None) -> None:
        """A heading of ``level`` (2 or deeper; the title is level 1)."""
        self.blocks.append(("heading", (level, text, anchor or slug(text))))

    def para(self, text: str) -> None:
        """A paragraph of inline text."""
        self.blocks.append(("para", text))

    def bullets(self, items: Sequence[str]) -> None:
        """A bulleted list."""
        self.blocks.append(("bullets", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
        """A table; columns listed in ``right`` are right-aligned (numbers)."""
        self.blocks.append(("table", (list(header), [list(r) for r in rows], set(right))))

    def image(self, path: str, alt: str) -> None:
        """An image, by its path relative to the report folder."""
        self.blocks.append(("image", (path, alt)))

    def markdown(self) -> str:
        """The document as GitHub-flavoured Markdown."""
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text, anchor = value
                out += [f'<a id="{anchor}"></a>', "", f"{'#' * level} {text}", ""]
            elif kind == "para":
                out += [value, ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in value] + [""]
            elif kind == "table":
                header, rows, right = value
                out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                out.append("|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
                out.append("")
            elif kind == "image":
                path, alt = value
                out += [f"![{alt}]({path})", ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self, images: Callable[[str], bytes | None]) -> str:
        """The document as one self-contained HTML page, readable from phone to desktop: prose keeps a readable
        width, tables take the width they need up to the screen's and scroll inside their own box beyond it,
        names wrap only after an underscore; images (``images(path)`` gives the PNG bytes; None: link to the
        file) shrink to the page's width, are shown at the size their PNG's resolution records (sharp on
        high-density screens) and link to their file (full resolution)."""
        body = [f"<h1>{_inline(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text, anchor = value
                body.append(f'<h{level} id="{html.escape(anchor)}">{_inline(text)}</h{level}>')
            elif kind == "para":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                body.append(_table_html(*value))
            elif kind == "image":
                body.append(_image_html(*value, images(value[0])))
        return _PAGE.format(title=html.escape(self.title), body="\n".join(body))


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


_MD = MarkdownIt("commonmark", {"html": False})


def _inline(text: str) -> str:
    """Inline Markdown (emphasis, code, links) to HTML by markdown-it-py; raw HTML in the text is escaped.
    Names wrap only after an underscore (``<wbr>``), never inside a word."""
    return wrap_names(_MD.renderInline(str(text)))


def wrap_names(markup: str) -> str:
    """``markup`` with a ``<wbr>`` after every underscore of its text (not inside tags or attributes): the only
    places where a long name such as ``mnist_deep_xavier_published`` may wrap."""
    parts = re.split(r"(<[^>]*>)", markup)
    return "".join(p if p.startswith("<") else p.replace("_", "_<wbr>") for p in parts)


def _table_html(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    """A table in its own horizontally scrolling box; a text column with long cells keeps a readable width
    (class ``w``) where the box is narrower than the table."""
    wide = {i for i in range(len(header)) if i not in right and max((len(str(r[i])) for r in rows if i < len(r)),
                                                                     default=0) > 40}

    def cell(tag: str, i: int, text: str) -> str:
        classes = " ".join(c for c, on in (("r", i in right), ("w", i in wide)) if on)
        attr = f' class="{classes}"' if classes else ""
        return f"<{tag}{attr}>{_inline(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def png_size(data: bytes) -> tuple[int, int, float | None]:
    """Width and height in pixels of a PNG, and its resolution in dots per inch (None when not recorded)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    pos, dpi = 8, None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"pHYs":
            per_x, _, unit = struct.unpack(">IIB", data[pos + 8:pos + 17])
            dpi = per_x * 0.0254 if unit == 1 else None
            break
        if kind in (b"IDAT", b"IEND"):
            break
        pos += 12 + length
    return width, height, dpi


def _image_html(path: str, alt: str, data: bytes | None) -> str:
    """A figure: the PNG inlined, its CSS size its physical size (at 96 CSS px an inch), at most the page width;
    a link to its file (``path``, beside the report) opens it at full resolution, to zoom on a phone."""
    caption = f"<figcaption>{_inline(alt)} (<a href=\"{html.escape(path)}\">full size</a>)</figcaption>"
    link = f'<a class="full" href="{html.escape(path)}" title="open at full size">'
    if not data:
        return f'<figure>{link}<img src="{html.escape(path)}" alt="{html.escape(alt)}"></a>{caption}</figure>'
    width, height, dpi = png_size(data)
    scale = 96.0 / dpi if dpi else 1.0
    src = f"data:image/png;base64,{base64.b64encode(data).decode()}"
    return (f'<figure>{link}<img src="{src}" alt="{html.escape(alt)}" width="{round(width * scale)}" '
            f'height="{round(height * scale)}"></a>{caption}</figure>')


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0; padding: 1rem; line-height: 1.45;
       overflow-wrap: break-word; color: #1b1b1b; }}
body > * {{ max-width: 64rem; margin-left: auto; margin-right: auto; }}
h1 {{ font-size: 1.7em; line-height: 1.2; }}
body > .scroll {{ overflow-x: auto; width: fit-content; min-width: min(64rem, 100%); max-width: 100%;
                 margin: 0.8em auto; }}
table {{ border-collapse: collapse; font-size: 0.9em; overflow-wrap: normal; word-break: normal; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; vertical-align: top; }}
th {{ background: #f3f3f3; }}
td.r, th.r {{ text-align: right; font-variant-numeric: tabular-nums; }}
td.r {{ white-space: nowrap; }}
td.w {{ min-width: 14em; }}
tr > :first-child {{ position: sticky; left: 0; background: #fff; }}
thead tr > :first-child {{ background: #f3f3f3; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
figure {{ margin: 1em auto; }}
a.full {{ display: inline-block; max-width: 100%; cursor: zoom-in; }}
img {{ max-width: 100%; height: auto; vertical-align: top; }}
figcaption {{ font-size: 0.85em; color: #555; }}
@media (max-width: 40rem) {{
  body {{ padding: 0.5rem; font-size: 0.95em; }}
  h1 {{ font-size: 1.4em; }}
  table {{ font-size: 0.82em; }}
}}
</style></head>
<body>
{body}
</body></html>
"""
