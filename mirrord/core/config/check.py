"""Reading one YAML mapping against a dataclass, and the checks that turn values into settings.

Each check takes the value and its key path and returns the setting or raises
ConfigError naming that path.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from mirrord.core.errors import ConfigError
from mirrord.core.model import valid_segment
from mirrord.core.units import parse_duration, parse_rate, parse_size

T = TypeVar("T")


_MISSING: Any = object()


class Section:
    """Reads one mapping against the fields of the dataclass it becomes, naming key paths."""

    def __init__(self, data: object, path: str, schema: type) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(path or "(top level)", f"expected a mapping, got {kind(data)}")
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

    def section(self, key: str, schema: type, *, required: bool = True) -> Section:
        if key not in self.data:
            if required:
                raise self._missing(key, "missing required section")
            return Section({}, self.where(key), schema)
        return Section(self.data[key], self.where(key), schema)

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


def kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, f"expected a non-empty string, got {kind(value)}")
    return value


def boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {kind(value)}")
    return value


def path(value: object, where: str) -> Path:
    text = string(value, where)
    if "\0" in text:
        raise ConfigError(where, "a path cannot contain NUL")
    return Path(text).expanduser()


def optional_path(value: object, where: str) -> Path | None:
    if value is False:
        return None
    return path(value, where)


def int_range(low: int, high: int) -> Callable[[object, str], int]:
    def convert(value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"expected a whole number, got {kind(value)}")
        if not low <= value <= high:
            raise ConfigError(where, f"must be between {low} and {high}, got {value}")
        return value

    return convert


def fraction(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, f"expected a fraction between 0 and 1, got {kind(value)}")
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(where, f"must be between 0 and 1, got {value}")
    return float(value)


def duration(minimum: float) -> Callable[[object, str], float]:
    def convert(value: object, where: str) -> float:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(where, f"expected a duration such as 60 or 5m, got {kind(value)}")
        try:
            seconds = parse_duration(value)
        except ValueError as error:
            raise ConfigError(where, str(error)) from None
        if seconds < minimum:
            raise ConfigError(where, f"must be at least {minimum:g} seconds, got {value!r}")
        return seconds

    return convert


def size(value: object, where: str) -> int:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ConfigError(where, f"expected a size such as 512MB, got {kind(value)}")
    try:
        parsed = parse_size(value)
    except ValueError as error:
        raise ConfigError(where, str(error)) from None
    if parsed <= 0:
        raise ConfigError(where, "must be positive")
    return parsed


def size_or_zero(value: object, where: str) -> int:
    return 0 if value in (0, "0") else size(value, where)


def rate(value: object, where: str) -> float | None:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(where, f"expected a rate such as 50MB/s or unlimited, got {kind(value)}")
    try:
        return parse_rate(value)
    except ValueError as error:
        raise ConfigError(where, str(error)) from None


def segments(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(where, f"expected a non-empty list of names, got {kind(value)}")
    names: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not valid_segment(item):
            raise ConfigError(
                f"{where}[{i}]",
                f"expected a name of letters, digits, '.', '_', '+', '-', got {kind(item)}",
            )
        if item in names:
            raise ConfigError(f"{where}[{i}]", f"{item!r} is listed twice")
        names.append(item)
    return tuple(names)


def segment(value: object, where: str) -> str:
    if not isinstance(value, str) or not valid_segment(value):
        raise ConfigError(
            where, f"expected a name of letters, digits, '.', '_', '+', '-', got {kind(value)}"
        )
    return value


def url(value: object, where: str) -> str:
    text = string(value, where).rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(where, f"expected an http:// or https:// URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ConfigError(where, "the base URL cannot have a query or fragment")
    return text


def listen(value: object, where: str) -> str | None:
    if value is False:
        return None
    text = string(value, where)
    host, sep, port = text.rpartition(":")
    if (
        not sep
        or not host
        or not (port.isascii() and port.isdigit())
        or not 0 <= int(port) <= 65535
    ):
        raise ConfigError(where, f"expected host:port such as 127.0.0.1:9469, got {value!r}")
    return text


def optional_section(parent: Section, key: str, schema: type) -> Section | None:
    raw = parent.data.get(key)
    return None if raw is None or raw is False else parent.section(key, schema)


def urls(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(where, f"expected a list of URLs, got {kind(value)}")
    return tuple(url(item, f"{where}[{i}]") for i, item in enumerate(value))


def argv(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            where, f"expected a non-empty list (program and arguments), got {kind(value)}"
        )
    return tuple(string(item, f"{where}[{i}]") for i, item in enumerate(value))


def choice(options: tuple[str, ...]) -> Callable[[object, str], str]:
    def convert(value: object, where: str) -> str:
        if value not in options:
            raise ConfigError(where, f"expected one of {', '.join(options)}, got {kind(value)}")
        return str(value)

    return convert
