"""Structured logging: readable lines in development, JSON in production.

Every line carries the request id (or job id) bound for the current task, so
one request's lines can be found across the panel's log.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Literal

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


_SECRET_QUERY = re.compile(r"((?:token|secret|key|password)=)[^&\s\"']+", re.IGNORECASE)


class RedactQuerySecrets(logging.Filter):
    """Keep credentials in URLs (``/ws?token=...``) out of the log.

    uvicorn logs every WebSocket connection with its full path; agents and
    browsers authenticate WebSockets with a token in the query string.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str):
            return True  # structlog's own events: never built from URLs
        message = record.getMessage()
        redacted = _SECRET_QUERY.sub(r"\1***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure_logging(*, level: str = "info", fmt: Literal["console", "json"] = "json") -> None:
    """Route structlog and the standard library through one renderer on stderr."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if fmt == "json":
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )

    structlog.configure(
        # Level first: a line below the configured level costs a level check,
        # not the timestamp and context merge of the processors after it.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactQuerySecrets())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # uvicorn's access log duplicates the request line our middleware writes.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("sqlalchemy.engine", "aiosqlite", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
