"""SVG charts of a compliance report: horizontal bars (counts by device, key, policy, reason) and
trend rows (releases and denials per hour or day). Pure string building, every text escaped.

The charts use SVG presentation attributes only (``fill``, ``font-size``), never ``style``, so they
render under a strict Content-Security-Policy (``style-src 'self'``) both inline in the console and
in the standalone HTML report. Long labels wrap onto further lines instead of being cut, and the
view box is wide enough for the longest bar plus its count, so nothing is clipped at the edge."""

from __future__ import annotations

import textwrap
from html import escape

WIDTH = 640
FONT = 12
CHAR_WIDTH = 7.5  # generous width of one character at FONT px, so estimates err on the wide side
LINE = 16
BAR = 16
WRAP = int(WIDTH / CHAR_WIDTH) - 2
RELEASE_FILL = "#3b6ea5"
DENIAL_FILL = "#b5473a"


def label(ident: object, name: object = None) -> str:
    """How an id is shown: its name beside it when known."""
    return f"{name} ({ident})" if name and name != ident else str(ident)


def _text_width(text: str) -> float:
    return len(text) * CHAR_WIDTH


def _bar_room(top: int) -> float:
    """Longest bar that still leaves room for the biggest count after it."""
    return WIDTH - _text_width(str(top)) - 12


def _open(title: str, height: int) -> str:
    t = escape(title)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{t}" class="chart" '
            f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"><title>{t}</title>')


def _lines(text: str) -> list[str]:
    return textwrap.wrap(text, WRAP, break_long_words=True, break_on_hyphens=False) or [""]


def _label_text(lines: list[str], y: int) -> str:
    spans = "".join(f'<tspan x="0" dy="{0 if i == 0 else LINE}">{escape(line)}</tspan>'
                    for i, line in enumerate(lines))
    return f'<text x="0" y="{y + FONT}" font-size="{FONT}" fill="#222">{spans}</text>'


def _bar(y: int, count: int, top: int, fill: str, height: int = BAR) -> str:
    width = round(_bar_room(top) * count / (top or 1), 1)
    return (f'<rect x="0" y="{y}" width="{width}" height="{height}" fill="{fill}"/>'
            f'<text x="{width + 6}" y="{y + height - 3}" font-size="{FONT}" fill="#222">{count}</text>')


def bars(title: str, rows: list[tuple[str, int]]) -> str:
    """One bar per row, the full label above it (wrapped), the count after it."""
    if not rows:
        return ""
    top = max(count for _, count in rows) or 1
    parts, y = [], 0
    for text, count in rows:
        lines = _lines(text)
        parts.append(_label_text(lines, y))
        y += LINE * len(lines) + 2
        parts.append(_bar(y, count, top, RELEASE_FILL))
        y += BAR + 8
    return _open(title, y) + "".join(parts) + "</svg>"


def trend(title: str, rows: list[tuple[str, int, int]]) -> str:
    """Per time bucket: its label, then a releases bar and a denials bar, each with its count."""
    if not rows:
        return ""
    top = max(max(r, d) for _, r, d in rows) or 1
    half = BAR // 2 + 2
    parts = [f'<rect x="0" y="2" width="10" height="10" fill="{RELEASE_FILL}"/>'
             f'<text x="14" y="{FONT}" font-size="{FONT}" fill="#222">releases</text>'
             f'<rect x="90" y="2" width="10" height="10" fill="{DENIAL_FILL}"/>'
             f'<text x="104" y="{FONT}" font-size="{FONT}" fill="#222">denials</text>']
    y = LINE + 6
    for bucket, released, denied in rows:
        parts.append(_label_text([bucket], y))
        y += LINE + 2
        parts.append(_bar(y, released, top, RELEASE_FILL, half))
        y += half + 2
        parts.append(_bar(y, denied, top, DENIAL_FILL, half))
        y += half + 8
    return _open(title, y) + "".join(parts) + "</svg>"


def _named(rows: list[dict], key: str) -> list[tuple[str, int]]:
    return [(label(r[key], r.get("name")), int(r["count"])) for r in rows[:15]]


def sections(report: dict) -> list[tuple[str, str]]:
    """Every chart of a report (the JSON form), as (title, svg); the svg is "" when there is no data."""
    trends = report.get("trends") or {}
    return [
        ("Releases and denials per hour", trend("Releases and denials per hour", [
            (t["bucket"], t["releases"], t["denials"]) for t in (trends.get("hour") or [])[-48:]])),
        ("Releases and denials per day", trend("Releases and denials per day", [
            (t["bucket"], t["releases"], t["denials"]) for t in (trends.get("day") or [])[-60:]])),
        *((f"{section.capitalize()} by {by}", bars(f"{section.capitalize()} by {by}",
                                                   _named(report[section][by], by)))
          for section in ("releases", "denials") for by in ("device", "key", "policy")),
        ("Top denial reasons", bars("Top denial reasons", _named(report["top_denial_reasons"], "reason"))),
        *((title, bars(title, [(str(k), int(v)) for k, v in report[key].items()])) for title, key in (
            ("Approvals", "approvals"), ("Keys by state", "keys_by_state"),
            ("Devices by status", "devices_by_status"), ("Devices by posture", "devices_by_posture"))),
    ]
