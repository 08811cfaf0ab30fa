"""Small value types shared by every layer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A branch, repo or arch becomes a directory name on disk and a URL path
# segment: keep it to a conservative alphabet and forbid dot-only names.
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def valid_segment(name: str) -> bool:
    return bool(_SEGMENT.match(name)) and ".." not in name


@dataclass(frozen=True, order=True, slots=True)
class ArchKey:
    """One published unit: ``<branch>/<repo>/<arch>``."""

    branch: str
    repo: str
    arch: str

    def __str__(self) -> str:
        return f"{self.branch}/{self.repo}/{self.arch}"

    @property
    def parts(self) -> tuple[str, str, str]:
        return (self.branch, self.repo, self.arch)

    @classmethod
    def parse(cls, text: str) -> ArchKey:
        parts = text.strip("/").split("/")
        if len(parts) != 3 or not all(valid_segment(p) for p in parts):
            raise ValueError(f"expected <branch>/<repo>/<arch>, got {text!r}")
        return cls(parts[0], parts[1], parts[2])


@dataclass(frozen=True, slots=True)
class PackageRef:
    """What a signed index promises about one package file."""

    filename: str
    checksum: str  # the index's C: field, "Q1" + base64(sha1)
    size: int  # the index's S: field, bytes of the whole .apk

    @property
    def identity(self) -> tuple[str, int]:
        return (self.checksum, self.size)


@dataclass(frozen=True, slots=True)
class PublishedFile:
    """One package file of a published snapshot."""

    filename: str
    sha256: str  # its store key: "apk:<hex>" or a plain SHA-256 (mirrord.core.objectkey)
    size: int
    package: str  # the package name (P:), for the mass-deletion guard


@dataclass(frozen=True, slots=True)
class TreeFile:
    """A published file of a releases directory, as recorded in its manifest."""

    sha256: str
    size: int
    verified_by: tuple[str, ...]  # sidecars / yaml that bound it; () = size + Last-Modified
    last_modified: str | None = None
    listed_mtime: str | None = None


@dataclass
class TreeManifest:
    """What one releases directory publishes, and what is waiting out its grace."""

    files: dict[str, TreeFile] = field(default_factory=dict)
    gone_since: dict[str, float] = field(default_factory=dict)  # relpath -> first seen gone
    published_at: float | None = None
    snapshot: int | None = None  # the remembered snapshot it serves (see TreeSnapshot)


@dataclass(frozen=True)
class TreeSnapshot:
    """What one releases directory listed at a publish: kept to roll back to.

    ``files`` holds the files the origin listed then (not the ones waiting out
    the grace). Ids count per directory, from 1.
    """

    id: int
    created_at: float
    files: dict[str, TreeFile]
    forced: bool = False

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files.values())
