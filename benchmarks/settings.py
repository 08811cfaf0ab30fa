"""The sizes of every data set and scenario, for a full run and for ``--quick``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    # full-sync sets
    release: int  # packages sampled over the whole real size distribution
    release_max_size: int | None  # quick: only real packages up to this size
    small_heavy: int  # packages drawn from the smaller part of the distribution
    small_heavy_fraction: float  # "smaller part": this share of the real index, by size
    small_heavy_max_size: int | None
    large_files: int
    large_file_bytes: int
    # incremental pass over the release set
    added: int
    rebuilt: int
    removed: int
    # nothing changed
    unchanged_repos: int
    unchanged_arches: int
    unchanged_packages: int  # per arch
    daemon_interval: int  # seconds between the daemon's passes
    # publish cost
    publish_arch_sizes: tuple[int, ...]
    publish_changes: int
    # memory
    memory_packages: int
    memory_repos: int
    # rate limit
    rate_limit: str
    rate_limit_bytes: float
    burst: str
    burst_bytes: int
    rate_window: int  # seconds averaged
    # shared
    tiny_payload: int  # payload of the "small packages" used by publish and memory
    fetch_concurrency: int = 64  # mirrord's default: per_host 16 x pipeline 4
    # freshness: generations of a live origin, seconds between them, the polling-only interval
    freshness_generations: int = 50
    freshness_spacing: float = 1.5
    freshness_poll_interval: int = 5
    # wan: full sync over a slow link, at each RTT. A set with the real tree's ratio of
    # total bytes to largest file (about 26: 3.4 GB, largest 130 MB), which bounds what
    # parallel connections can gain when each connection is capped
    wan_packages: int = 600
    wan_max_size: int | None = 4_000_000
    wan_rtts_ms: tuple[int, ...] = (20, 80)
    wan_rate_mbit: int = 50  # per connection


FULL = Sizes(
    release=2000,
    release_max_size=None,
    small_heavy=20_000,
    small_heavy_fraction=0.88,
    small_heavy_max_size=None,
    large_files=20,
    large_file_bytes=50_000_000,
    added=50,
    rebuilt=50,
    removed=20,
    unchanged_repos=10,
    unchanged_arches=10,
    unchanged_packages=3,
    daemon_interval=1,
    publish_arch_sizes=(1_000, 20_000, 100_000),
    publish_changes=100,
    memory_packages=100_000,
    memory_repos=4,
    rate_limit="20MB/s",
    rate_limit_bytes=20e6,
    burst="4MiB",
    burst_bytes=4 * 1024 * 1024,
    rate_window=30,
    tiny_payload=600,
)

QUICK = Sizes(
    release=40,
    release_max_size=8_000,
    small_heavy=60,
    small_heavy_fraction=0.5,
    small_heavy_max_size=8_000,
    large_files=4,
    large_file_bytes=3_000_000,
    added=5,
    rebuilt=5,
    removed=2,
    unchanged_repos=10,
    unchanged_arches=10,
    unchanged_packages=1,
    daemon_interval=1,
    publish_arch_sizes=(50, 200, 800),
    publish_changes=10,
    memory_packages=800,
    memory_repos=4,
    rate_limit="4MB/s",
    rate_limit_bytes=4e6,
    burst="1MiB",
    burst_bytes=1024 * 1024,
    rate_window=30,  # capped by how long the quick transfer lasts
    tiny_payload=300,
    freshness_generations=4,
    freshness_spacing=1.1,
    freshness_poll_interval=2,
    wan_packages=20,
    wan_max_size=8_000,
)
