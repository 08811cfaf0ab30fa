"""Progress of a one-shot ``mirrord sync``: live lines on a terminal, log lines elsewhere.

A first sync of a big branch takes hours: on a terminal each arch that is
downloading has a line that is rewritten in place (files and bytes done of
planned, rate, ETA); without one, ``sync.progress`` is logged periodically;
under systemd, ``STATUS=`` says the same in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from structlog.typing import FilteringBoundLogger

from mirrord.core.clock import Clock
from mirrord.core.model import ArchKey
from mirrord.core.units import format_bytes
from mirrord.shell.control.render import duration, progress_line
from mirrord.shell.sdnotify import Notifier
from mirrord.shell.status_report import progress_report
from mirrord.sync.status import ArchResult, FetchProgress, Outcome, StatusBook


@dataclass(frozen=True)
class ArchProgress:
    key: ArchKey
    progress: FetchProgress

    def fields(self, now: float) -> dict[str, object]:
        p = self.progress
        rate = p.rate(now)
        eta = p.eta(now)
        return {
            "arch": str(self.key),
            "files": p.done_files,
            "planned_files": p.planned_files,
            "bytes": p.done_bytes,
            "planned_bytes": p.planned_bytes,
            "failed": p.failed_files,
            "rate": None if rate is None else round(rate),
            "eta": None if eta is None else round(eta, 1),
        }

    def line(self, now: float) -> str:
        return progress_line(progress_report(self.key, self.progress, now))


def downloading(book: StatusBook, keys: Sequence[ArchKey]) -> list[ArchProgress]:
    """The arches whose downloads are under way, in configuration order."""
    found = []
    for key in keys:
        progress = book[key].progress
        if progress is not None and progress.planned_files:
            found.append(ArchProgress(key, progress))
    return found


def summary(results: Sequence[ArchResult], seconds: float) -> str:
    """One line for people once the sync is over."""
    counts = {outcome: sum(1 for r in results if r.outcome is outcome) for outcome in Outcome}
    parts = [f"{counts[o]} {o}" for o in Outcome if counts[o]]
    fetched = sum(r.fetched for r in results)
    fetched_bytes = sum(r.fetched_bytes for r in results)
    return (
        f"mirrord: {len(results)} arches in {duration(seconds)}: {', '.join(parts) or 'none'}; "
        f"fetched {fetched:,} files, {format_bytes(fetched_bytes)}"
    )


class ProgressReporter:
    def __init__(
        self,
        book: StatusBook,
        keys: Sequence[ArchKey],
        *,
        clock: Clock,
        log: FilteringBoundLogger,
        notifier: Notifier,
        terminal: TextIO | None,
        every: float,
    ) -> None:
        self._book = book
        self._keys = keys
        self._clock = clock
        self._log = log
        self._notifier = notifier
        self._terminal = terminal
        self._every = every
        self._shown = 0  # lines on the terminal to rewrite

    async def run(self) -> None:
        while True:
            await self._clock.sleep(self._every)
            self.report()

    def report(self) -> None:
        now = self._clock.monotonic()
        arches = downloading(self._book, self._keys)
        if self._terminal is not None:
            self._draw([a.line(now) for a in arches])
        elif arches:
            self._log.info("sync.progress", arches=[a.fields(now) for a in arches])
        if arches:
            self._notifier.status("; ".join(a.line(now) for a in arches)[:200])

    def finish(self) -> None:
        """Take the live lines off the terminal (the summary replaces them)."""
        if self._terminal is not None:
            self._draw([])

    def _draw(self, lines: list[str]) -> None:
        assert self._terminal is not None
        out = self._terminal
        if self._shown:
            out.write(f"\x1b[{self._shown}F")  # back to the first line drawn last time
        for line in lines:
            out.write(f"{line}\x1b[K\n")
        out.write("\x1b[J")  # and clear what is left of the previous drawing
        out.flush()
        self._shown = len(lines)
