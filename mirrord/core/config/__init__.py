"""The YAML configuration: parsed into frozen dataclasses, refused with a key path.

Loading is pure apart from reading the file; checks that need the filesystem
(keys directory, same filesystem for storage and publish) live with the code
that uses those paths.
"""

from mirrord.core.config.parse import WORKER_CPU, load_config, parse_config
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
from mirrord.core.config.sections import default_processes

__all__ = [
    "ALPINE_PUSH_TOPICS",
    "ANNOUNCE_PREFIX_ROOT",
    "DEFAULT_CONTROL_SOCKET",
    "FASTLY_API",
    "WORKER_CPU",
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
    "default_processes",
    "load_config",
    "parse_config",
]
