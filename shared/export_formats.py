"""Audit export formats, one record each: what the gateway, forwarders and the CLI need to know of them.

Pure data: auditsvc maps each name to its formatter (`services/auditsvc/siem.py` FORMATTERS), and
a unit test keeps the two sets equal, so adding a format is one record here plus its formatter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExportFormat:
    name: str  # as in `?format=` and a forwarder's `format`
    label: str  # how the API's documentation names it
    media_type: str  # of a streamed export
    extension: str  # of an export's file name
    forwardable: bool  # may a continuous forwarder send it


EXPORT_FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat("cef", "CEF", "text/plain", "cef", forwardable=True),
    ExportFormat("leef", "LEEF", "text/plain", "leef", forwardable=True),
    ExportFormat("syslog", "RFC 5424 syslog", "text/plain", "syslog", forwardable=True),
    ExportFormat("jsonl", "JSON lines", "application/x-ndjson", "jsonl", forwardable=True),
    # The chained record itself, verifiable offline; a SIEM has no use for it.
    ExportFormat("records", "chained records", "application/x-ndjson", "records", forwardable=False),
)
BY_NAME: dict[str, ExportFormat] = {f.name: f for f in EXPORT_FORMATS}
NAMES: tuple[str, ...] = tuple(BY_NAME)
FORWARDABLE: tuple[str, ...] = tuple(f.name for f in EXPORT_FORMATS if f.forwardable)


def labels() -> str:
    """"CEF, LEEF, ... or chained records": every format, as documentation names them."""
    names = [f.label for f in EXPORT_FORMATS]
    return ", ".join(names[:-1]) + " or " + names[-1]


MEDIA_TYPES: tuple[str, ...] = tuple(dict.fromkeys(f.media_type for f in EXPORT_FORMATS))
