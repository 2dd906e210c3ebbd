"""A small offline HTML report: headings, paragraphs, tables and PNG figures in one file.

No external CSS, JavaScript or fonts, so the report reads the same without a network. Figures
are linked by relative path (the report's folder travels with it) or, with `embed=True`,
inlined as base64 data URIs (one self-contained file). All text is escaped.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radiogenomics._atomic import atomic_write_text

STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 1.5em auto; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: bold; padding: 0.3em 0; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
"""


@dataclass
class Section:
    """One part of a report: a heading, then paragraphs, tables (caption -> DataFrame) and
    figures (caption -> PNG path), shown side by side where they fit."""

    heading: str
    paragraphs: Sequence[str] = ()
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    figures: Mapping[str, str | Path] = field(default_factory=dict)


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "–" if not np.isfinite(value) else f"{value:.4g}"
    return html.escape(str(value))


def table_html(df: pd.DataFrame, caption: str | None = None) -> str:
    """A DataFrame as an escaped HTML table (the index as the first columns)."""
    df = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"


def _img_src(path: Path, out: Path, embed: bool) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"report figure not found: {path}")
    if embed:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"data:image/png;base64,{data}"
    return Path(os.path.relpath(path.resolve(), out.resolve().parent)).as_posix()


def write_html(
    path: str | Path, title: str, sections: Sequence[Section], *, embed: bool = False
) -> Path:
    """Write `sections` under `title` as one HTML file at `path` (atomically); returns `path`.

    Figures are `<img>` tags linking their PNG relative to `path` (or base64 with `embed`); a
    missing figure is a FileNotFoundError naming it.
    """
    path = Path(path)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        parts += [table_html(df, caption) for caption, df in section.tables.items()]
        if section.figures:
            parts.append('<div class="figures">')
            for caption, fig in section.figures.items():
                src = html.escape(_img_src(Path(fig), path, embed), quote=True)
                alt = html.escape(caption, quote=True)
                parts.append(
                    f'<figure><img src="{src}" alt="{alt}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
            parts.append("</div>")
    parts.append("</body></html>\n")
    return atomic_write_text(path, "\n".join(parts))


__all__ = ["Section", "table_html", "write_html"]
