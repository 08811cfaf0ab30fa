"""The YAML configuration: parsed into frozen dataclasses, refused with a key path.

Loading is pure apart from reading the file; checks that need the filesystem
(keys directory, same filesystem for storage and publish) live with the code
that uses those paths.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from mirrord.core.errors import ConfigError
from mirrord.core.model import ArchKey, valid_segment
from mirrord.core.units import parse_duration, parse_rate, parse_size

T = TypeVar("T")

_MISSING: Any = object()


@dataclass(frozen=True)
class OriginConfig:
    url: str
    keys: Path
    allow_untrusted: bool = False


@dataclass(frozen=True)
class RepositorySet:
    branch: str
    repos: tuple[str, ...]
    arches: tuple[str, ...]


@dataclass(frozen=True)
class StorageConfig:
    path: Path
    gc_interval: float = 86400.0  # 0: only `mirrord ctl gc`
    min_free: int = 1 << 30  # bytes a sync must leave free on the storage filesystem


@dataclass(frozen=True)
class PublishConfig:
    path: Path
    grace: float = 3600.0
    max_delete_fraction: float = 0.10
    keep_snapshots: int = 20


@dataclass(frozen=True)
class ScheduleWindow:
    """``start``/``end`` are minutes after local midnight; end may be 1440."""

    start: int
    end: int
    rate_limit: float | None


@dataclass(frozen=True)
class FetchConfig:
    concurrency: int = 16
    per_host: int = 16
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    attempts: int = 5
    retry_max_time: float = 300.0
    missing_grace: float = 600.0  # packages a new index lists may 404 this long (origin races)
    rate_limit: float | None = None
    burst: int = 4 * 1024 * 1024
    schedule: tuple[ScheduleWindow, ...] = ()
    processes: int = 0
    processes_from: int = 128
    worker_cpu: str = "normal"  # "idle": fetch workers under SCHED_IDLE, CPU nothing else wants


@dataclass(frozen=True)
class LimitsConfig:
    max_index_bytes: int = 256 * 1024 * 1024
    max_package_bytes: int = 4 * 1024 * 1024 * 1024


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class MetricsConfig:
    listen: str | None = "127.0.0.1:9469"


DEFAULT_CONTROL_SOCKET = Path("/run/mirrord/control.sock")


@dataclass(frozen=True)
class ControlConfig:
    socket: Path | None = DEFAULT_CONTROL_SOCKET
    group: str | None = None
    idle_timeout: float = 60.0


# Where Alpine's master announces changes: the guide's filter and the one other sources see.
ALPINE_PUSH_TOPICS = ("rsync/rsync.alpinelinux.org/#", "rsync/dl-master.alpinelinux.org/#")


@dataclass(frozen=True)
class BrokerConfig:
    """An MQTT broker to connect to, and how."""

    url: str  # mqtt://host[:port]
    client_id: str | None = None  # None: a random one per connection
    username: str | None = None
    password_file: Path | None = None
    reconnect_max: float = 60.0

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 1883


@dataclass(frozen=True)
class MqttConfig(BrokerConfig):
    """The push trigger: what to subscribe to."""

    topics: tuple[str, ...] = ALPINE_PUSH_TOPICS


ANNOUNCE_PREFIX_ROOT = "rsync"  # the default prefix is rsync/<this host's FQDN>, as Alpine's


@dataclass(frozen=True)
class AnnounceConfig(BrokerConfig):
    """Downstream announcements: one message per publish, in Alpine's shape."""

    topic_prefix: str | None = None  # None: rsync/<this host's FQDN>
    qos: int = 0
    retain: bool = False


@dataclass(frozen=True)
class PushConfig:
    mqtt: MqttConfig | None = None  # None: no push, the interval alone
    announce: AnnounceConfig | None = None  # None: publishes are not announced


FASTLY_API = "https://api.fastly.com"


@dataclass(frozen=True)
class FastlyConfig:
    service_id: str
    token_file: Path  # its first line is the API token; never logged
    api_url: str = FASTLY_API


