"""The sections whose parsing is more than a key per field: repositories, schedule, push, purge,
releases, s3 and fleet."""

from __future__ import annotations

import itertools
import os
import re
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from mirrord.core.config import check
from mirrord.core.config.check import Section
from mirrord.core.config.schema import (
    AnnounceConfig,
    BrokerConfig,
    FastlyConfig,
    FleetConfig,
    MqttConfig,
    PurgeConfig,
    PurgeHookConfig,
    PushConfig,
    ReleasesConfig,
    RepositorySet,
    S3Config,
    ScheduleWindow,
)
from mirrord.core.errors import ConfigError


def _mqtt_url(value: object, where: str) -> str:
    text = check.string(value, where).rstrip("/")
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
    text = check.string(value, where)
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
        raise ConfigError(
            where, f"expected a non-empty list of topic filters, got {check.kind(value)}"
        )
    return tuple(_topic_filter(item, f"{where}[{i}]") for i, item in enumerate(value))


def _topic_prefix(value: object, where: str) -> str:
    text = check.string(value, where)
    if "\0" in text or "+" in text or "#" in text:
        raise ConfigError(where, f"a topic prefix cannot contain NUL, '+' or '#', got {text!r}")
    if any(not level for level in text.split("/")):
        raise ConfigError(where, f"an empty topic level (a stray '/') in {text!r}")
    return text


def _broker_fields(section: Section) -> dict[str, Any]:
    """The keys every broker connection has (``push.mqtt`` and ``push.announce``)."""
    broker = {
        "url": section.get("url", _mqtt_url),
        "client_id": section.get("client_id", check.string, BrokerConfig.client_id),
        "username": section.get("username", check.string, BrokerConfig.username),
        "password_file": section.get("password_file", check.path, BrokerConfig.password_file),
        "reconnect_max": section.get(
            "reconnect_max", check.duration(1), BrokerConfig.reconnect_max
        ),
    }
    if broker["password_file"] is not None and broker["username"] is None:
        raise ConfigError(section.where("password_file"), "needs a username")
    return broker


def read_releases(top: Section) -> ReleasesConfig | None:
    if top.data.get("releases") in (None, False):
        return None
    section = top.section("releases", ReleasesConfig)
    releases = ReleasesConfig(
        branches=section.get("branches", check.segments, ReleasesConfig.branches),
        arches=section.get("arches", check.segments, ReleasesConfig.arches),
        files=section.get("files", check.segments, ReleasesConfig.files),
        latest_stable=section.get("latest_stable", check.boolean, ReleasesConfig.latest_stable),
        max_file_bytes=section.get("max_file_bytes", check.size, ReleasesConfig.max_file_bytes),
        interval=section.get("interval", check.duration(1), ReleasesConfig.interval),
    )
    section.finish()
    for key in ("branches", "arches"):
        names = getattr(releases, key)
        if "all" in names and len(names) > 1:
            raise ConfigError(section.where(key), "'all' stands alone")
    return releases


MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part (all but the last)


def _s3_prefix(value: object, where: str) -> str:
    text = check.string(value, where).strip("/")
    if "\0" in text or ".." in text.split("/"):
        raise ConfigError(where, f"expected a key prefix such as alpine, got {value!r}")
    return text + "/"


def read_s3(top: Section) -> S3Config | None:
    raw = top.data.get("s3")
    if raw is None or raw is False:
        return None
    section = top.section("s3", S3Config)
    s3 = S3Config(
        endpoint=section.get("endpoint", check.url),
        bucket=section.get("bucket", check.string),
        prefix=section.get("prefix", _s3_prefix, S3Config.prefix),
        region=section.get("region", check.string, S3Config.region),
        credentials_file=section.get("credentials_file", check.path, S3Config.credentials_file),
        concurrency=section.get("concurrency", check.int_range(1, 256), S3Config.concurrency),
        multipart_threshold=section.get(
            "multipart_threshold", check.size, S3Config.multipart_threshold
        ),
        part_size=section.get("part_size", check.size, S3Config.part_size),
        sign_payload=section.get("sign_payload", check.boolean, S3Config.sign_payload),
    )
    section.finish()
    if s3.part_size < MIN_PART_SIZE:
        raise ConfigError(section.where("part_size"), "must be at least 5MiB (S3's smallest part)")
    if s3.multipart_threshold < s3.part_size:
        raise ConfigError(section.where("multipart_threshold"), "must be at least part_size")
    return s3


def _etcd_prefix(value: object, where: str) -> str:
    text = "/" + check.string(value, where).strip("/")
    if "\0" in text or ".." in text.split("/"):
        raise ConfigError(where, f"expected a key prefix such as /mirrord, got {value!r}")
    return text


