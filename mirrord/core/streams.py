"""The process's standard streams when their reader went away (``| head``, a dead logger)."""

from __future__ import annotations

import contextlib
import os
import select
from typing import TextIO


def to_devnull(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at /dev/null: writes to it (Python's flush at exit among
    them) then go nowhere instead of failing again."""
    with contextlib.suppress(OSError, ValueError):
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


def reader_gone(stream: TextIO) -> bool:
    """Whether ``stream`` is a pipe whose every reader has closed it (it polls POLLERR)."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), 0)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False
