"""The one error tree of mirrord.

Every error carries the data an operator needs (url, path, key, expected and
actual values) as attributes, and a one-line human message as ``str(error)``.
Third-party exceptions are mapped into this tree where they enter mirrord.
"""

from __future__ import annotations

import time

from mirrord.core.units import format_bytes


class MirrordError(Exception):
    """Root of every error mirrord raises on purpose."""


class ConfigError(MirrordError):
    """A configuration file that cannot be used; ``key_path`` names where."""

    def __init__(self, key_path: str, reason: str) -> None:
        self.key_path = key_path
        self.reason = reason
        super().__init__(f"{key_path}: {reason}" if key_path else reason)


class LockHeldError(MirrordError):
    """Another mirrord process owns the storage directory."""

    def __init__(self, path: str, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(f"storage {path} is locked by another mirrord ({holder})")


# --- the origin's index ------------------------------------------------------


class IndexRejectedError(MirrordError):
    """An index that must not be published."""


class IndexFormatError(IndexRejectedError):
    """Not a well-formed APKINDEX.tar.gz."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"malformed index: {reason}")


class SignatureError(IndexRejectedError):
    """The index is unsigned, signed by an untrusted key, or tampered with."""

    def __init__(self, key_name: str | None, reason: str) -> None:
        self.key_name = key_name
        self.reason = reason
        where = f"key {key_name}: " if key_name is not None else ""
        super().__init__(f"signature check failed: {where}{reason}")


class UnsafeIndexError(IndexRejectedError):
    """An index entry that a hostile or broken origin could use against us."""

    def __init__(self, field: str, value: str, reason: str, package: str | None = None) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.package = package
        where = f"package {package!r}: " if package else ""
        super().__init__(f"unsafe index: {where}{field}={value!r}: {reason}")


# --- packages ------------------------------------------------------------------


class PackageVerifyError(MirrordError):
    """A downloaded package does not match what the signed index promises."""

    def __init__(self, filename: str, what: str, expected: str, actual: str) -> None:
        self.filename = filename
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(f"{filename}: {what} mismatch: expected {expected}, got {actual}")


class PackageFormatError(PackageVerifyError):
    """The bytes are not an apk v2 package at all (or exceed sane limits)."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(filename, "format", "apk v2 package", reason)
        self.reason = reason


# --- releases trees (releases/, top-level files) ------------------------------


class TreeRejectedError(MirrordError):
    """A directory of a releases tree that must not be published as the origin shows it."""


class ListingFormatError(TreeRejectedError):
    """A directory listing that is none of the formats we read (or is malformed)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: unreadable directory listing: {reason}")


class ChecksumFormatError(TreeRejectedError):
    """A ``.sha256``/``.sha512`` sidecar or ``latest-releases.yaml`` that cannot be trusted."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ChecksumMismatchError(TreeRejectedError):
    """A file whose bytes (or two of its checksum sources) disagree: refused, old state kept."""

    def __init__(self, path: str, what: str, expected: str, actual: str) -> None:
        self.path = path
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(f"{path}: {what} mismatch: expected {expected}, got {actual}")


# --- talking to the origin -----------------------------------------------------


class OriginError(MirrordError):
    """The origin did not give us what we asked for."""

    transient = False

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        self.url = url
        self.reason = reason
        self.status = status
        super().__init__(f"{url}: {reason}")


class TransientOriginError(OriginError):
    """Worth retrying: connection trouble, 5xx, 429, stalls, short bodies."""

    transient = True

    def __init__(
        self, url: str, reason: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(url, reason, status)
        self.retry_after = retry_after


class PermanentOriginError(OriginError):
    """Not worth retrying this pass: 404, 403, other 4xx, absurd responses."""


# --- our own files -------------------------------------------------------------


class StoreError(MirrordError):
    """The content store or state database cannot do what was asked."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DiskSpaceError(StoreError):
    """A pass refused before its downloads: what it would write does not fit."""

    def __init__(self, path: str, needed: int, free: int, reserve: int, others: int) -> None:
        self.needed = needed
        self.free = free
        self.reserve = reserve
        self.others = others
        busy = f" and syncs in progress will write {format_bytes(others)}" if others else ""
        super().__init__(
            path,
            f"not enough disk space: this sync would write {format_bytes(needed)}{busy}, "
            f"{format_bytes(free)} is free and storage.min_free keeps {format_bytes(reserve)}; "
            "nothing was downloaded and the last snapshot stays published. Free some space "
            "(or 'mirrord ctl gc'), or lower storage.min_free",
        )


class StateDamagedError(StoreError):
    """The state database is missing, truncated or corrupt: ``mirrord recover`` rebuilds it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            path,
            f"the state database is damaged ({reason}); stop mirrord and run "
            "'mirrord recover' (it rebuilds the database from the object store and the "
            "published tree, downloading nothing)",
        )
        self.reason = reason


class PublishError(MirrordError):
    """A publish of one branch/repo/arch was refused or failed."""

    def __init__(self, arch_key: str, reason: str) -> None:
        self.arch_key = arch_key
        self.reason = reason
        super().__init__(f"{arch_key}: {reason}")


def said_beside(error: MirrordError) -> str:
    """The error as a line that names its arch or directory already says it."""
    return error.reason if isinstance(error, PublishError) else str(error)


class MassDeletionError(PublishError):
    """The new index drops too many package names: refuse until forced."""

    def __init__(
        self,
        arch_key: str,
        dropped: int,
        previous: int,
        limit: float,
        examples: tuple[str, ...] = (),
    ) -> None:
        self.dropped = dropped
        self.previous = previous
        self.limit = limit
        self.examples = examples
        fraction = dropped / previous if previous else 1.0
        named = ""
        if examples:
            more = f" and {dropped - len(examples)} more" if dropped > len(examples) else ""
            named = f" ({', '.join(examples)}{more})"
        super().__init__(
            arch_key,
            f"refusing to publish: the new index drops {dropped} of {previous} package names"
            f"{named} ({fraction:.1%} > publish.max_delete_fraction {limit:.1%}); "
            "if the origin really removed them, force this publish once: "
            f"'mirrord ctl publish --force {arch_key}' (daemon) "
            f"or 'mirrord sync --force {arch_key}'",
        )


class OlderIndexError(PublishError):
    """The origin serves an older index than the one published: refuse until forced."""

    def __init__(self, arch_key: str, origin_mtime: float, published_mtime: float) -> None:
        self.origin_mtime = origin_mtime
        self.published_mtime = published_mtime
        super().__init__(
            arch_key,
            "refusing to publish: the origin serves an older index (Last-Modified "
            f"{_http_date(origin_mtime)}) than the one published ({_http_date(published_mtime)}): "
            "an origin server behind the others, a restore from backup, or an old index "
            "replayed; the published one stays. If the origin really went back, force this "
            f"publish once: 'mirrord ctl publish --force {arch_key}' (daemon) "
            f"or 'mirrord sync --force {arch_key}'",
        )


def _http_date(timestamp: float) -> str:
    """As a Last-Modified header says it (``curl -I``); email.utils is too heavy to import
    here, where every fetch worker imports this module."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(timestamp))


class TreeDeletionError(PublishError):
    """The origin dropped too many files of a releases directory at once: refuse."""

    def __init__(
        self, directory: str, dropped: int, previous: int, limit: float, examples: tuple[str, ...]
    ) -> None:
        self.dropped = dropped
        self.previous = previous
        self.limit = limit
        self.examples = examples
        fraction = dropped / previous if previous else 1.0
        super().__init__(
            directory,
            f"refusing to publish: the origin dropped {dropped} of {previous} files "
            f"({', '.join(examples)}) ({fraction:.1%} > publish.max_delete_fraction "
            f"{limit:.1%}); if the origin really removed them, run "
            f"'mirrord sync --force {directory}' once",
        )


class FleetSupersededError(PublishError):
    """Fleet mode: another node staged a newer index of this arch; ours must not go live."""

    def __init__(self, arch_key: str, nodes: tuple[str, ...]) -> None:
        self.nodes = nodes
        super().__init__(
            arch_key,
            f"not made live: {', '.join(nodes)} staged a newer index (the origin moved on)",
        )


class EtcdError(MirrordError):
    """Fleet mode: the etcd cluster did not answer, or answered something unusable."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"etcd {url}: {reason}")


class EtcdLeaseLostError(EtcdError):
    """The lease a key was to hang on has expired (or was revoked): join again."""


class ObjectStoreError(MirrordError):
    """The S3 bucket refused, failed or returned something else than was sent."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"bucket object {key}: {reason}")


class DownloadsFailedError(MirrordError):
    """Some packages an arch's new index lists could not be stored: nothing was published."""

    def __init__(
        self, arch_key: str, failed: int, wanted: int, first: MirrordError, note: str = ""
    ) -> None:
        self.arch_key = arch_key
        self.failed = failed
        self.wanted = wanted
        self.first = first
        why = f" ({note})" if note else ""
        super().__init__(f"{failed} of {wanted} packages failed{why}; first: {first}")


class ShuttingDownError(MirrordError):
    """Work that was queued but not started when the daemon began to stop."""

    def __init__(self) -> None:
        super().__init__("mirrord is shutting down; not started")


class QueueClosed(MirrordError):
    """A put on a closed work queue, or a get on a closed and drained one."""

    def __init__(self) -> None:
        super().__init__("queue is closed")


class InternalError(MirrordError):
    """A bug caught at a boundary so one package or arch fails, not the daemon."""


class WorkerProtocolError(MirrordError, ValueError):
    """A line between the daemon and a fetch worker process that breaks the protocol."""

    def __init__(self, reason: str, line: bytes = b"") -> None:
        self.reason = reason
        self.line = line
        where = f": {line[:80]!r}" if line else ""
        super().__init__(f"fetch worker protocol: {reason}{where}")


class ControlError(MirrordError):
    """An operator request that cannot be carried out; ``code`` goes on the wire."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class ProtocolError(ControlError):
    """A control request that is not well-formed; answered with ``code``, never run."""

    def __init__(self, code: str, message: str, request_id: object = None) -> None:
        super().__init__(code, message)
        self.message = message
        self.request_id = request_id


# --- downstream: CDN purges ----------------------------------------------------------


class PurgeError(MirrordError):
    """A purge the CDN (or the hook) did not take; ``transient`` ones are tried again."""

    def __init__(self, target: str, where: str, reason: str, *, transient: bool) -> None:
        self.target = target  # http, fastly or hook
        self.where = where  # the URL purged, the API endpoint or the command (never a token)
        self.reason = reason
        self.transient = transient
        super().__init__(f"{target} purge of {where}: {reason}")