def read_fleet(top: Section) -> FleetConfig | None:
    raw = top.data.get("fleet")
    if raw is None or raw is False:
        return None
    section = top.section("fleet", FleetConfig)
    etcd = section.get("etcd", check.urls)
    if not etcd:
        raise ConfigError(section.where("etcd"), "needs at least one endpoint")
    fleet = FleetConfig(
        etcd=etcd,
        node=section.get("node", check.segment, socket.gethostname()),
        prefix=section.get("prefix", _etcd_prefix, FleetConfig.prefix),
        stage_timeout=section.get("stage_timeout", check.duration(0.1), FleetConfig.stage_timeout),
        lease_ttl=section.get("lease_ttl", check.int_range(2, 3600), FleetConfig.lease_ttl),
        health_grace=section.get("health_grace", check.duration(0.1), None),
    )
    section.finish()
    return fleet


def read_push(top: Section) -> PushConfig:
    push_section = top.section("push", PushConfig, required=False)
    push_section.finish()
    mqtt = announce = None
    section = check.optional_section(push_section, "mqtt", MqttConfig)
    if section is not None:
        mqtt = MqttConfig(
            **_broker_fields(section),
            topics=section.get("topics", _topic_filters, MqttConfig.topics),
        )
        section.finish()
    section = check.optional_section(push_section, "announce", AnnounceConfig)
    if section is not None:
        announce = AnnounceConfig(
            **_broker_fields(section),
            topic_prefix=section.get("topic_prefix", _topic_prefix, AnnounceConfig.topic_prefix),
            qos=section.get("qos", check.int_range(0, 1), AnnounceConfig.qos),
            retain=section.get("retain", check.boolean, AnnounceConfig.retain),
        )
        section.finish()
    return PushConfig(mqtt, announce)


def read_purge(top: Section) -> PurgeConfig:
    section = top.section("purge", PurgeConfig, required=False)
    raw_fastly, raw_hook = section.data.get("fastly"), section.data.get("hook")
    fastly: FastlyConfig | None = None
    if raw_fastly is not None and raw_fastly is not False:
        inner = section.section("fastly", FastlyConfig)
        fastly = FastlyConfig(
            service_id=inner.get("service_id", check.segment),
            token_file=inner.get("token_file", check.path),
            api_url=inner.get("api_url", check.url, FastlyConfig.api_url),
        )
        inner.finish()
    hook: PurgeHookConfig | None = None
    if raw_hook is not None and raw_hook is not False:
        inner = section.section("hook", PurgeHookConfig)
        hook = PurgeHookConfig(
            url=inner.get("url", check.url, None), command=inner.get("command", check.argv, None)
        )
        inner.finish()
        if (hook.url is None) == (hook.command is None):
            raise ConfigError(section.where("hook"), "needs exactly one of url and command")
    purge = PurgeConfig(
        urls=section.get("urls", check.urls, PurgeConfig.urls),
        soft=section.get("soft", check.boolean, PurgeConfig.soft),
        fastly=fastly,
        hook=hook,
        attempts=section.get("attempts", check.int_range(1, 20), PurgeConfig.attempts),
        timeout=section.get("timeout", check.duration(0.1), PurgeConfig.timeout),
    )
    section.finish()
    return purge


_CLOCK = re.compile(r"^([01]?[0-9]|2[0-4]):([0-5][0-9])$")


def _minute_of_day(text: str, where: str) -> int:
    match = _CLOCK.match(text.strip())
    if not match:
        raise ConfigError(where, f"expected HH:MM, got {text!r}")
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    if minutes > 1440:
        raise ConfigError(where, f"{text!r} is past 24:00")
    return minutes


def schedule(value: object, where: str) -> tuple[ScheduleWindow, ...]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            where, f"expected a mapping of 'HH:MM-HH:MM': rate, got {check.kind(value)}"
        )
    windows: list[ScheduleWindow] = []
    for span, rate in value.items():
        here = f"{where}.{span}"
        if not isinstance(span, str) or span.count("-") != 1:
            raise ConfigError(here, "expected a window such as '06:00-24:00'")
        start_text, end_text = span.split("-")
        start, end = _minute_of_day(start_text, here), _minute_of_day(end_text, here)
        if start >= end:
            raise ConfigError(here, "a window must end after it starts (split windows at 24:00)")
        windows.append(ScheduleWindow(start, end, check.rate(rate, here)))
    windows.sort(key=lambda w: w.start)
    for before, after in itertools.pairwise(windows):
        if after.start < before.end:
            raise ConfigError(where, "schedule windows overlap")
    return tuple(windows)


def default_processes() -> int:
    """Fetch worker processes for ``auto``: one per core, none on a single core."""
    cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(cores, 4)


def processes(value: object, where: str) -> int:
    if value == "auto":
        return default_processes()
    return check.int_range(0, 64)(value, where)


def repositories(value: object, where: str) -> tuple[RepositorySet, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(where, f"expected a non-empty list, got {check.kind(value)}")
    sets: list[RepositorySet] = []
    for i, item in enumerate(value):
        section = Section(item, f"{where}[{i}]", RepositorySet)
        sets.append(
            RepositorySet(
                branch=section.get("branch", check.segment),
                repos=section.get("repos", check.segments),
                arches=section.get("arches", check.segments),
            )
        )
        section.finish()
    return tuple(sets)