@dataclass(frozen=True)
class PurgeHookConfig:
    url: str | None = None  # POST a JSON body {"directory", "paths", "urls"}
    command: tuple[str, ...] | None = None  # run with the changed paths as arguments


@dataclass(frozen=True)
class PurgeConfig:
    """What to purge downstream after each publish; nothing configured: no purging."""

    urls: tuple[str, ...] = ()  # PURGE <url>/<path> for every changed path
    soft: bool = False  # Fastly-Soft-Purge: 1 (marks stale instead of evicting)
    fastly: FastlyConfig | None = None
    hook: PurgeHookConfig | None = None
    attempts: int = 5
    timeout: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.urls) or self.fastly is not None or self.hook is not None


@dataclass(frozen=True)
class ReleasesConfig:
    """The rest of a T1's tree: ``<branch>/releases/<arch>/`` and top-level files."""

    branches: tuple[str, ...] = ("all",)  # "all": every edge/vX.Y the origin's top lists
    arches: tuple[str, ...] = ("all",)  # "all": every arch under <branch>/releases/
    files: tuple[str, ...] = ("MIRRORS.txt",)
    latest_stable: bool = True
    max_file_bytes: int = 4 * 1024 * 1024 * 1024
    interval: float = 600.0


@dataclass(frozen=True)
class S3Config:
    """A bucket that mirrors every publish of the tree (see ``mirrord.sync.bucketmirror``)."""

    endpoint: str  # http(s)://host[:port] of the S3 API
    bucket: str
    prefix: str = ""  # keys are <prefix><branch>/<repo>/<arch>/<file>
    region: str = "us-east-1"
    credentials_file: Path | None = None  # None: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
    concurrency: int = 8
    multipart_threshold: int = 64 * 1000 * 1000
    part_size: int = 16 * 1000 * 1000


@dataclass(frozen=True)
class FleetConfig:
    """Fleet mode: no node makes an index live before every live node has staged it."""

    etcd: tuple[str, ...]  # endpoints of the etcd cluster's JSON gateway (http://host:2379)
    node: str  # this node's name in the fleet (default: the host name)
    prefix: str = "/mirrord"
    stage_timeout: float = 120.0  # then go live, leaving out the nodes that have not staged
    lease_ttl: int = 10  # seconds a dead node stays a member


@dataclass(frozen=True)
class Config:
    origin: OriginConfig
    repositories: tuple[RepositorySet, ...]
    storage: StorageConfig
    publish: PublishConfig
    fetch: FetchConfig = field(default_factory=FetchConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    push: PushConfig = field(default_factory=PushConfig)
    purge: PurgeConfig = field(default_factory=PurgeConfig)
    releases: ReleasesConfig | None = None  # None: package repositories only
    s3: S3Config | None = None  # None: the directory tree alone
    fleet: FleetConfig | None = None  # None: this node publishes alone
    interval: float = 60.0
    shutdown_grace: float = 30.0

    def arch_keys(self) -> list[ArchKey]:
        keys: list[ArchKey] = []
        for repo_set in self.repositories:
            for repo in repo_set.repos:
                for arch in repo_set.arches:
                    key = ArchKey(repo_set.branch, repo, arch)
                    if key not in keys:
                        keys.append(key)
        return keys


class _Section:
    """Reads one mapping against the fields of the dataclass it becomes, naming key paths."""

    def __init__(self, data: object, path: str, schema: type) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path or "(top level)", f"expected a mapping, got {_kind(data)}")
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(path or "(top level)", f"keys must be strings, got {key!r}")
        self.data: Mapping[str, object] = data
        self.path = path
        self.known = tuple(f.name for f in fields(schema))

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, convert: Callable[[object, str], T], default: T = _MISSING) -> T:
        if key not in self.data or (self.data[key] is None and default is not _MISSING):
            if default is _MISSING:
                raise self._missing(key, "missing required key")
            return default
        return convert(self.data[key], self.where(key))

    def section(self, key: str, schema: type, *, required: bool = True) -> _Section:
        if key not in self.data:
            if required:
                raise self._missing(key, "missing required section")
            return _Section({}, self.where(key), schema)
        return _Section(self.data[key], self.where(key), schema)

    def _missing(self, key: str, reason: str) -> ConfigError:
        """The error for a missing key, naming an unknown key that looks like a typo of it."""
        unknown = [k for k in self.data if k not in self.known]
        typo = difflib.get_close_matches(key, unknown, n=1)
        if typo:
            reason += f" (found {typo[0]!r}: did you mean {key!r}?)"
        return ConfigError(self.where(key), reason)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - set(self.known))
        if unknown:
            close = difflib.get_close_matches(unknown[0], self.known, n=1)
            if close:
                hint = f"did you mean {close[0]!r}?"
            else:
                hint = "known keys here: " + ", ".join(sorted(self.known))
            raise ConfigError(self.where(unknown[0]), f"unknown key ({hint})")


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, f"expected a non-empty string, got {_kind(value)}")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {_kind(value)}")
    return value


