"""structlog set-up: JSON lines for journald, colours on a terminal.

No global configuration: the CLI builds one logger and hands it down.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import threading
from typing import TextIO

import structlog
from structlog.typing import FilteringBoundLogger, Processor

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class LogOutput:
    """The end of the log pipeline: one line per event, to a stream that may go away.

    A daemon must not stop because its log reader did (a log process that died,
    ``mirrord run | tee`` ended, a lost journald stream): a line that cannot be
    written is dropped and counted (``dropped``), never raised into the code that
    logged it. The first failure is said once on ``complaints`` (stderr, when the
    logs go elsewhere). A broken pipe stays broken, so its stream then writes to
    /dev/null: nothing tries the pipe again, the flush at exit included. Other
    errors (a full disk under a log file) may pass, and each line is tried.
    """

    def __init__(self, stream: TextIO, complaints: TextIO | None = None) -> None:
        self.stream = stream
        self._complaints = complaints
        self._lock = threading.Lock()  # lines come from the loop and from worker threads
        self._broken = False
        self._said = False
        self.dropped = 0

    def msg(self, message: str) -> None:
        with self._lock:
            if self._broken:
                self.dropped += 1
                return
            try:
                self.stream.write(message + "\n")
                self.stream.flush()
            except (OSError, ValueError) as error:  # ValueError: the stream was closed
                self._drop(error)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def _drop(self, error: OSError | ValueError) -> None:
        self.dropped += 1
        if isinstance(error, OSError) and error.errno == errno.EPIPE:
            self._broken = True
            _write_to_devnull(self.stream)
        if self._said or self._complaints is None:
            return
        self._said = True
        with contextlib.suppress(OSError, ValueError):
            print(
                f"mirrord: cannot write the log ({error}): the lines that cannot be written "
                "are dropped, counted in mirrord_log_lines_dropped_total",
                file=self._complaints,
                flush=True,
            )


def _write_to_devnull(stream: TextIO) -> None:
    with contextlib.suppress(OSError, ValueError):
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


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
