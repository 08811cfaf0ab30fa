from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirrord.core.config import (
    ALPINE_PUSH_TOPICS,
    DEFAULT_CONTROL_SOCKET,
    AnnounceConfig,
    Config,
    ControlConfig,
    FetchConfig,
    FleetConfig,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    MqttConfig,
    PublishConfig,
    PushConfig,
    S3Config,
    StorageConfig,
)
from mirrord.core.config.parse import load_config, parse_config
from mirrord.core.config.sections import default_processes
from mirrord.core.errors import ConfigError
from mirrord.core.model import ArchKey
from tests.helpers import FIXTURES, REPO_ROOT, run_mirrord, write_yaml

EXAMPLE = REPO_ROOT / "config" / "mirrord.example.yaml"


def minimal() -> dict[str, Any]:
    return {
        "origin": {"url": "https://dl-cdn.alpinelinux.org/alpine", "keys": "/etc/mirrord/keys"},
        "repositories": [{"branch": "v3.20", "repos": ["main"], "arches": ["x86_64"]}],
        "storage": {"path": "/var/lib/mirrord"},
        "publish": {"path": "/srv/mirror/alpine"},
    }


def test_example_config_loads_and_documents_every_key() -> None:
    config = load_config(EXAMPLE)
    assert config.origin.url == "https://dl-cdn.alpinelinux.org/alpine"
    assert ArchKey("v3.20", "community", "aarch64") in config.arch_keys()
    assert len(config.arch_keys()) == 5
    assert config.fetch.schedule[1].rate_limit == 50_000_000
    raw = yaml.safe_load(EXAMPLE.read_text())
    for section in dataclasses.fields(Config):
        if section.name in ("repositories", "interval", "shutdown_grace"):
            assert section.name in raw
            continue
        off_by_default = {"s3": S3Config, "fleet": FleetConfig}  # documented commented out
        if section.name in off_by_default:
            text = EXAMPLE.read_text().split(f"\n# {section.name}:\n")[1].split("\n\n")[0]
            for name in (f.name for f in dataclasses.fields(off_by_default[section.name])):
                assert re.search(rf"^#   {name}:", text, re.MULTILINE), f"{section.name}.{name}"
            continue
        documented = set(raw[section.name])
        section_type = type(getattr(config, section.name))
        expected = {f.name for f in dataclasses.fields(section_type)}
        assert documented == expected, f"{section.name}: undocumented {expected - documented}"
    # push.mqtt's optional login is documented commented out: Alpine's broker is anonymous.
    assert config.push.mqtt is not None and config.push.mqtt.host == "msg.alpinelinux.org"
    push_text = EXAMPLE.read_text().split("\npush:\n")[1].split("\n\n")[0]
    for name in (f.name for f in dataclasses.fields(MqttConfig)):
        assert re.search(rf"^ +(# )?{name}:", push_text, re.MULTILINE), f"push.mqtt.{name}"


def test_defaults_from_a_minimal_config() -> None:
    config = parse_config(minimal())
    assert config.publish.grace == 3600
    assert config.publish.max_delete_fraction == 0.10
    assert (config.fetch.concurrency, config.fetch.per_host, config.fetch.pipeline) == (64, 16, 4)
    assert config.interval == 60
    assert config.fetch.rate_limit is None


def test_a_file_that_leaves_keys_out_gets_the_dataclass_defaults() -> None:
    config = parse_config(minimal())
    assert config.storage == StorageConfig(path=Path("/var/lib/mirrord"))
    assert config.publish == PublishConfig(path=Path("/srv/mirror/alpine"))
    assert config.fetch == dataclasses.replace(FetchConfig(), processes=default_processes())
    assert config.limits == LimitsConfig()
    assert config.log == LogConfig()
    assert config.metrics == MetricsConfig()
    assert config.control == ControlConfig()
    assert config.push == PushConfig() and config.push.mqtt is None
    assert config.control.socket == DEFAULT_CONTROL_SOCKET
    assert (config.interval, config.shutdown_grace) == (Config.interval, Config.shutdown_grace)


