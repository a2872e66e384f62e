"""structlog set up once per process so every line is JSON in production and readable at a terminal, with the request id bound."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

import structlog

from sync_server.settings import LogFormat


# The fields of the request being served (request_id, then principal), added to every line logged while it runs. One
# ContextVar holding one dict per request, set once: structlog's bind/unbind_contextvars cost a ContextVar set per
# field and per unbind on every request, though all but a sampled few of them log nothing.
REQUEST_FIELDS: ContextVar[dict[str, str] | None] = ContextVar("fieldsync_request_fields", default=None)


def add_request_fields(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the current request's fields, unless the line sets them itself."""
    fields = REQUEST_FIELDS.get()
    if fields:
        for key, value in fields.items():
            event.setdefault(key, value)
    return event


def configure_logging(fmt: LogFormat | None = None, level: str = "info") -> None:
    """Route stdlib and structlog through one renderer so aiohttp/asyncpg lines look like ours."""
    if fmt is None:
        fmt = LogFormat.CONSOLE if sys.stderr.isatty() else LogFormat.JSON
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_request_fields,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: structlog.types.Processor
    if fmt is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    level_no = logging.getLevelName(level.upper())
    if not isinstance(level_no, int):
        level_no = logging.INFO
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_no)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