def _path(value: object, where: str) -> Path:
    text = _string(value, where)
    if "\0" in text:
        raise ConfigError(where, "a path cannot contain NUL")
    return Path(text).expanduser()


def _optional_path(value: object, where: str) -> Path | None:
    if value is False:
        return None
    return _path(value, where)


def _int_range(low: int, high: int) -> Callable[[object, str], int]:
    def convert(value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"expected a whole number, got {_kind(value)}")
        if not low <= value <= high:
            raise ConfigError(where, f"must be between {low} and {high}, got {value}")
        return value

    return convert


def _fraction(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, f"expected a fraction between 0 and 1, got {_kind(value)}")
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(where, f"must be between 0 and 1, got {value}")
    return float(value)


def _duration(minimum: float) -> Callable[[object, str], float]:
    def convert(value: object, where: str) -> float:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(where, f"expected a duration such as 60 or 5m, got {_kind(value)}")
        try:
            seconds = parse_duration(value)
        except ValueError as error:
            raise ConfigError(where, str(error)) from None
        if seconds < minimum:
            raise ConfigError(where, f"must be at least {minimum:g} seconds, got {value!r}")
        return seconds

    return convert


def _size(value: object, where: str) -> int:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ConfigError(where, f"expected a size such as 512MB, got {_kind(value)}")
    try:
        size = parse_size(value)
    except ValueError as error:
        raise ConfigError(where, str(error)) from None
    if size <= 0:
        raise ConfigError(where, "must be positive")
    return size


def _size_or_zero(value: object, where: str) -> int:
    return 0 if value in (0, "0") else _size(value, where)


def _rate(value: object, where: str) -> float | None:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(where, f"expected a rate such as 50MB/s or unlimited, got {_kind(value)}")
    try:
        return parse_rate(value)
    except ValueError as error:
        raise ConfigError(where, str(error)) from None


