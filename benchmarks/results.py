"""What a scenario hands the report: tables of figures, goal checks, commands. Pure values."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

NOT_INSTALLED = "not installed"
MISSING = "n/a"


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class GoalCheck:
    goal: str  # what the project promises, in words
    value: str  # the figure it is held against, formatted
    met: bool | None  # None: could not be measured (say why in value)


@dataclass(frozen=True)
class ScenarioResult:
    name: str  # the --only name, also the section anchor
    title: str
    summary: str  # the set-up in a few sentences
    tables: tuple[Table, ...] = ()
    notes: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    goals: tuple[GoalCheck, ...] = ()
    # tool -> figure -> value, for summaries that combine scenarios
    figures: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    error: str | None = None


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def fmt(value: float | None, digits: int = 2) -> str:
    """A figure for a table cell; None becomes n/a."""
    if value is None or value != value:  # None or NaN
        return MISSING
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def fmt_int(value: float | None) -> str:
    if value is None or value != value:
        return MISSING
    return f"{round(value):,}"


def ratio(peer: float | None, mine: float | None) -> str:
    """peer / mirrord, so more than 1 means mirrord is faster (or smaller)."""
    if peer is None or mine is None or mine <= 0 or peer != peer or mine != mine:
        return MISSING
    return f"{peer / mine:.2f}x"


def mib(value: float) -> float:
    return value / (1024 * 1024)


def megabytes(value: float) -> float:
    return value / 1e6
