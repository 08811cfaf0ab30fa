"""The YAML configuration: parsed into frozen dataclasses, refused with a key path.

This package names the dataclasses; ``mirrord.core.config.parse`` loads them
(``load_config``, ``parse_config``). Loading is pure apart from reading the
file; checks that need the filesystem (keys directory, same filesystem for
storage and publish) live with the code that uses those paths. A fetch worker
imports the dataclasses only: the parser and its checks are ~1 MiB of every
worker (issue 15).
"""

from mirrord.core.config.schema import (
    ALPINE_PUSH_TOPICS,
    ANNOUNCE_PREFIX_ROOT,
    DEFAULT_CONTROL_SOCKET,
    FASTLY_API,
    AnnounceConfig,
    BrokerConfig,
    Config,
    ControlConfig,
    FastlyConfig,
    FetchConfig,
    FleetConfig,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    MqttConfig,
    OriginConfig,
    PublishConfig,
    PurgeConfig,
    PurgeHookConfig,
    PushConfig,
    ReleasesConfig,
    RepositorySet,
    S3Config,
    ScheduleWindow,
    StorageConfig,
)

__all__ = [
    "ALPINE_PUSH_TOPICS",
    "ANNOUNCE_PREFIX_ROOT",
    "DEFAULT_CONTROL_SOCKET",
    "FASTLY_API",
    "AnnounceConfig",
    "BrokerConfig",
    "Config",
    "ControlConfig",
    "FastlyConfig",
    "FetchConfig",
    "FleetConfig",
    "LimitsConfig",
    "LogConfig",
    "MetricsConfig",
    "MqttConfig",
    "OriginConfig",
    "PublishConfig",
    "PurgeConfig",
    "PurgeHookConfig",
    "PushConfig",
    "ReleasesConfig",
    "RepositorySet",
    "S3Config",
    "ScheduleWindow",
    "StorageConfig",
]
