"""What the fetch code logs through, without importing a logging library.

The daemon passes its structlog ``FilteringBoundLogger``, which has these
methods; a fetch worker passes ``mirrord.fetch.worker.WireLog``, which hands
each event to the daemon to log (structlog was ~1.7 MiB of every worker).
"""

from __future__ import annotations

from typing import Any, Protocol


class EventLog(Protocol):
    def debug(self, event: str, **fields: Any) -> Any: ...

    def warning(self, event: str, **fields: Any) -> Any: ...

    def exception(self, event: str, **fields: Any) -> Any: ...
