"""The one-page HTML report of an experiment: self-contained (pictures inlined as
``data:`` URIs, styles and script inline, a Content-Security-Policy that forbids any
network request), readable offline and attachable to a mail.

A small inline script records, once the page has loaded, each picture's natural size on
the picture (``data-natural-width``/``-height``) and a summary on ``#report-status``
(pictures, broken pictures, script errors), so a headless browser can check the page.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from teacherkit.reporting.numbers import UNDEFINED, format_column, format_number

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 2em; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; } th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 8px; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 0.8em; }
.note { color: #666; font-size: 0.85em; }
"""

SCRIPT = """
(function () {
  var errors = [];
  window.addEventListener('error', function (e) { errors.push(String(e.message || e)); });
  window.addEventListener('load', function () {
    var images = document.querySelectorAll('img'), broken = 0;
    for (var i = 0; i < images.length; i++) {
      var img = images[i];
      img.setAttribute('data-natural-width', img.naturalWidth);
      img.setAttribute('data-natural-height', img.naturalHeight);
      if (!img.complete || img.naturalWidth === 0) { broken++; }
    }
    var status = document.getElementById('report-status');
    status.setAttribute('data-images', images.length);
    status.setAttribute('data-broken', broken);
    status.setAttribute('data-errors', errors.length);
    status.setAttribute('data-loaded', 'yes');
    status.textContent = images.length + ' pictures, ' + broken + ' broken, ' + errors.length + ' script errors';
  });
})();
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(path: Path, caption: str, width: int | None = None) -> str:
    """An inlined picture with a caption; nothing when the file does not exist."""
    if not Path(path).is_file():
        return ""
    style = f' style="max-width:{width}px"' if width else ""
    return (f'<figure><img src="{data_uri(Path(path).read_bytes())}" alt="{esc(caption)}"{style}>'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric_from: int = 1, by_row: bool = False) -> str:
    """A table whose numbers share their decimals per column, or per row with ``by_row``
    (a row per metric, a column per model) — :mod:`teacherkit.reporting.numbers`. Cells
    before ``numeric_from`` and strings (already formatted) are shown as they are."""
    grid = [[row[c] if c < len(row) else None for c in range(len(header))] for row in rows]
    cells = [[h_cell if isinstance(h_cell, str) else "" for h_cell in row] for row in grid]
    groups = ([[(r, c) for c in range(numeric_from, len(header))] for r in range(len(grid))] if by_row
              else [[(r, c) for r in range(len(grid))] for c in range(numeric_from, len(header))])
    for group in groups:
        numeric = [(r, c) for r, c in group if _is_number(grid[r][c])]
        for (r, c), text in zip(numeric, format_column([grid[r][c] for r, c in numeric])):
            cells[r][c] = text
    head = "".join(f"<th>{esc(h_cell)}</th>" for h_cell in header)
    body = []
    for r, row in enumerate(grid):
        tds = []
        for c, value in enumerate(row):
            text = cells[r][c] if (c >= numeric_from and _is_number(value)) else esc(value)
            tds.append(f'<td class="num">{text}</td>' if c >= numeric_from else f"<td>{text}</td>")
        body.append(f"<tr>{''.join(tds)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def key_values(pairs: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v if isinstance(v, str) else format_number(v))}</td></tr>"
                   for k, v in pairs)
    return f"<table><tbody>{rows}</tbody></table>"


def page(title: str, sections: Sequence[str]) -> str:
    """The whole document around ``sections`` (already HTML)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
        f"<h1>{esc(title)}</h1>"
        '<p class="note" id="report-status" data-loaded="no">loading</p>'
        + "\n".join(sections)
        + f'<p class="note">{esc(UNDEFINED)} = undefined (no ground truth of a class, or not measured).</p>'
        "</body></html>\n"
    )