def test_units_in_durations_sizes_and_rates() -> None:
    data = minimal()
    data["publish"]["grace"] = "2h"
    data["interval"] = "90s"
    data["fetch"] = {"rate_limit": "400Mbit/s", "burst": "8MiB"}
    data["limits"] = {"max_index_bytes": "64MB"}
    config = parse_config(data)
    assert config.publish.grace == 7200
    assert config.interval == 90
    assert config.fetch.rate_limit == 50_000_000
    assert config.fetch.burst == 8 * 1024 * 1024
    assert config.limits.max_index_bytes == 64_000_000


def _parent(data: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    return node


def _broken(path: tuple[str | int, ...], value: Any, *, delete: bool = False) -> dict[str, Any]:
    data = minimal()
    node = _parent(data, path)
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "key_path", "reason"),
    [
        (_broken(("origin", "colour"), "blue"), "origin.colour", "unknown key"),
        (_broken(("surprise",), 1), "surprise", "unknown key"),
        (_broken(("origin", "url"), None, delete=True), "origin.url", "missing required key"),
        (_broken(("storage",), None, delete=True), "storage", "missing required section"),
        (_broken(("origin", "url"), "ftp://x/alpine"), "origin.url", "http"),
        (_broken(("origin", "url"), 42), "origin.url", "non-empty string"),
        (_broken(("origin", "allow_untrusted"), "yes"), "origin.allow_untrusted", "true or false"),
        (_broken(("publish", "grace"), "soon"), "publish.grace", "duration"),
        (_broken(("publish", "grace"), -1), "publish.grace", "negative"),
        (
            _broken(("publish", "max_delete_fraction"), 1.5),
            "publish.max_delete_fraction",
            "between",
        ),
        (_broken(("fetch",), {"concurrency": 0}), "fetch.concurrency", "between 1"),
        (_broken(("fetch",), {"concurrency": "8"}), "fetch.concurrency", "whole number"),
        (_broken(("fetch",), {"pipeline": 0}), "fetch.pipeline", "between 1 and 16"),
        (_broken(("fetch",), {"pipeline": 17}), "fetch.pipeline", "between 1 and 16"),
        (_broken(("fetch",), {"rate_limit": "fast"}), "fetch.rate_limit", "rate"),
        (_broken(("fetch",), {"worker_cpu": "low"}), "fetch.worker_cpu", "normal, idle"),
        (_broken(("fetch",), {"processes_busy": 1.5}), "fetch.processes_busy", "between 0 and 1"),
        (_broken(("fetch",), {"processes_busy": "most"}), "fetch.processes_busy", "fraction"),
        (
            _broken(("fetch",), {"schedule": {"00:00-12:00": "1MB/s", "11:00-13:00": "2MB/s"}}),
            "fetch.schedule",
            "overlap",
        ),
        (
            _broken(("fetch",), {"schedule": {"25:00-26:00": 1}}),
            "fetch.schedule.25:00-26:00",
            "HH:MM",
        ),
        (_broken(("repositories",), []), "repositories", "non-empty list"),
        (
            _broken(("repositories", 0, "arches"), ["x86_64", "../etc"]),
            "repositories[0].arches[1]",
            "name",
        ),
        (_broken(("repositories", 0, "branch"), "a/b"), "repositories[0].branch", "name"),
        (
            _broken(("repositories", 0, "repos"), ["main", "main"]),
            "repositories[0].repos[1]",
            "twice",
        ),
        (_broken(("repositories", 0, "colour"), 1), "repositories[0].colour", "unknown key"),
        (_broken(("metrics",), {"listen": "nowhere"}), "metrics.listen", "host:port"),
        (_broken(("log",), {"level": "loud"}), "log.level", "one of"),
        (_broken(("publish", "path"), "/var/lib/mirrord"), "publish.path", "differ"),
        (_broken(("interval",), 0), "interval", "at least"),
        (_broken(("push",), {"mqtt": {}}), "push.mqtt.url", "missing required key"),
        (_broken(("push",), {"mqtt": True}), "push.mqtt", "mapping"),
        (_broken(("push",), {"mqt": {}}), "push.mqt", "did you mean 'mqtt'?"),
        (_broken(("push",), {"mqtt": {"url": "tcp://b:1883"}}), "push.mqtt.url", "mqtt://"),
        (_broken(("push",), {"mqtt": {"url": "mqtt://b:99999"}}), "push.mqtt.url", "port"),
        (_broken(("push",), {"mqtt": {"url": "mqtt://u:p@b"}}), "push.mqtt.url", "credentials"),
        (_broken(("push",), {"mqtt": {"url": "mqtt://b/x"}}), "push.mqtt.url", "path"),
        (
            _broken(("push",), {"mqtt": {"url": "mqtt://b", "topics": ["a/#/b"]}}),
            "push.mqtt.topics[0]",
            "'#' only as the last level",
        ),
        (
            _broken(("push",), {"mqtt": {"url": "mqtt://b", "topics": ["ok/#", "a+/b"]}}),
            "push.mqtt.topics[1]",
            "'+' only as a whole level",
        ),
        (
            _broken(("push",), {"mqtt": {"url": "mqtt://b", "topics": []}}),
            "push.mqtt.topics",
            "non-empty list",
        ),
        (
            _broken(("push",), {"mqtt": {"url": "mqtt://b", "reconnect_max": 0}}),
            "push.mqtt.reconnect_max",
            "at least 1",
        ),
        (
            _broken(("push",), {"mqtt": {"url": "mqtt://b", "password_file": "/etc/pw"}}),
            "push.mqtt.password_file",
            "needs a username",
        ),
        (
            _broken(("push",), {"mqtt": {"url": "mqtt://b", "clientid": "m"}}),
            "push.mqtt.clientid",
            "did you mean 'client_id'?",
        ),
    ],
)
def test_broken_configs_name_the_key(data: dict[str, Any], key_path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.key_path == key_path
    assert reason in caught.value.reason


def test_push_is_off_unless_configured_and_takes_alpines_topics_by_default() -> None:
    assert parse_config(_broken(("push",), {"mqtt": False})).push.mqtt is None
    assert parse_config(_broken(("push",), {"mqtt": None})).push.mqtt is None
    mqtt = parse_config(_broken(("push",), {"mqtt": {"url": "mqtt://msg.example/"}})).push.mqtt
    assert mqtt == MqttConfig(url="mqtt://msg.example", topics=ALPINE_PUSH_TOPICS)
    assert (mqtt.host, mqtt.port, mqtt.reconnect_max) == ("msg.example", 1883, 60.0)
    data = _broken(
        ("push",),
        {
            "mqtt": {
                "url": "mqtt://127.0.0.1:18830",
                "topics": "rsync/+/edge/#",
                "client_id": "mirror1",
                "username": "m",
                "password_file": "/etc/mirrord/pw",
                "reconnect_max": "2m",
            }
        },
    )
    mqtt = parse_config(data).push.mqtt
    assert mqtt is not None and (mqtt.host, mqtt.port) == ("127.0.0.1", 18830)
    assert mqtt.topics == ("rsync/+/edge/#",) and mqtt.reconnect_max == 120
    assert (mqtt.client_id, mqtt.username, mqtt.password_file) == (
        "mirror1",
        "m",
        Path("/etc/mirrord/pw"),
    )


def _renamed(path: tuple[str | int, ...], new_name: str) -> dict[str, Any]:
    data = minimal()
    node = _parent(data, path)
    node[new_name] = node.pop(path[-1])
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            _renamed(("origin",), "orign"),
            "origin: missing required section (found 'orign': did you mean 'origin'?)",
        ),
        (
            _renamed(("repositories", 0, "arches"), "arch"),
            "repositories[0].arches: missing required key (found 'arch': did you mean 'arches'?)",
        ),
        (
            _renamed(("storage", "path"), "pth"),
            "storage.path: missing required key (found 'pth': did you mean 'path'?)",
        ),
        (
            _broken(("metrcs",), {"listen": False}),
            "metrcs: unknown key (did you mean 'metrics'?)",
        ),
        (
            _broken(("fetch",), {"rate_limt": "5MB/s"}),
            "fetch.rate_limt: unknown key (did you mean 'rate_limit'?)",
        ),
        (
            _broken(("origin", "colour"), "blue"),
            "origin.colour: unknown key (known keys here: allow_untrusted, keys, url)",
        ),
        (
            _broken(("origin", "url"), None, delete=True),
            "origin.url: missing required key",
        ),
    ],
)
def test_typos_are_named_with_what_was_meant(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert str(caught.value) == message


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config(["a", "list"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("origin:\n  url: [unclosed\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    """``data`` as a file, its storage and publish roots moved under ``tmp_path``."""
    data["storage"]["path"] = str(tmp_path / "storage")
    data["publish"]["path"] = str(tmp_path / "published")
    return write_yaml(tmp_path / "mirrord.yaml", data)


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    data = minimal()
    data["origin"]["keys"] = str(FIXTURES / "keys")
    result = run_mirrord("check-config", "--config", str(_write(tmp_path, data)))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "3 keys" in result.stdout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["publish"].update(grace="later"), "publish.grace:"),
        (lambda d: d.update(bogus=1), "bogus: unknown key"),
        (lambda d: d["origin"].update(keys="/nonexistent/keys"), "origin.keys: directory"),
        (lambda d: d["origin"].pop("url"), "origin.url: missing required key"),
        (lambda d: d.update(orign=d.pop("origin")), "origin: missing required section (found"),
    ],
)
def test_check_config_rejects_with_key_path_and_no_traceback(
    tmp_path: Path, change: Any, expected: str
) -> None:
    data = minimal()
    data["origin"]["keys"] = str(FIXTURES / "keys")
    change(data)
    result = run_mirrord("check-config", "--config", str(_write(tmp_path, data)))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.count("\n") == 1


def test_check_config_rejects_an_unreadable_keys_dir(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "broken.rsa.pub").write_text("not a key")
    data = minimal()
    data["origin"]["keys"] = str(keys)
    result = run_mirrord("check-config", "--config", str(_write(tmp_path, data)))
    assert result.returncode == 2
    assert "origin.keys" in result.stderr and "not a PEM public key" in result.stderr


def test_announce_is_off_unless_configured_and_checks_its_topic_prefix() -> None:
    assert parse_config(_broken(("push",), {"announce": False})).push.announce is None
    url = "mqtt://127.0.0.1:18831"
    announce = parse_config(_broken(("push",), {"announce": {"url": url}})).push.announce
    assert announce == AnnounceConfig(url=url)
    assert (announce.topic_prefix, announce.qos, announce.retain) == (None, 0, False)
    full = {"url": url, "topic_prefix": "rsync/t1.example.org", "qos": 1, "retain": True}
    announce = parse_config(_broken(("push",), {"announce": full})).push.announce
    assert announce is not None and announce.topic_prefix == "rsync/t1.example.org"
    assert (announce.qos, announce.retain, announce.port) == (1, True, 18831)
    for prefix, reason in (("rsync/#", "'#'"), ("rsync/+/x", "'+'"), ("rsync/", "stray")):
        with pytest.raises(ConfigError) as caught:
            parse_config(_broken(("push",), {"announce": {"url": url, "topic_prefix": prefix}}))
        assert caught.value.key_path == "push.announce.topic_prefix"
        assert reason in caught.value.reason
    for key, bad in (("qos", 2), ("retain", "yes"), ("url", "http://b")):
        with pytest.raises(ConfigError) as caught:
            parse_config(_broken(("push",), {"announce": {"url": url, key: bad}}))
        assert caught.value.key_path == f"push.announce.{key}"


def test_releases_section_defaults_and_errors() -> None:
    assert parse_config(minimal()).releases is None
    assert parse_config({**minimal(), "releases": False}).releases is None
    releases = parse_config({**minimal(), "releases": {}}).releases
    assert releases is not None
    assert (releases.branches, releases.arches, releases.files) == (
        ("all",),
        ("all",),
        ("MIRRORS.txt",),
    )
    assert releases.latest_stable and releases.interval == 600
    chosen = parse_config({**minimal(), "releases": {"branches": ["v3.20", "edge"]}}).releases
    assert chosen is not None and chosen.branches == ("v3.20", "edge")
    with pytest.raises(ConfigError, match=r"releases\.arches: 'all' stands alone"):
        parse_config({**minimal(), "releases": {"arches": ["all", "x86_64"]}})
    with pytest.raises(ConfigError, match=r"releases\.branches\[0\]"):
        parse_config({**minimal(), "releases": {"branches": ["../etc"]}})
    with pytest.raises(ConfigError, match=r"releases\.max_file_bytes"):
        parse_config({**minimal(), "releases": {"max_file_bytes": "lots"}})
