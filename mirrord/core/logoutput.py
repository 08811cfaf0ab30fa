"""Where log lines go: a stream whose reader may go away, or stop reading.

A daemon must not stop because its log reader did (a supervisor's log
process that died, ``mirrord run | tee`` ended, a lost journald stream), nor
freeze because it stopped reading (a stalled journald, a paused pager). A
line that cannot be written is dropped and counted (``dropped``), never
raised into the code that logged it; the first failure of each kind is said
once on ``complaints`` (stderr, when the logs go elsewhere).

- A broken pipe stays broken: its lines are not tried again, and its file
  descriptor is pointed at /dev/null, so the flush at exit is quiet. After
  another error (a full disk under a log file) each line is tried.
- ``write_behind`` (the daemon): lines wait in a bounded buffer for a writer
  thread, so a reader that stops reading holds up nothing but that thread;
  what does not fit is dropped. ``close`` gives what is pending a last
  chance. The thread writes the descriptor itself, never the stream's
  buffer, whose lock a stuck thread would hold at interpreter exit.
- Without it (a command run by hand or by cron) a line is written before
  the logging call returns: the command waits for its reader like any program.
- ``journal``: the stream is journald's (``journal_stream``), so each line
  starts with its syslog priority (``<3>`` for an error), which journald takes
  off and files as PRIORITY: ``journalctl -u mirrord -p warning`` works.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
from collections.abc import Mapping
from typing import TextIO

from mirrord.core.streams import to_devnull

WRITE_BEHIND_BYTES = 1 << 20  # lines held for a reader that is not reading
DRAIN_SECONDS = 5.0  # what ``close`` gives the pending lines by default


class LogOutput:
    def __init__(
        self,
        stream: TextIO,
        complaints: TextIO | None = None,
        *,
        write_behind: bool = False,
        buffer_bytes: int = WRITE_BEHIND_BYTES,
        journal: bool = False,
    ) -> None:
        self.stream = stream
        self._journal = journal
        self._complaints = complaints
        self._lock = threading.Lock()  # lines come from the loop and from worker threads
        self._wake = threading.Condition(self._lock)
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._buffer_bytes = buffer_bytes
        self._closed = False
        self._broken = False
        self._said: set[str] = set()
        self.dropped = 0
        self.trouble: str | None = None  # why the first line was dropped
        self._fd = _fileno(stream) if write_behind else None
        self._writer: threading.Thread | None = None
        if self._fd is not None:
            self._writer = threading.Thread(
                target=self._write_behind, name="log-writer", daemon=True
            )
            self._writer.start()

    @classmethod
    def to_stdout(cls, environ: Mapping[str, str], *, write_behind: bool = False) -> LogOutput:
        """A command's log: stdout, its troubles said on stderr, priorities for journald."""
        return cls(
            sys.stdout,
            complaints=sys.stderr,
            write_behind=write_behind,
            journal=journal_stream(sys.stdout, environ),
        )

    # structlog calls the method named after each line's level.
    def debug(self, message: str) -> None:
        self._line(7, message)

    def info(self, message: str) -> None:
        self._line(6, message)

    def warning(self, message: str) -> None:
        self._line(4, message)

    def error(self, message: str) -> None:
        self._line(3, message)

    def critical(self, message: str) -> None:
        self._line(2, message)

    msg = log = info
    warn = warning
    err = exception = failure = error
    fatal = critical

    def _line(self, priority: int, message: str) -> None:
        if self._journal:
            message = f"<{priority}>{message}"
        with self._lock:
            if self._broken:
                self.dropped += 1
            elif self._writer is None or self._closed:
                try:
                    self.stream.write(message + "\n")
                    self.stream.flush()
                except (OSError, ValueError) as error:  # ValueError: the stream was closed
                    self._failed(error, 1)
            elif self._pending_bytes + len(message) + 1 > self._buffer_bytes:
                self.dropped += 1
                self._say(
                    "full",
                    f"the log reader has not taken the last {self._pending_bytes} bytes of "
                    "log lines",
                )
            else:
                self._pending.append(message)
                self._pending_bytes += len(message) + 1
                self._wake.notify()

    def state(self) -> dict[str, object]:
        """What ``ctl status`` shows: lines dropped, and why the first was."""
        return {"dropped": self.dropped, "trouble": self.trouble}

    def close(self, timeout: float = DRAIN_SECONDS) -> None:
        """Stop writing behind: the pending lines get ``timeout`` seconds, the rest is dropped.

        Lines logged afterwards are written before the logging call returns.
        """
        if self._writer is None:
            return
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._writer.join(timeout)
        with self._lock:
            self.dropped += len(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            if self._writer.is_alive():  # stuck in a write: it must not write again
                self._broken = True

    def _write_behind(self) -> None:
        assert self._fd is not None
        encoding = getattr(self.stream, "encoding", None) or "utf-8"
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending or self._broken:
                    return
                lines, self._pending, self._pending_bytes = self._pending, [], 0
            data = ("\n".join(lines) + "\n").encode(encoding, "backslashreplace")
            try:
                _write_all(self._fd, data)
            except OSError as error:
                with self._lock:
                    self._failed(error, len(lines))

    def _failed(self, error: OSError | ValueError, lines: int) -> None:
        self.dropped += lines
        if isinstance(error, OSError) and error.errno == errno.EPIPE:
            self._broken = True
            to_devnull(self.stream)
        self._say(type(error).__name__, f"cannot write the log ({error})")

    def _say(self, kind: str, what: str) -> None:
        self.trouble = self.trouble or what
        if kind in self._said or self._complaints is None:
            return
        self._said.add(kind)
        with contextlib.suppress(OSError, ValueError):
            print(
                f"mirrord: {what}: the lines that cannot be written are dropped, counted in "
                "mirrord_log_lines_dropped_total",
                file=self._complaints,
                flush=True,
            )


def journal_stream(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journald connection systemd names in $JOURNAL_STREAM.

    systemd.exec(5): "device:inode" of the service's stdout or stderr when it
    goes to the journal. A stream redirected elsewhere has other numbers.
    """
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    fd = _fileno(stream)
    if fd is None or not (device.isdigit() and inode.isdigit()):
        return False
    try:
        found = os.fstat(fd)
    except OSError:
        return False
    return (found.st_dev, found.st_ino) == (int(device), int(inode))


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
