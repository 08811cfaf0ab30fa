"""Turning a YAML file into a Config: ``load_config`` and ``parse_config``."""

from __future__ import annotations

from pathlib import Path

from mirrord.core.config import check, sections
from mirrord.core.config.check import Section
from mirrord.core.config.schema import (
    Config,
    ControlConfig,
    FetchConfig,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    OriginConfig,
    PublishConfig,
    StorageConfig,
)
from mirrord.core.errors import ConfigError

_LEVELS = ("debug", "info", "warning", "error")


WORKER_CPU = ("normal", "idle")
OLDER_INDEX = ("refuse", "publish")


_FORMATS = ("auto", "json", "console")


def parse_config(data: object) -> Config:
    """Turn parsed YAML into a Config or raise ConfigError naming the key."""
    top = Section(data, "", Config)

    origin_section = top.section("origin", OriginConfig)
    origin = OriginConfig(
        url=origin_section.get("url", check.url),
        keys=origin_section.get("keys", check.path),
        allow_untrusted=origin_section.get("allow_untrusted", check.boolean, False),
    )
    origin_section.finish()

    repositories = top.get("repositories", sections.repositories)

    storage_section = top.section("storage", StorageConfig)
    storage = StorageConfig(
        path=storage_section.get("path", check.path),
        gc_interval=storage_section.get(
            "gc_interval", check.duration(0), StorageConfig.gc_interval
        ),
        min_free=storage_section.get("min_free", check.size_or_zero, StorageConfig.min_free),
    )
    storage_section.finish()

    publish_section = top.section("publish", PublishConfig)
    publish = PublishConfig(
        path=publish_section.get("path", check.path),
        grace=publish_section.get("grace", check.duration(0), PublishConfig.grace),
        max_delete_fraction=publish_section.get(
            "max_delete_fraction", check.fraction, PublishConfig.max_delete_fraction
        ),
        keep_snapshots=publish_section.get(
            "keep_snapshots", check.int_range(1, 10_000), PublishConfig.keep_snapshots
        ),
        older_index=publish_section.get(
            "older_index", check.choice(OLDER_INDEX), PublishConfig.older_index
        ),
    )
    publish_section.finish()

    fetch_section = top.section("fetch", FetchConfig, required=False)
    fetch = FetchConfig(
        concurrency=fetch_section.get(
            "concurrency", check.int_range(1, 1024), FetchConfig.concurrency
        ),
        per_host=fetch_section.get("per_host", check.int_range(1, 1024), FetchConfig.per_host),
        pipeline=fetch_section.get("pipeline", check.int_range(1, 16), FetchConfig.pipeline),
        connect_timeout=fetch_section.get(
            "connect_timeout", check.duration(0.1), FetchConfig.connect_timeout
        ),
        read_timeout=fetch_section.get(
            "read_timeout", check.duration(0.1), FetchConfig.read_timeout
        ),
        attempts=fetch_section.get("attempts", check.int_range(1, 100), FetchConfig.attempts),
        retry_max_time=fetch_section.get(
            "retry_max_time", check.duration(0), FetchConfig.retry_max_time
        ),
        missing_grace=fetch_section.get(
            "missing_grace", check.duration(0), FetchConfig.missing_grace
        ),
        rate_limit=fetch_section.get("rate_limit", check.rate, FetchConfig.rate_limit),
        burst=fetch_section.get("burst", check.size, FetchConfig.burst),
        schedule=fetch_section.get("schedule", sections.schedule, FetchConfig.schedule),
        # Left out of the file it means "auto" (one per core); FetchConfig()'s 0 is for
        # configurations built in code (fetch workers, tests).
        processes=fetch_section.get("processes", sections.processes, sections.default_processes()),
        processes_from=fetch_section.get(
            "processes_from", check.int_range(0, 1_000_000), FetchConfig.processes_from
        ),
        processes_busy=fetch_section.get(
            "processes_busy", check.fraction, FetchConfig.processes_busy
        ),
        worker_cpu=fetch_section.get(
            "worker_cpu", check.choice(WORKER_CPU), FetchConfig.worker_cpu
        ),
    )
    fetch_section.finish()

    limits_section = top.section("limits", LimitsConfig, required=False)
    limits = LimitsConfig(
        max_index_bytes=limits_section.get(
            "max_index_bytes", check.size, LimitsConfig.max_index_bytes
        ),
        max_package_bytes=limits_section.get(
            "max_package_bytes", check.size, LimitsConfig.max_package_bytes
        ),
    )
    limits_section.finish()

    log_section = top.section("log", LogConfig, required=False)
    log = LogConfig(
        level=log_section.get("level", check.choice(_LEVELS), LogConfig.level),
        format=log_section.get("format", check.choice(_FORMATS), LogConfig.format),
    )
    log_section.finish()

    metrics_section = top.section("metrics", MetricsConfig, required=False)
    metrics = MetricsConfig(
        listen=metrics_section.get("listen", check.listen, MetricsConfig.listen)
    )
    metrics_section.finish()

    control_section = top.section("control", ControlConfig, required=False)
    control = ControlConfig(
        socket=control_section.get("socket", check.optional_path, ControlConfig.socket),
        group=control_section.get("group", check.string, ControlConfig.group),
        idle_timeout=control_section.get(
            "idle_timeout", check.duration(0.1), ControlConfig.idle_timeout
        ),
    )
    control_section.finish()

    push = sections.read_push(top)
    purge = sections.read_purge(top)
    releases = sections.read_releases(top)
    s3 = sections.read_s3(top)
    fleet = sections.read_fleet(top)

    interval = top.get("interval", check.duration(1), Config.interval)
    shutdown_grace = top.get("shutdown_grace", check.duration(0), Config.shutdown_grace)
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