def _segments(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(where, f"expected a non-empty list of names, got {_kind(value)}")
    names: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not valid_segment(item):
            raise ConfigError(
                f"{where}[{i}]",
                f"expected a name of letters, digits, '.', '_', '+', '-', got {_kind(item)}",
            )
        if item in names:
            raise ConfigError(f"{where}[{i}]", f"{item!r} is listed twice")
        names.append(item)
    return tuple(names)


def _segment(value: object, where: str) -> str:
    if not isinstance(value, str) or not valid_segment(value):
        raise ConfigError(
            where, f"expected a name of letters, digits, '.', '_', '+', '-', got {_kind(value)}"
        )
    return value


def _url(value: object, where: str) -> str:
    text = _string(value, where).rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(where, f"expected an http:// or https:// URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ConfigError(where, "the base URL cannot have a query or fragment")
    return text


def _listen(value: object, where: str) -> str | None:
    if value is False:
        return None
    text = _string(value, where)
    host, sep, port = text.rpartition(":")
    if (
        not sep
        or not host
        or not (port.isascii() and port.isdigit())
        or not 0 <= int(port) <= 65535
    ):
        raise ConfigError(where, f"expected host:port such as 127.0.0.1:9469, got {value!r}")
    return text


def _mqtt_url(value: object, where: str) -> str:
    text = _string(value, where).rstrip("/")
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - it raises for a port that is no number or out of range
    except ValueError:
        raise ConfigError(where, f"bad port in {value!r}") from None
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ConfigError(where, f"expected mqtt://host or mqtt://host:port, got {value!r}")
    if parts.username or parts.password:
        raise ConfigError(where, "put credentials in username and password_file, not the URL")
    if parts.path or parts.query or parts.fragment:
        raise ConfigError(where, "the broker URL cannot have a path, query or fragment")
    return text


def _topic_filter(value: object, where: str) -> str:
    text = _string(value, where)
    levels = text.split("/")
    if "\0" in text or len(text.encode()) > 65535:
        raise ConfigError(where, "a topic filter cannot contain NUL or exceed 65535 bytes")
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or (
            "+" in level and level != "+"
        ):
            raise ConfigError(
                where, f"'#' only as the last level and '+' only as a whole level, got {text!r}"
            )
    return text


def _topic_filters(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(where, f"expected a non-empty list of topic filters, got {_kind(value)}")
    return tuple(_topic_filter(item, f"{where}[{i}]") for i, item in enumerate(value))


def _topic_prefix(value: object, where: str) -> str:
    text = _string(value, where)
    if "\0" in text or "+" in text or "#" in text:
        raise ConfigError(where, f"a topic prefix cannot contain NUL, '+' or '#', got {text!r}")
    if any(not level for level in text.split("/")):
        raise ConfigError(where, f"an empty topic level (a stray '/') in {text!r}")
    return text


def _broker_fields(section: _Section) -> dict[str, Any]:
    """The keys every broker connection has (``push.mqtt`` and ``push.announce``)."""
    broker = {
        "url": section.get("url", _mqtt_url),
        "client_id": section.get("client_id", _string, BrokerConfig.client_id),
        "username": section.get("username", _string, BrokerConfig.username),
        "password_file": section.get("password_file", _path, BrokerConfig.password_file),
        "reconnect_max": section.get("reconnect_max", _duration(1), BrokerConfig.reconnect_max),
    }
    if broker["password_file"] is not None and broker["username"] is None:
        raise ConfigError(section.where("password_file"), "needs a username")
    return broker


def _optional_section(parent: _Section, key: str, schema: type) -> _Section | None:
    raw = parent.data.get(key)
    return None if raw is None or raw is False else parent.section(key, schema)


def _releases(top: _Section) -> ReleasesConfig | None:
    if top.data.get("releases") in (None, False):
        return None
    section = top.section("releases", ReleasesConfig)
    releases = ReleasesConfig(
        branches=section.get("branches", _segments, ReleasesConfig.branches),
        arches=section.get("arches", _segments, ReleasesConfig.arches),
        files=section.get("files", _segments, ReleasesConfig.files),
        latest_stable=section.get("latest_stable", _bool, ReleasesConfig.latest_stable),
        max_file_bytes=section.get("max_file_bytes", _size, ReleasesConfig.max_file_bytes),
        interval=section.get("interval", _duration(1), ReleasesConfig.interval),
    )
    section.finish()
    for key in ("branches", "arches"):
        names = getattr(releases, key)
        if "all" in names and len(names) > 1:
            raise ConfigError(section.where(key), "'all' stands alone")
    return releases


MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part (all but the last)


def _s3_prefix(value: object, where: str) -> str:
    text = _string(value, where).strip("/")
    if "\0" in text or ".." in text.split("/"):
        raise ConfigError(where, f"expected a key prefix such as alpine, got {value!r}")
    return text + "/"


def _s3(top: _Section) -> S3Config | None:
    raw = top.data.get("s3")
    if raw is None or raw is False:
        return None
    section = top.section("s3", S3Config)
    s3 = S3Config(
        endpoint=section.get("endpoint", _url),
        bucket=section.get("bucket", _string),
        prefix=section.get("prefix", _s3_prefix, S3Config.prefix),
        region=section.get("region", _string, S3Config.region),
        credentials_file=section.get("credentials_file", _path, S3Config.credentials_file),
        concurrency=section.get("concurrency", _int_range(1, 256), S3Config.concurrency),
        multipart_threshold=section.get("multipart_threshold", _size, S3Config.multipart_threshold),
        part_size=section.get("part_size", _size, S3Config.part_size),
    )
    section.finish()
    if s3.part_size < MIN_PART_SIZE:
        raise ConfigError(section.where("part_size"), "must be at least 5MiB (S3's smallest part)")
    if s3.multipart_threshold < s3.part_size:
        raise ConfigError(section.where("multipart_threshold"), "must be at least part_size")
    return s3


def _etcd_prefix(value: object, where: str) -> str:
    text = "/" + _string(value, where).strip("/")
    if "\0" in text or ".." in text.split("/"):
        raise ConfigError(where, f"expected a key prefix such as /mirrord, got {value!r}")
    return text


def _fleet(top: _Section) -> FleetConfig | None:
    raw = top.data.get("fleet")
    if raw is None or raw is False:
        return None
    section = top.section("fleet", FleetConfig)
    etcd = section.get("etcd", _urls)
    if not etcd:
        raise ConfigError(section.where("etcd"), "needs at least one endpoint")
    fleet = FleetConfig(
        etcd=etcd,
        node=section.get("node", _segment, socket.gethostname()),
        prefix=section.get("prefix", _etcd_prefix, FleetConfig.prefix),
        stage_timeout=section.get("stage_timeout", _duration(0.1), FleetConfig.stage_timeout),
        lease_ttl=section.get("lease_ttl", _int_range(2, 3600), FleetConfig.lease_ttl),
    )
    section.finish()
    return fleet


def _push(top: _Section) -> PushConfig:
    push_section = top.section("push", PushConfig, required=False)
    push_section.finish()
    mqtt = announce = None
    section = _optional_section(push_section, "mqtt", MqttConfig)
    if section is not None:
        mqtt = MqttConfig(
            **_broker_fields(section),
            topics=section.get("topics", _topic_filters, MqttConfig.topics),
        )
        section.finish()
    section = _optional_section(push_section, "announce", AnnounceConfig)
    if section is not None:
        announce = AnnounceConfig(
            **_broker_fields(section),
            topic_prefix=section.get("topic_prefix", _topic_prefix, AnnounceConfig.topic_prefix),
            qos=section.get("qos", _int_range(0, 1), AnnounceConfig.qos),
            retain=section.get("retain", _bool, AnnounceConfig.retain),
        )
        section.finish()
    return PushConfig(mqtt, announce)


def _urls(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(where, f"expected a list of URLs, got {_kind(value)}")
    return tuple(_url(item, f"{where}[{i}]") for i, item in enumerate(value))


def _argv(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            where, f"expected a non-empty list (program and arguments), got {_kind(value)}"
        )
    return tuple(_string(item, f"{where}[{i}]") for i, item in enumerate(value))


def _purge(top: _Section) -> PurgeConfig:
    section = top.section("purge", PurgeConfig, required=False)
    raw_fastly, raw_hook = section.data.get("fastly"), section.data.get("hook")
    fastly: FastlyConfig | None = None
    if raw_fastly is not None and raw_fastly is not False:
        inner = section.section("fastly", FastlyConfig)
        fastly = FastlyConfig(
            service_id=inner.get("service_id", _segment),
            token_file=inner.get("token_file", _path),
            api_url=inner.get("api_url", _url, FastlyConfig.api_url),
        )
        inner.finish()
    hook: PurgeHookConfig | None = None
    if raw_hook is not None and raw_hook is not False:
        inner = section.section("hook", PurgeHookConfig)
        hook = PurgeHookConfig(
            url=inner.get("url", _url, None), command=inner.get("command", _argv, None)
        )
        inner.finish()
        if (hook.url is None) == (hook.command is None):
            raise ConfigError(section.where("hook"), "needs exactly one of url and command")
    purge = PurgeConfig(
        urls=section.get("urls", _urls, PurgeConfig.urls),
        soft=section.get("soft", _bool, PurgeConfig.soft),
        fastly=fastly,
        hook=hook,
        attempts=section.get("attempts", _int_range(1, 20), PurgeConfig.attempts),
        timeout=section.get("timeout", _duration(0.1), PurgeConfig.timeout),
    )
    section.finish()
    return purge


_LEVELS = ("debug", "info", "warning", "error")
WORKER_CPU = ("normal", "idle")
_FORMATS = ("auto", "json", "console")


def _choice(options: tuple[str, ...]) -> Callable[[object, str], str]:
    def convert(value: object, where: str) -> str:
        if value not in options:
            raise ConfigError(where, f"expected one of {', '.join(options)}, got {_kind(value)}")
        return str(value)

    return convert


_CLOCK = re.compile(r"^([01]?[0-9]|2[0-4]):([0-5][0-9])$")


def _minute_of_day(text: str, where: str) -> int:
    match = _CLOCK.match(text.strip())
    if not match:
        raise ConfigError(where, f"expected HH:MM, got {text!r}")
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    if minutes > 1440:
        raise ConfigError(where, f"{text!r} is past 24:00")
    return minutes


def _schedule(value: object, where: str) -> tuple[ScheduleWindow, ...]:
    if not isinstance(value, Mapping):
        raise ConfigError(where, f"expected a mapping of 'HH:MM-HH:MM': rate, got {_kind(value)}")
    windows: list[ScheduleWindow] = []
    for span, rate in value.items():
        here = f"{where}.{span}"
        if not isinstance(span, str) or span.count("-") != 1:
            raise ConfigError(here, "expected a window such as '06:00-24:00'")
        start_text, end_text = span.split("-")
        start, end = _minute_of_day(start_text, here), _minute_of_day(end_text, here)
        if start >= end:
            raise ConfigError(here, "a window must end after it starts (split windows at 24:00)")
        windows.append(ScheduleWindow(start, end, _rate(rate, here)))
    windows.sort(key=lambda w: w.start)
    for before, after in itertools.pairwise(windows):
        if after.start < before.end:
            raise ConfigError(where, "schedule windows overlap")
    return tuple(windows)


def default_processes() -> int:
    """Fetch worker processes for ``auto``: one per core, none on a single core."""
    cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(cores, 4)


def _processes(value: object, where: str) -> int:
    if value == "auto":
        return default_processes()
    return _int_range(0, 64)(value, where)


def _repositories(value: object, where: str) -> tuple[RepositorySet, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(where, f"expected a non-empty list, got {_kind(value)}")
    sets: list[RepositorySet] = []
    for i, item in enumerate(value):
        section = _Section(item, f"{where}[{i}]", RepositorySet)
        sets.append(
            RepositorySet(
                branch=section.get("branch", _segment),
                repos=section.get("repos", _segments),
                arches=section.get("arches", _segments),
            )
        )
        section.finish()
    return tuple(sets)


def parse_config(data: object) -> Config:
    """Turn parsed YAML into a Config or raise ConfigError naming the key."""
    top = _Section(data, "", Config)

    origin_section = top.section("origin", OriginConfig)
    origin = OriginConfig(
        url=origin_section.get("url", _url),
        keys=origin_section.get("keys", _path),
        allow_untrusted=origin_section.get("allow_untrusted", _bool, False),
    )
    origin_section.finish()

    repositories = top.get("repositories", _repositories)

    storage_section = top.section("storage", StorageConfig)
    storage = StorageConfig(
        path=storage_section.get("path", _path),
        gc_interval=storage_section.get("gc_interval", _duration(0), StorageConfig.gc_interval),
        min_free=storage_section.get("min_free", _size_or_zero, StorageConfig.min_free),
    )
    storage_section.finish()

    publish_section = top.section("publish", PublishConfig)
    publish = PublishConfig(
        path=publish_section.get("path", _path),
        grace=publish_section.get("grace", _duration(0), PublishConfig.grace),
        max_delete_fraction=publish_section.get(
            "max_delete_fraction", _fraction, PublishConfig.max_delete_fraction
        ),
        keep_snapshots=publish_section.get(
            "keep_snapshots", _int_range(1, 10_000), PublishConfig.keep_snapshots
        ),
    )
    publish_section.finish()

    fetch_section = top.section("fetch", FetchConfig, required=False)
    fetch = FetchConfig(
        concurrency=fetch_section.get("concurrency", _int_range(1, 1024), FetchConfig.concurrency),
        per_host=fetch_section.get("per_host", _int_range(1, 1024), FetchConfig.per_host),
        connect_timeout=fetch_section.get(
            "connect_timeout", _duration(0.1), FetchConfig.connect_timeout
        ),
        read_timeout=fetch_section.get("read_timeout", _duration(0.1), FetchConfig.read_timeout),
        attempts=fetch_section.get("attempts", _int_range(1, 100), FetchConfig.attempts),
        retry_max_time=fetch_section.get(
            "retry_max_time", _duration(0), FetchConfig.retry_max_time
        ),
        missing_grace=fetch_section.get("missing_grace", _duration(0), FetchConfig.missing_grace),
        rate_limit=fetch_section.get("rate_limit", _rate, FetchConfig.rate_limit),
        burst=fetch_section.get("burst", _size, FetchConfig.burst),
        schedule=fetch_section.get("schedule", _schedule, FetchConfig.schedule),
        # Left out of the file it means "auto" (one per core); FetchConfig()'s 0 is for
        # configurations built in code (fetch workers, tests).
        processes=fetch_section.get("processes", _processes, default_processes()),
        processes_from=fetch_section.get(
            "processes_from", _int_range(0, 1_000_000), FetchConfig.processes_from
        ),
        worker_cpu=fetch_section.get("worker_cpu", _choice(WORKER_CPU), FetchConfig.worker_cpu),
    )
    fetch_section.finish()

    limits_section = top.section("limits", LimitsConfig, required=False)
    limits = LimitsConfig(
        max_index_bytes=limits_section.get("max_index_bytes", _size, LimitsConfig.max_index_bytes),
        max_package_bytes=limits_section.get(
            "max_package_bytes", _size, LimitsConfig.max_package_bytes
        ),
    )
    limits_section.finish()

    log_section = top.section("log", LogConfig, required=False)
    log = LogConfig(
        level=log_section.get("level", _choice(_LEVELS), LogConfig.level),
        format=log_section.get("format", _choice(_FORMATS), LogConfig.format),
    )
    log_section.finish()

    metrics_section = top.section("metrics", MetricsConfig, required=False)
    metrics = MetricsConfig(listen=metrics_section.get("listen", _listen, MetricsConfig.listen))
    metrics_section.finish()

    control_section = top.section("control", ControlConfig, required=False)
    control = ControlConfig(
        socket=control_section.get("socket", _optional_path, ControlConfig.socket),
        group=control_section.get("group", _string, ControlConfig.group),
        idle_timeout=control_section.get(
            "idle_timeout", _duration(0.1), ControlConfig.idle_timeout
        ),
    )
    control_section.finish()

    push = _push(top)
    purge = _purge(top)
    releases = _releases(top)
    s3 = _s3(top)
    fleet = _fleet(top)

    interval = top.get("interval", _duration(1), Config.interval)
    shutdown_grace = top.get("shutdown_grace", _duration(0), Config.shutdown_grace)
    top.finish()

    config = Config(
        origin=origin,
        repositories=repositories,
        storage=storage,
        publish=publish,
        fetch=fetch,
        limits=limits,
        log=log,
        metrics=metrics,
        control=control,
        push=push,
        purge=purge,
        releases=releases,
        s3=s3,
        fleet=fleet,
        interval=interval,
        shutdown_grace=shutdown_grace,
    )
    if config.storage.path.resolve() == config.publish.path.resolve():
        raise ConfigError("publish.path", "must differ from storage.path")
    return config


def load_config(path: Path) -> Config:
    """Read and parse a YAML file; every failure is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("", f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"{path} is not UTF-8 text") from None
    import yaml  # here, not at the top: fetch worker processes never parse YAML

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError("", f"{path}: {problem}{where}") from None
    if data is None:
        raise ConfigError("", f"{path} is empty")
    return parse_config(data)
