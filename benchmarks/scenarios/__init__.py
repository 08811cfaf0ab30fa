"""One module per scenario; each takes a Bench and returns a ScenarioResult."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.context import Bench
from benchmarks.results import ScenarioResult
from benchmarks.scenarios.bucket import bucket
from benchmarks.scenarios.freshness import freshness
from benchmarks.scenarios.fullsync import full_sync
from benchmarks.scenarios.incremental import incremental
from benchmarks.scenarios.memory import memory
from benchmarks.scenarios.publish import publish_cost
from benchmarks.scenarios.ratelimit import rate_limit
from benchmarks.scenarios.releases import releases_beside
from benchmarks.scenarios.serving import serving, serving_paced
from benchmarks.scenarios.unchanged import unchanged
from benchmarks.scenarios.wan import wan

Scenario = Callable[[Bench], ScenarioResult]


def _full_release(bench: Bench) -> ScenarioResult:
    return full_sync(bench, "full-release", "release", bench.sets.release())


def _full_small_heavy(bench: Bench) -> ScenarioResult:
    return full_sync(bench, "full-small-heavy", "small-heavy", bench.sets.small_heavy())


def _full_large(bench: Bench) -> ScenarioResult:
    return full_sync(bench, "full-large", "large-file", bench.sets.large())


# in the order they run and appear in the report
SCENARIOS: dict[str, Scenario] = {
    "full-release": _full_release,
    "full-small-heavy": _full_small_heavy,
    "full-large": _full_large,
    "incremental": incremental,
    "unchanged": unchanged,
    "publish": publish_cost,
    "memory": memory,
    "rate-limit": rate_limit,
    "freshness": freshness,
    "serving": serving,
    "serving-paced": serving_paced,
    "releases-beside": releases_beside,
    "bucket": bucket,
    "wan": wan,
}
