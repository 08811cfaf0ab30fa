"""CDN purge on publish: a daemon service following the publish feed.

For each ``Published`` event: ``PURGE`` every changed URL under each of
``purge.urls`` (optionally ``Fastly-Soft-Purge: 1``), one Fastly purge by
surrogate key through its API, and the hook (an HTTP POST or a command).
Transient failures (network, 5xx, 429, a command that fails) are tried again
with exponential backoff; a failure is logged and counted and never reaches
the publish, which went live before the event was announced. The Fastly
token is read from its file when the service starts and sent only in the
``Fastly-Key`` header: it is never logged or shown. Stopped (a reload that
changed ``purge``), it gives the event it was purging back to its
subscription: the instance that replaces it purges that event again.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from structlog.typing import FilteringBoundLogger
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from mirrord.core.clock import Clock
from mirrord.core.config import PurgeConfig
from mirrord.core.errors import PurgeError
from mirrord.core.metrics import Metrics
from mirrord.sync.feed import Published, Subscription
from mirrord.sync.purgeplan import PurgeTargets, purge_targets, purge_urls

BACKOFF_MAX = 60.0
ERROR_TEXT = 200  # characters of a response body kept in an error


@dataclass
class PurgeStats:
    events: int = 0
    purged: int = 0
    failed: int = 0
    last_purge: float | None = None
    last_failure: str | None = None
    last_failure_at: float | None = None


def top_level_aliases(root: Path) -> dict[str, str]:
    """Symlinks at the top of the published tree that name a directory beside them."""
    aliases: dict[str, str] = {}
    try:
        entries = list(os.scandir(root))
    except OSError:  # not there yet, or unreadable: purge the paths themselves
        return aliases
    for entry in entries:
        if entry.is_symlink():
            target = os.readlink(entry.path).strip("/")
            if target and "/" not in target and (root / target).is_dir():
                aliases[entry.name] = target
    return aliases


def _directory(path: str) -> str:
    """The directory a path is in, or names (a listing ends in "/")."""
    return path.rstrip("/") if path.endswith("/") else path.rpartition("/")[0]


def read_token(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise PurgeError("fastly", str(path), "the token file is empty", transient=False)
    return token


def _transient(error: BaseException) -> bool:
    return isinstance(error, PurgeError) and error.transient


def _status_error(target: str, where: str, status: int, body: str) -> PurgeError:
    return PurgeError(
        target,
        where,
        f"HTTP {status}: {body[:ERROR_TEXT].strip()}",
        transient=status >= 500 or status == 429,
    )


class CdnPurger:
    def __init__(
        self,
        config: PurgeConfig,
        publish_root: Path,
        feed: Subscription,
        *,
        metrics: Metrics,
        clock: Clock,
        log: FilteringBoundLogger,
    ) -> None:
        self.config = config
        self.publish_root = publish_root
        self.feed = feed
        self.metrics = metrics
        self.clock = clock
        self.log = log
        self.stats = PurgeStats()
        self._token: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self.handled = asyncio.Condition()  # notified after each event's purges end

    def status(self) -> dict[str, Any]:
        """The ``purge`` object of ``ctl status`` (no token, no URLs with credentials)."""
        targets = [f"PURGE {url}" for url in self.config.urls]
        if self.config.fastly is not None:
            targets.append(f"fastly service {self.config.fastly.service_id}")
        if self.config.hook is not None:
            targets.append("hook")
        return {
            "targets": targets,
            "soft": self.config.soft,
            "events": self.stats.events,
            "purged": self.stats.purged,
            "failed": self.stats.failed,
            "waiting": self.feed.size(),
            "dropped": self.feed.dropped,
            "last_purge": self.stats.last_purge,
            "last_failure": self.stats.last_failure,
            "last_failure_at": self.stats.last_failure_at,
        }

    async def run(self) -> None:
        fastly = self.config.fastly
        if fastly is not None:
            try:
                self._token = await asyncio.to_thread(read_token, fastly.token_file)
            except (OSError, PurgeError) as error:  # the other targets still purge
                self.log.error(  # noqa: TRY400 - a configuration problem, not a crash
                    "purge.fastly.token_unreadable",
                    path=str(fastly.token_file),
                    error=getattr(error, "strerror", None) or str(error),
                )
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        connector = aiohttp.TCPConnector(limit=16, limit_per_host=8)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            async for event in self.feed:
                try:
                    await self.purge(event)
                except asyncio.CancelledError:
                    self.feed.give_back([event])
                    raise
                async with self.handled:
                    self.handled.notify_all()

    async def wait_for_events(self, count: int) -> None:
        """Until ``count`` publishes have had every purge done or given up."""
        async with self.handled:
            await self.handled.wait_for(lambda: self.stats.events >= count)

    async def purge(self, event: Published) -> None:
        """Every target of one event, side by side; returns when each succeeded or gave up."""
        targets = purge_targets(
            event, await asyncio.to_thread(top_level_aliases, self.publish_root)
        )
        async with asyncio.TaskGroup() as group:
            for target, where, call in self._jobs(event, targets):
                group.create_task(self._with_retries(target, where, call, event.directory))
        self.stats.events += 1

    async def purge_paths(self, paths: tuple[str, ...]) -> list[dict[str, str | None]]:
        """``ctl purge``: these paths (relative to publish.path) through every target, now.

        Retried, counted and logged as the purges after a publish are; the
        surrogate keys are the paths' directories. What each target did, in order.
        """
        if self._session is None:
            raise PurgeError("purge", "-", "the purge service is not running", transient=True)
        keys = tuple(dict.fromkeys(k for k in map(_directory, paths) if k))
        event = Published(keys[0] if keys else "", paths, self.clock.time())
        jobs = self._jobs(event, PurgeTargets(paths, keys))
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._with_retries(target, where, call, "(by hand)"))
                for target, where, call in jobs
            ]
        return [
            {"target": target, "where": where, "error": task.result()}
            for (target, where, _), task in zip(jobs, tasks, strict=True)
        ]

    def _jobs(
        self, event: Published, targets: PurgeTargets
    ) -> list[tuple[str, str, Callable[[], Awaitable[None]]]]:
        """(target, where, the call) for each purge one event (or ``ctl purge``) makes."""
        jobs: list[tuple[str, str, Callable[[], Awaitable[None]]]] = [
            ("http", url, functools.partial(self._http_purge, url))
            for url in purge_urls(self.config.urls, targets.paths)
        ]
        fastly = self.config.fastly
        if fastly is not None:
            api = f"{fastly.api_url}/service/{fastly.service_id}/purge"
            jobs.append(("fastly", api, functools.partial(self._fastly_purge, api, targets.keys)))
        hook = self.config.hook
        if hook is not None:
            where = hook.url or " ".join(hook.command or ())
            jobs.append(("hook", where, functools.partial(self._hook, event, targets)))
        return jobs

    async def _with_retries(
        self, target: str, where: str, call: Callable[[], Awaitable[None]], directory: str
    ) -> str | None:
        """None when purged, else why it failed (logged and counted)."""

        def before_sleep(state: RetryCallState) -> None:
            self.metrics.purge_retries.labels(target=target).inc()
            error = state.outcome.exception() if state.outcome else None
            self.log.warning(
                "purge.retry",
                target=target,
                url=where,
                attempt=state.attempt_number,
                error=str(error),
            )

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.attempts),
            wait=wait_exponential_jitter(initial=1, max=BACKOFF_MAX),
            retry=retry_if_exception(_transient),
            sleep=self.clock.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await call()
        except PurgeError as error:
            self._failed(target, str(error))
            self.log.error(  # noqa: TRY400 - counted and shown in status; no traceback
                "purge.failed", target=target, url=where, directory=directory, error=error.reason
            )
            return error.reason
        except Exception as error:  # a bug must not end the purges of every later publish
            self._failed(target, f"{target} purge of {where}: {error!r}")
            self.log.exception("purge.failed", target=target, url=where, directory=directory)
            return f"internal error: {error!r}"
        self.stats.purged += 1
        self.stats.last_purge = self.clock.time()
        self.metrics.purges.labels(target=target, outcome="purged").inc()
        self.log.info("purge.done", target=target, url=where, directory=directory)
        return None

    def _failed(self, target: str, text: str) -> None:
        self.stats.failed += 1
        self.stats.last_failure = text
        self.stats.last_failure_at = self.clock.time()
        self.metrics.purges.labels(target=target, outcome="failed").inc()
        self.metrics.purge_last_failure.labels(target=target).set(self.stats.last_failure_at)

    def _soft(self) -> dict[str, str]:
        return {"Fastly-Soft-Purge": "1"} if self.config.soft else {}

    async def _request(
        self, target: str, method: str, url: str, headers: dict[str, str], **kwargs: Any
    ) -> None:
        assert self._session is not None
        try:
            async with self._session.request(method, url, headers=headers, **kwargs) as response:
                body = await response.text(errors="replace")
                if response.status >= 300:
                    raise _status_error(target, url, response.status, body)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise PurgeError(
                target, url, str(error) or type(error).__name__, transient=True
            ) from None

    async def _http_purge(self, url: str) -> None:
        await self._request("http", "PURGE", url, self._soft())

    async def _fastly_purge(self, where: str, keys: tuple[str, ...]) -> None:
        if self._token is None:
            raise PurgeError(
                "fastly", where, "no API token (see purge.fastly.token_unreadable)", transient=False
            )
        headers = {"Fastly-Key": self._token, "Surrogate-Key": " ".join(keys), **self._soft()}
        headers["Accept"] = "application/json"
        await self._request("fastly", "POST", where, headers)

    async def _hook(self, event: Published, targets: PurgeTargets) -> None:
        hook = self.config.hook
        assert hook is not None
        if hook.url is not None:
            body = {
                "directory": event.directory,
                "paths": list(targets.paths),
                "keys": list(targets.keys),
                "urls": purge_urls(self.config.urls, targets.paths),
                "published_at": event.at,
            }
            await self._request("hook", "POST", hook.url, {}, json=body)
            return
        assert hook.command is not None
        await self._run_command(hook.command, targets.paths)

    async def _run_command(self, command: tuple[str, ...], paths: tuple[str, ...]) -> None:
        where = command[0]
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                *paths,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            raise PurgeError("hook", where, error.strerror or str(error), transient=False) from None
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), self.config.timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise PurgeError("hook", where, "timed out", transient=True) from None
        if process.returncode != 0:
            text = stderr.decode(errors="replace")[:ERROR_TEXT].strip()
            raise PurgeError("hook", where, f"exit {process.returncode}: {text}", transient=True)
