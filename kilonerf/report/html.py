"""The report page as one HTML string: inline CSS, relative links, nothing fetched from outside."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from kilonerf.report.images import ERROR_MAX, ViewRow

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.name, th.name { text-align: left; }
table.views td, table.views th { text-align: center; vertical-align: top; font-size: 0.85em; }
table.views img { width: 200px; image-rendering: pixelated; display: block; margin: 0 auto 0.2em; }
img.curves { max-width: 100%; } img.scale { width: 200px; height: 12px; vertical-align: middle; }
p.note { color: #8a5a00; background: #fff6e0; padding: 0.3em 0.6em; border-left: 3px solid #e0a000; }
video { width: 480px; max-width: 100%; background: #000; image-rendering: pixelated; }
"""

COLUMN_FORMATS = {
    "psnr": ("PSNR (dB)", "{:.2f}"),
    "ssim": ("SSIM", "{:.4f}"),
    "ssim_skimage": ("SSIM (skimage)", "{:.4f}"),
    "lpips": ("LPIPS", "{:.4f}"),
    "ms_per_frame": ("ms / frame", "{:.1f}"),
    "samples_per_ray": ("samples / ray", "{:.1f}"),
    "speedup": ("speed-up", "{:.1f}x"),
    "views": ("views", "{:d}"),
    "steps": ("steps", "{:d}"),
    "seconds": ("seconds", "{:.1f}"),
    "val_psnr": ("val PSNR (dB)", "{:.2f}"),
}


def cell(key: str, value: Any) -> str:
    """One table cell's text: numbers formatted by column, missing / NaN as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    fmt = COLUMN_FORMATS.get(key, ("", "{}"))[1]
    try:
        return escape(fmt.format(value))
    except (ValueError, TypeError):
        return escape(str(value))


def table(rows: Sequence[tuple[str, dict[str, Any]]], keys: Sequence[str], first: str) -> str:
    """An HTML table: a name column headed ``first``, then one column per key."""
    head = f'<th class="name">{escape(first)}</th>' + "".join(
        f"<th>{escape(COLUMN_FORMATS.get(k, (k, ''))[0])}</th>" for k in keys
    )
    body = "".join(
        f'<tr><td class="name">{escape(name)}</td>' + "".join(f"<td>{cell(k, row.get(k))}</td>" for k in keys) + "</tr>"
        for name, row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def views_section(rows: list[ViewRow], assets: str) -> str:
    """The side-by-side images: ground truth, teacher, student, error heatmap."""
    columns = [c for c in ("ground truth", "teacher", "student", "error") if any(c in r.cells for r in rows)]
    head = "".join(f"<th>{escape(c if c != 'error' else '|error|')}</th>" for c in columns)
    body = []
    for r in rows:
        tds = []
        for c in columns:
            if c not in r.cells:
                tds.append("<td>&ndash;</td>")
                continue
            caption = f"{r.name}" + (f", {r.psnr[c]:.2f} dB" if c in r.psnr else "")
            tds.append(f'<td><img src="{escape(assets)}/{escape(r.cells[c])}" alt="{escape(c)} {escape(r.name)}">'
                       f"{escape(caption)}</td>")  # fmt: skip
        body.append("<tr>" + "".join(tds) + "</tr>")
    legend = ""
    if "error" in columns:
        scale = f'<img class="scale" src="{escape(assets)}/error_scale.png" alt="error colour scale">'
        legend = (f"<p>|error|: mean absolute difference over RGB, {scale} 0 to {ERROR_MAX} or more "
                  "(colours in [0, 1]); the student's, else the teacher's.</p>")  # fmt: skip
    return f'<table class="views"><tr>{head}</tr>{"".join(body)}</table>{legend}'


def page(title: str, sections: list[tuple[str, str]]) -> str:
    """The whole document: ``sections`` are (heading, HTML body) pairs."""
    parts = "".join(f"<h2>{escape(h)}</h2>\n{body}\n" for h, body in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n"
        f"{parts}</body>\n</html>\n"
    )
