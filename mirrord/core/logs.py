"""structlog set-up: JSON lines for journald, colours on a terminal.

No global configuration: the CLI builds one logger and hands it down.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import FilteringBoundLogger, Processor

from mirrord.core.logoutput import LogOutput

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def make_logger(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    *,
    output: LogOutput | None = None,
) -> FilteringBoundLogger:
    """``output``: where the lines go (made here for ``stream``, default stdout, if not given)."""
    output = output or LogOutput(stream or sys.stdout)
    out = output.stream
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    else:
        processors += [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ]
    logger: FilteringBoundLogger = structlog.wrap_logger(
        output,
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        cache_logger_on_first_use=False,
    )
    return logger
