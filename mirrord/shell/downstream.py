"""The downstream services: the push trigger, announcements, CDN purge and the S3 bucket.

Each runs under the supervisor in the daemon's task group, and a reload
restarts the ones :func:`restarts` names: a section that changed, appeared
or went away, or whose secret file (an MQTT password, the Fastly token, the
S3 credentials) reads differently than when its service started, so a
rotated token takes a reload, not a restart of the daemon. A stopped
service is cancelled; the announcer and the purger give what they took from
the publish feed and had not finished back to their subscription, which
outlives them, so their successor sends or purges it (again, at worst). The
bucket mirror catches every arch up from the state database when it starts.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mirrord.core.config import BrokerConfig, Config, PurgeConfig, S3Config
from mirrord.core.crashpoints import CrashPoints
from mirrord.shell.cdn_purge import CdnPurger
from mirrord.shell.supervisor import Supervisor
from mirrord.sync.feed import Subscription
from mirrord.sync.runtime import Runtime
from mirrord.sync.scheduler import Scheduler

if TYPE_CHECKING:  # S3 and MQTT are imported only when configured: ~11 MiB of RSS otherwise
    from mirrord.shell.mqtt_announce import MqttAnnouncer
    from mirrord.shell.mqtt_push import MqttPushListener
    from mirrord.sync.bucketmirror import BucketMirror

SERVICES = ("push", "announce", "purge", "bucket")  # also their supervisor task names
SECTION_KEYS = ("push.", "purge.", "s3")  # the settings a reload applies by a restart

Fingerprint = tuple[tuple[str, str], ...]  # (path, sha256 of its bytes, or why unreadable)


def section(config: Config, name: str) -> object | None:
    """The settings of one service; None when it is not configured."""
    if name == "push":
        return config.push.mqtt
    if name == "announce":
        return config.push.announce
    if name == "purge":
        return config.purge if config.purge.enabled else None
    return config.s3


def secret_files(settings: object | None) -> tuple[Path, ...]:
    if isinstance(settings, BrokerConfig) and settings.password_file is not None:
        return (settings.password_file,)
    if isinstance(settings, PurgeConfig) and settings.fastly is not None:
        return (settings.fastly.token_file,)
    if isinstance(settings, S3Config) and settings.credentials_file is not None:
        return (settings.credentials_file,)
    return ()


def fingerprint(paths: tuple[Path, ...]) -> Fingerprint:
    """What the secret files hold now, as digests (the secrets themselves are kept nowhere)."""
    found: list[tuple[str, str]] = []
    for path in paths:
        try:
            found.append((str(path), hashlib.sha256(path.read_bytes()).hexdigest()))
        except OSError as error:
            found.append((str(path), f"unreadable: {error.strerror or error}"))
    return tuple(found)


def restarts(
    old: Config,
    new: Config,
    secrets_then: Mapping[str, Fingerprint],
    secrets_now: Mapping[str, Fingerprint],
) -> list[str]:
    """The services a reload from ``old`` to ``new`` stops and starts again (pure)."""
    return [
        name
        for name in SERVICES
        if section(old, name) != section(new, name)
        or (section(new, name) is not None and secrets_then.get(name) != secrets_now.get(name))
    ]


def applied_by_restart(key: str) -> bool:
    """A changed setting (as ``changed_keys`` names it) that restarting a service applies."""
    return key.startswith(SECTION_KEYS)


class Downstream:
    """Owns the downstream services, their feed subscriptions and their tasks."""

    def __init__(
        self,
        runtime: Runtime,
        scheduler: Scheduler,
        supervisor: Supervisor,
        *,
        environ: Mapping[str, str],
        crash: CrashPoints,
    ) -> None:
        self._runtime = runtime
        self._scheduler = scheduler
        self._supervisor = supervisor
        self._environ = environ
        self._crash = crash
        self.push: MqttPushListener | None = None
        self.announcer: MqttAnnouncer | None = None
        self.purger: CdnPurger | None = None
        self.bucket_mirror: BucketMirror | None = None  # with s3 configured, once it is open
        self.bucket_opened = asyncio.Event()
        self.started: dict[str, int] = {}  # how many times each service was (re)started
        self._subscriptions: dict[str, Subscription] = {}
        self._secrets: dict[str, Fingerprint] = {}
        self._services: dict[str, Callable[[], Awaitable[None]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()
        self._closed = False  # the daemon is stopping: a late reload starts nothing

    async def check(self, config: Config) -> None:
        """Refuse (ConfigError) what would fail when its service starts: S3 credentials."""
        if config.s3 is not None:
            from mirrord.publish.bucket import load_credentials

            await asyncio.to_thread(load_credentials, config.s3, self._environ)

    async def prepare(self, config: Config) -> None:
        """Build every configured service (subscribed before the first publish), not started."""
        for name in SERVICES:
            await self._build(name, config)

    def start(self, group: asyncio.TaskGroup) -> None:
        for name in self._services:
            self._start(name, group)

    def cancel(self) -> None:
        self._closed = True
        for task in self._tasks.values():
            task.cancel()

    async def reload(self, old: Config, new: Config, group: asyncio.TaskGroup) -> list[str]:
        """Stop the services whose settings changed and start them with ``new``: their names."""
        async with self._lock:
            now = {
                name: await asyncio.to_thread(fingerprint, secret_files(section(new, name)))
                for name in SERVICES
            }
            names = restarts(old, new, self._secrets, now)
            for name in names:
                await self._stop(name)
                await self._build(name, new)
                if name in self._services and not self._closed:
                    self._start(name, group)
            return names

    async def _build(self, name: str, config: Config) -> None:
        settings = section(config, name)
        self._secrets[name] = await asyncio.to_thread(fingerprint, secret_files(settings))
        if settings is None:
            self._services.pop(name, None)
            subscription = self._subscriptions.pop(name, None)
            if subscription is not None:
                self._runtime.feed.unsubscribe(subscription)
            return
        runtime = self._runtime
        metrics, clock, log = runtime.metrics, runtime.clock, runtime.log
        if name == "push":
            assert config.push.mqtt is not None
            from mirrord.shell.mqtt_push import MqttPushListener

            self.push = MqttPushListener(
                config.push.mqtt,
                self._scheduler,
                metrics=metrics,
                clock=clock,
                log=log,
                releases=runtime.releases if config.releases is not None else None,
            )
            self._services[name] = self.push.run
        elif name == "announce":
            assert config.push.announce is not None
            from mirrord.shell.mqtt_announce import MqttAnnouncer

            self.announcer = MqttAnnouncer(
                config.push.announce,
                self._subscription(name),
                metrics=metrics,
                clock=clock,
                log=log,
            )
            self._services[name] = self.announcer.run
        elif name == "purge":
            self.purger = CdnPurger(
                config.purge,
                config.publish.path,
                self._subscription(name),
                metrics=metrics,
                clock=clock,
                log=log,
            )
            self._services[name] = self.purger.run
        else:
            assert config.s3 is not None
            s3 = config.s3
            self._services[name] = lambda: self._mirror_to_bucket(s3)

    def _subscription(self, name: str) -> Subscription:
        if name not in self._subscriptions:
            self._subscriptions[name] = self._runtime.feed.subscribe(name)
        return self._subscriptions[name]

    def _start(self, name: str, group: asyncio.TaskGroup) -> None:
        service = self._services[name]
        self.started[name] = self.started.get(name, 0) + 1
        self._tasks[name] = group.create_task(
            self._supervisor.keep_running(name, service), name=name
        )
        self._runtime.log.info("downstream.service.started", service=name, times=self.started[name])

    async def _stop(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])
        self._runtime.log.info("downstream.service.stopped", service=name)
        if name == "push":
            self.push = None
        elif name == "announce":
            self.announcer = None
        elif name == "purge":
            self.purger = None
        else:
            self.bucket_mirror = None
            self.bucket_opened.clear()

    async def _mirror_to_bucket(self, s3: S3Config) -> None:
        from mirrord.sync.bucketmirror import open_bucket_mirror

        runtime = self._runtime
        async with open_bucket_mirror(runtime, s3, self._environ, self._crash) as mirror:
            self.bucket_mirror = mirror
            self.bucket_opened.set()
            await mirror.run(self._subscription("bucket"), lambda: runtime.config.arch_keys())
