"""The side-by-side the throughput issue asks for, taken from the full-sync scenarios."""

from __future__ import annotations

from collections.abc import Mapping

from benchmarks.peers import HTTP_PEERS
from benchmarks.results import NOT_INSTALLED, ScenarioResult, Table, fmt, ratio

TOOLS = ("mirrord", HTTP_PEERS[2].name, HTTP_PEERS[1].name)  # mirrord, aria2c, curl


def throughput(results: Mapping[str, ScenarioResult]) -> ScenarioResult | None:
    """Files/s on the small-heavy mix and MB/s on large files, or None without both runs."""
    small, large = results.get("full-small-heavy"), results.get("full-large")
    if small is None or large is None or small.error or large.error:
        return None

    def cells(result: ScenarioResult, key: str, digits: int) -> list[str]:
        values = [result.figures.get(tool, {}).get(key) for tool in TOOLS]
        shown = [NOT_INSTALLED if v is None else fmt(v, digits) for v in values]
        # a throughput ratio: mirrord / peer, so > 1 means mirrord is faster here too
        ratios = [ratio(values[0], v) if v is not None else NOT_INSTALLED for v in values[1:]]
        return shown + ratios

    heads = (*TOOLS, *(f"mirrord/{tool}" for tool in TOOLS[1:]))
    rows = (
        ("files/s, small-heavy mix", *cells(small, "files_per_s", 0)),
        ("MB/s, large files", *cells(large, "mb_per_s", 1)),
    )
    return ScenarioResult(
        name="throughput",
        title="Unlimited throughput, side by side",
        summary=(
            "For the throughput issue: the same files from the same nginx, no rate limit. "
            "Files/s on the realistic small-heavy mix and MB/s on large files, taken from "
            "the full-sync scenarios above (same runs, same medians)."
        ),
        tables=(Table(("figure", *heads), rows),),
    )
