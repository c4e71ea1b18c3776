"""A tiny document model that renders to Markdown and to self-contained HTML (images inlined as data URIs).

The report is built once as a list of blocks (headings, paragraphs, tables, images, lists), so the Markdown
and the HTML always say the same thing. Inline text may use ``**bold**``, ```code``` and ``[text](href)``.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


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
        """The document as one HTML page; ``images(path)`` gives an image's PNG bytes (None: link to it)."""
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
                header, rows, right = value

                def cell(tag: str, i: int, text: str, right: set = right) -> str:
                    cls = ' class="r"' if i in right else ""
                    return f"<{tag}{cls}>{_inline(text)}</{tag}>"

                head = "".join(cell("th", i, h) for i, h in enumerate(header))
                rows_html = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>"
                                    for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>")
            elif kind == "image":
                path, alt = value
                data = images(path)
                src = f"data:image/png;base64,{base64.b64encode(data).decode()}" if data else html.escape(path)
                body.append(f'<p><img src="{src}" alt="{html.escape(alt)}"></p>')
        return _PAGE.format(title=html.escape(self.title), body="\n".join(body))


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str) -> str:
    """Inline Markdown (code, bold, links) to HTML, everything else escaped."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append(f"<code>{html.escape(m.group(1))}</code>")
        elif m.group(2) is not None:
            out.append(f"<strong>{html.escape(m.group(2))}</strong>")
        else:
            out.append(f'<a href="{html.escape(m.group(4))}">{html.escape(m.group(3))}</a>')
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.4; }}
table {{ border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; }}
th {{ background: #f3f3f3; }}
td.r, th.r {{ text-align: right; font-variant-numeric: tabular-nums; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
img {{ max-width: 100%; }}
</style></head>
<body>
{body}
</body></html>
"""
