"""The Prometheus endpoint and the status page, served from the daemon's own event loop.

Values that only mean something at scrape time (mirror lag, snapshot age,
measured rate, store size) come from a custom collector that reads the
status book and the scheduler; ``/metrics`` touches neither the disk nor the
database. The status page (``/`` and ``/status``) and its JSON twin
(``/status.json``) show the status report, as ``mirrord ctl status`` does.
``/health`` (GET or HEAD) answers a load balancer: 200 while this node serves a
complete, current tree, 503 with the reasons otherwise (``mirrord.sync.health``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from structlog.typing import FilteringBoundLogger

from mirrord import __version__
from mirrord.core.clock import Clock
from mirrord.core.errors import ConfigError
from mirrord.core.metrics import ARCH_LABELS
from mirrord.core.model import ArchKey
from mirrord.shell.status_page import render_status_page
from mirrord.shell.status_report import StatusReport
from mirrord.sync.health import Health
from mirrord.sync.releases import TreeStatus
from mirrord.sync.scheduler import Scheduler
from mirrord.sync.status import StatusBook

if TYPE_CHECKING:  # aiobotocore only when s3 is configured
    from mirrord.sync.bucketmirror import BucketMirror

# The classic text format, which every Prometheus server understands (names are plain ASCII).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DaemonCollector(Collector):
    """Reads the status book and the scheduler at scrape time: lag is never stale."""

    def __init__(
        self,
        book: StatusBook,
        scheduler: Scheduler,
        arches: Callable[[], list[ArchKey]],
        measured_rate: Callable[[], float],
        clock: Clock,
        trees: Callable[[], Iterable[TreeStatus]] = tuple,
        bucket: Callable[[], BucketMirror | None] = lambda: None,
        dropped_log_lines: Callable[[], int] = lambda: 0,
    ) -> None:
        self._dropped_log_lines = dropped_log_lines
        self._trees = trees
        self._bucket = bucket
        self._book = book
        self._scheduler = scheduler
        self._arches = arches
        self._measured_rate = measured_rate
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily | CounterMetricFamily]:
        now = self._clock.time()
        book = self._book
        info = InfoMetricFamily("mirrord_build", "mirrord's version.")
        info.add_metric([], {"version": __version__})
        yield info
        lag = GaugeMetricFamily(
            "mirrord_mirror_lag_seconds",
            "How long the origin has had an index this mirror has not published (0 = current).",
            labels=ARCH_LABELS,
        )
        held = GaugeMetricFamily(
            "mirrord_arch_held",
            "1 while an operator holds this arch (after a rollback), else 0.",
            labels=ARCH_LABELS,
        )
        syncing = GaugeMetricFamily(
            "mirrord_arch_syncing",
            "1 while this arch is being synced (polled, downloaded or published), else 0.",
            labels=ARCH_LABELS,
        )
        age = GaugeMetricFamily(
            "mirrord_snapshot_age_seconds",
            "Time since the current snapshot of this arch was published.",
            labels=ARCH_LABELS,
        )
        busy = set(self._scheduler.syncing)
        for key in sorted(self._arches()):
            status = book[key]
            labels = list(key.parts)
            lag.add_metric(labels, status.lag(now))
            held.add_metric(labels, 1.0 if key in self._scheduler.held else 0.0)
            syncing.add_metric(labels, 1.0 if key in busy else 0.0)
            if status.published_at is not None:
                age.add_metric(labels, max(0.0, now - status.published_at))
        yield lag
        tree_lag = GaugeMetricFamily(
            "mirrord_tree_lag_seconds",
            "How long a releases directory has been behind the origin (0 = current).",
            labels=["branch", "arch"],
        )
        for tree in self._trees():
            parts = tree.directory.split("/")
            if len(parts) == 3 and parts[1] == "releases":
                tree_lag.add_metric([parts[0], parts[2]], tree.lag(now))
        yield tree_lag
        bucket_lag = GaugeMetricFamily(
            "mirrord_bucket_lag_seconds",
            "How long the S3 bucket has been behind a publish of this arch (0 = in step).",
            labels=ARCH_LABELS,
        )
        mirror = self._bucket()
        if mirror is not None:
            for key in sorted(self._arches()):
                bucket_lag.add_metric(list(key.parts), mirror.lag(str(key), now))
        yield bucket_lag
        yield held
        yield syncing
        yield age
        yield GaugeMetricFamily(
            "mirrord_store_objects", "Objects in the content store.", value=book.store_objects
        )
        yield GaugeMetricFamily(
            "mirrord_store_bytes", "Bytes in the content store.", value=book.store_bytes
        )
        yield GaugeMetricFamily(
            "mirrord_download_rate_bytes_per_second",
            "Download rate over the last 5 seconds.",
            value=self._measured_rate(),
        )
        yield GaugeMetricFamily(
            "mirrord_paused",
            "1 while an operator has paused syncing.",
            value=float(self._scheduler.paused),
        )
        yield CounterMetricFamily(
            "mirrord_log_lines_dropped",
            "Log lines that could not be written (the log reader went away, a full disk).",
            value=self._dropped_log_lines(),
        )


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


class MetricsServer:
    """``GET /metrics``, the status page and ``/status.json`` on ``host:port``."""

    def __init__(
        self,
        listen: str,
        registry: CollectorRegistry,
        log: FilteringBoundLogger,
        *,
        report: Callable[[], Awaitable[StatusReport]],
        clock: Clock,
        health: Callable[[], Awaitable[Health]] | None = None,
    ) -> None:
        self.listen = listen
        self._health = health
        self._registry = registry
        self._log = log
        self._report = report
        self._clock = clock
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind now, so a port in use is an error at start-up, not later."""
        host, _, port = self.listen.rpartition(":")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        for path in ("/", "/status"):
            app.router.add_get(path, self._status_page)
        app.router.add_get("/status.json", self._status_json)
        app.router.add_get("/health", self._health_check)  # and HEAD
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host.strip("[]"), int(port)).start()
        except OSError as error:
            await runner.cleanup()
            raise ConfigError(
                "metrics.listen", f"cannot listen on {self.listen}: {error.strerror}"
            ) from None
        self._runner = runner
        self._log.info("metrics.listening", address=self.listen)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _assess(self) -> Health | None:
        """The daemon's verdict; a failure to judge is itself unhealthy, never a traceback."""
        if self._health is None:
            return None
        try:
            return await self._health()
        except Exception as error:  # a bug: logged; the balancer sees 503, not a 500 page
            self._log.exception("health.check.failed")
            return Health(False, (f"the health check failed: {error!r}",), "unknown")

    async def _health_check(self, _request: web.Request) -> web.Response:
        health = await self._assess()
        if health is None:
            health = Health(True, (), "off")
        return web.json_response(
            health.body(),
            status=200 if health.healthy else 503,
            headers={"Cache-Control": "no-store"},
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        await self._assess()  # mirrord_healthy as of this scrape
        return web.Response(body=render(self._registry), headers={"Content-Type": CONTENT_TYPE})

    async def _status_page(self, _request: web.Request) -> web.Response:
        page = render_status_page(await self._report(), self._clock.time())
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def _status_json(self, _request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(await self._report()), content_type="application/json")
