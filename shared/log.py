"""structlog set up once: JSON lines (or a console renderer on a terminal), context vars merged.

Every handler binds the correlation id first, so every line of a request carries it. Standard
library loggers (aiormq, aio-pika, aiohttp, pymongo) go through the same renderer, so a process
not on a terminal writes nothing but JSON lines.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

# What every line gets, whether it came from structlog or from a standard library logger.
_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]

# SECURITY: aio-pika and aiormq put the broker URL, password included, into their messages.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s\"']+:)[^@\s\"']+@", re.IGNORECASE)


def _redact_url_passwords(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = _URL_PASSWORD.sub(r"\1***@", event)
    return event_dict


def configure(level: str = "INFO", *, json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    # Plain tracebacks: rich's (with every frame's locals) could print a secret held in a local.
    console = structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    renderer = structlog.processors.JSONRenderer() if json else console
    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder(),
                           _redact_url_passwords],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
