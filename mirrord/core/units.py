"""Human units in configuration and on the control socket: sizes, rates, durations."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_BIT_UNITS = {
    "bit": 1,
    "kbit": 1000,
    "mbit": 1000**2,
    "gbit": 1000**3,
    "kibit": 1024,
    "mibit": 1024**2,
    "gibit": 1024**3,
}
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "ms": 0.001}

_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int | float) -> int:
    """``"64MiB"`` -> 67108864; plain numbers are bytes. Raises ValueError."""
    if isinstance(text, bool):
        raise ValueError("expected a size such as 512MB, got a boolean")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return int(text)
    match = _NUMBER_UNIT.match(text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 512MB or 2GiB, got {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_rate(text: str | int | float) -> float | None:
    """Bytes per second from ``"50MB/s"``, ``"400Mbit/s"`` or a number.

    ``"unlimited"`` (and ``None``) mean no limit and return None.
    """
    if text is None or (isinstance(text, str) and text.strip().lower() == "unlimited"):
        return None
    if isinstance(text, bool):
        raise ValueError("expected a rate such as 50MB/s, got a boolean")
    if isinstance(text, int | float):
        if text <= 0:
            raise ValueError(f"a rate must be positive, got {text}")
        return float(text)
    if not isinstance(text, str):  # a list or an object from a control request's JSON
        raise TypeError(f"expected a rate such as 50MB/s, got {type(text).__name__}")
    body = text.strip()
    if body.lower().endswith("/s") or body.lower().endswith("ps"):
        body = body[:-2]
    match = _NUMBER_UNIT.match(body)
    if not match:
        raise ValueError(f"expected a rate such as 50MB/s or 400Mbit/s, got {text!r}")
    value = float(match.group(1))
    unit = match.group(2).lower()
    if unit in _BIT_UNITS:
        rate = value * _BIT_UNITS[unit] / 8
    elif unit in _SIZE_UNITS:
        rate = value * _SIZE_UNITS[unit]
    else:
        raise ValueError(f"unknown unit {match.group(2)!r} in rate {text!r}")
    if rate <= 0:
        raise ValueError(f"a rate must be positive, got {text!r}")
    return rate


def parse_duration(text: str | int | float) -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"5m"``, ``"1h"``, ``"2d"`` or a number."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 60 or 5m, got a boolean")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {text}")
        return float(text)
    match = _NUMBER_UNIT.match(text)
    if not match or match.group(2).lower() not in _DURATION_UNITS:
        raise ValueError(f"expected a duration such as 60, 90s, 5m or 1h, got {text!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def format_mib(count: int) -> str:
    """A size as a config file writes it, in MiB: ``4MiB`` (``parse_size`` reads it back)."""
    return f"{count / (1 << 20):g}MiB"


def format_rate(rate: float | None) -> str:
    return "unlimited" if rate is None else f"{format_bytes(rate)}/s"
