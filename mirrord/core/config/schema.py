"""The configuration's frozen dataclasses and their defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mirrord.core.model import ArchKey


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
    older_index: str = "refuse"  # "publish": follow an origin whose index goes back in time


@dataclass(frozen=True)
class ScheduleWindow:
    """``start``/``end`` are minutes after local midnight; end may be 1440."""

    start: int
    end: int
    rate_limit: float | None


@dataclass(frozen=True)
class FetchConfig:
    concurrency: int = 64
    per_host: int = 16
    pipeline: int = 4  # requests in flight on one connection (HTTP/1.1 pipelining)
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
    processes_busy: float = 0.9  # ... and the daemon's loop this busy; 0: the backlog alone
    worker_cpu: str = "normal"  # "idle": fetch workers under SCHED_IDLE, CPU nothing else wants

    @property
    def connections(self) -> int:
        """Download connections at most: downloads beyond them wait, or are pipelined."""
        return min(self.concurrency, self.per_host)


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
    # SHA-256 every body into its request signature too (Content-MD5 is always sent, and the
    # store refuses other bytes; over https botocore never signs bodies that carry it).
    sign_payload: bool = False


@dataclass(frozen=True)
class FleetConfig:
    """Fleet mode: no node makes an index live before every live node has staged it."""

    etcd: tuple[str, ...]  # endpoints of the etcd cluster's JSON gateway (http://host:2379)
    node: str  # this node's name in the fleet (default: the host name)
    prefix: str = "/mirrord"
    stage_timeout: float = 120.0  # then go live, leaving out the nodes that have not staged
    lease_ttl: int = 10  # seconds a dead node stays a member
    health_grace: float | None = None  # a member ahead longer: /health 503 (None: stage_timeout)

    @property
    def behind_grace(self) -> float:
        return self.stage_timeout if self.health_grace is None else self.health_grace


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
