"""Prometheus metrics on a private registry, one Metrics object per daemon.

Labels come only from small fixed sets: the configured branch/repo/arch,
outcomes and failure reasons. Never package names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mirrord.core.model import ArchKey

ARCH_LABELS = ("branch", "repo", "arch")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._arch_children: dict[tuple[int, ArchKey, str], Counter] = {}
        r = self.registry
        self.fetched_bytes = Counter(
            "mirrord_fetched_bytes",
            'Bytes received from the origin: packages, and release files (repo="releases").',
            [*ARCH_LABELS, "outcome"],
            registry=r,
        )
        self.fetched_files = Counter(
            "mirrord_fetched_files",
            "Package downloads finished, by outcome (stored, failed).",
            [*ARCH_LABELS, "outcome"],
            registry=r,
        )
        self.verification_failures = Counter(
            "mirrord_verification_failures",
            "Packages or indexes that failed verification, by reason.",
            ["reason"],
            registry=r,
        )
        self.retries = Counter(
            "mirrord_fetch_retries",
            "Download attempts retried, by reason.",
            ["reason"],
            registry=r,
        )
        self.index_polls = Counter(
            "mirrord_index_polls",
            "Index polls of the origin, by result (modified, not_modified, failed).",
            [*ARCH_LABELS, "result"],
            registry=r,
        )
        self.in_flight = Gauge(
            "mirrord_downloads_in_flight", "Package downloads in progress.", registry=r
        )
        self.queue_depth = Gauge(
            "mirrord_fetch_queue_depth", "Package downloads waiting for a worker.", registry=r
        )
        self.healthy = Gauge(
            "mirrord_healthy",
            "1 while GET /health answers 200 (serving a complete, current tree), 0 for 503.",
            registry=r,
        )
        self.rate_limit = Gauge(
            "mirrord_rate_limit_bytes_per_second",
            "The download rate limit in force (+Inf when unlimited).",
            registry=r,
        )
        self.origin_rtt = Gauge(
            "mirrord_origin_rtt_seconds",
            "The origin's round trip, as the kernel measured it on the newest connection.",
            registry=r,
        )
        self.window_bound = Gauge(
            "mirrord_rate_limit_window_bound_bytes_per_second",
            "Under a rate limit: the most the downloads' receive windows carry at the "
            "origin's round trip (below the limit: fetch.burst holds them back). "
            "+Inf when unlimited.",
            registry=r,
        )
        self.sync_duration = Histogram(
            "mirrord_sync_duration_seconds",
            "Wall time of one arch's sync, from its poll to its publish (or failure).",
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400),
            registry=r,
        )
        self.publish_duration = Histogram(
            "mirrord_publish_duration_seconds",
            "Time from all packages stored to the new index live.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.published_packages = Gauge(
            "mirrord_published_packages",
            "Packages in the published index.",
            ARCH_LABELS,
            registry=r,
        )
        self.published_bytes = Gauge(
            "mirrord_published_bytes",
            "Bytes of packages in the published index.",
            ARCH_LABELS,
            registry=r,
        )
        self.origin_last_modified = Gauge(
            "mirrord_origin_index_last_modified_seconds",
            "Last-Modified of the origin's index at the last poll (unix time).",
            ARCH_LABELS,
            registry=r,
        )
        self.published_last_modified = Gauge(
            "mirrord_published_index_last_modified_seconds",
            "Last-Modified of the published index (unix time).",
            ARCH_LABELS,
            registry=r,
        )
        self.last_success = Gauge(
            "mirrord_last_success_timestamp_seconds",
            "When this arch last ended a sync published and up to date (unix time).",
            ARCH_LABELS,
            registry=r,
        )
        self.arch_failing = Gauge(
            "mirrord_arch_failing",
            "1 when this arch's last sync failed or was refused, else 0.",
            ARCH_LABELS,
            registry=r,
        )
        self.publishes = Counter(
            "mirrord_publishes",
            "Snapshot publishes, by outcome (published, refused, failed).",
            [*ARCH_LABELS, "outcome"],
            registry=r,
        )
        self.damaged_objects = Counter(
            "mirrord_damaged_objects",
            "Stored objects a verify found damaged or missing, by kind.",
            ["kind"],
            registry=r,
        )
        self.deleted_files = Counter(
            "mirrord_deleted_files",
            "Published files removed after their grace period.",
            registry=r,
        )
        self.bucket_syncs = Counter(
            "mirrord_bucket_syncs",
            "Passes bringing the S3 bucket to an arch's snapshot, by outcome (done, failed).",
            [*ARCH_LABELS, "outcome"],
            registry=r,
        )
        self.bucket_uploaded_bytes = Counter(
            "mirrord_bucket_uploaded_bytes",
            "Bytes of objects uploaded to the S3 bucket (indexes included).",
            registry=r,
        )
        self.bucket_last_success = Gauge(
            "mirrord_bucket_last_success_timestamp_seconds",
            "When a pass last brought the S3 bucket to this arch's snapshot (unix time).",
            ARCH_LABELS,
            registry=r,
        )
        self.push_connected = Gauge(
            "mirrord_push_connected",
            "1 while subscribed to the push broker (push.mqtt), else 0.",
            registry=r,
        )
        self.push_messages = Counter(
            "mirrord_push_messages",
            "Push messages received, by outcome (started, queued, ignored).",
            ["outcome"],
            registry=r,
        )
        self.push_ignored = Counter(
            "mirrord_push_ignored_messages",
            "Push messages ignored, by reason (too_large, not_utf8, malformed, not_configured).",
            ["reason"],
            registry=r,
        )
        self.announce_connected = Gauge(
            "mirrord_announce_connected",
            "1 while connected to the broker downstream announcements go to (push.announce).",
            registry=r,
        )
        self.announce_messages = Counter(
            "mirrord_announce_messages",
            "Announcements of a publish, by outcome (sent; failed: the broker refused or went "
            "away, sent again after reconnecting; dropped: lost from a full backlog).",
            ["outcome"],
            registry=r,
        )
        self.purges = Counter(
            "mirrord_cdn_purges",
            "Downstream purges after publishes, by target (http, fastly, hook) and outcome "
            "(purged, failed: after every retry).",
            ["target", "outcome"],
            registry=r,
        )
        self.purge_last_failure = Gauge(
            "mirrord_cdn_purge_last_failure_timestamp_seconds",
            "When a downstream purge last failed after every retry, by target (unix time).",
            ["target"],
            registry=r,
        )
        self.purge_retries = Counter(
            "mirrord_cdn_purge_retries",
            "Downstream purges tried again after a transient failure, by target.",
            ["target"],
            registry=r,
        )

        self.background_failures = Counter(
            "mirrord_background_failures",
            "Background jobs of the daemon that failed (the daemon serves on), by task.",
            ["task"],
            registry=r,
        )
        self.disk_refusals = Counter(
            "mirrord_disk_space_refusals",
            "Syncs refused before downloading: the bytes to write exceed free space "
            "minus storage.min_free.",
            ARCH_LABELS,
            registry=r,
        )
        self.older_index_refusals = Counter(
            "mirrord_older_index_refusals",
            "Publishes refused because the origin served an index older (by its "
            "Last-Modified) than the published one.",
            ARCH_LABELS,
            registry=r,
        )
        self.disk_free = Gauge(
            "mirrord_storage_free_bytes",
            "Free bytes on the storage filesystem at the last space check.",
            registry=r,
        )

    @staticmethod
    def labels(key: ArchKey) -> dict[str, str]:
        return {"branch": key.branch, "repo": key.repo, "arch": key.arch}

    def arch_outcome(self, counter: Counter, key: ArchKey, outcome: str) -> Counter:
        """``counter.labels(<key's labels>, outcome=outcome)``, looked up once: the fetch
        path counts every download, and ``labels()`` costs microseconds each time."""
        cache_key = (id(counter), key, outcome)
        child = self._arch_children.get(cache_key)
        if child is None:
            child = counter.labels(**self.labels(key), outcome=outcome)
            self._arch_children[cache_key] = child
        return child


class FleetMetrics:
    """Fleet mode's metrics, on the daemon's registry only when ``fleet:`` is configured
    (an unlabelled gauge would otherwise read 0 on every node: "etcd down")."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.etcd_up = Gauge(
            "mirrord_fleet_etcd_up",
            "Fleet mode: 1 while the etcd cluster answers, 0 when it does not.",
            registry=r,
        )
        self.members = Gauge(
            "mirrord_fleet_members", "Fleet mode: live members as last read from etcd.", registry=r
        )
        self.barriers = Counter(
            "mirrord_fleet_barriers",
            "Fleet mode: staged indexes, by how the wait ended (all: every member staged it; "
            "left_out: stage_timeout passed; alone: etcd unreachable; superseded: a member "
            "staged a newer one).",
            [*ARCH_LABELS, "outcome"],
            registry=r,
        )
        self.wait = Histogram(
            "mirrord_fleet_wait_seconds",
            "Fleet mode: time from staged to allowed live (waiting for the other nodes).",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
