"""``.sha256``/``.sha512`` sidecars, and what a releases directory promises of each file.

Pure. A sidecar is ``sha256sum``/``sha512sum`` output: ``<hex>  <name>``
(``*<name>`` in binary mode), one line for the file it sits beside.
``expectations`` joins the sidecars and ``latest-releases.yaml`` of one
directory into the size and digests each file must have before it may be
published; two sources that disagree refuse the directory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mirrord.alpine.latestreleases import LATEST_RELEASES, ReleaseEntry
from mirrord.core.errors import ChecksumFormatError, ChecksumMismatchError

SIDECAR_SUFFIXES = {".sha256": "sha256", ".sha512": "sha512"}
MAX_SIDECAR_BYTES = 64 << 10
_LENGTH = {"sha256": 64, "sha512": 128}
_LINE = re.compile(r"(?P<hex>[0-9a-fA-F]+)(?:\s+\*?(?P<name>\S.*))?")


def sidecar_of(name: str) -> tuple[str, str] | None:
    """``x.iso.sha256`` -> ("x.iso", "sha256"); a name that is no sidecar -> None."""
    for suffix, algorithm in SIDECAR_SUFFIXES.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], algorithm
    return None


def parse_sidecar(data: bytes, path: str, algorithm: str, target: str) -> str:
    """The digest a sidecar gives for ``target``; ChecksumFormatError if it gives none."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise ChecksumFormatError(path, f"sidecar larger than {MAX_SIDECAR_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ChecksumFormatError(path, "sidecar is not UTF-8 text") from None
    found: str | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if match is None or len(match["hex"]) != _LENGTH[algorithm]:
            raise ChecksumFormatError(path, f"not a {algorithm}sum line: {line[:100]!r}")
        named = match["name"]
        if named is not None and named.rsplit("/", 1)[-1] != target:
            continue  # a line for another file
        if found is not None and found != match["hex"].lower():
            raise ChecksumFormatError(path, f"two different {algorithm} digests for {target}")
        found = match["hex"].lower()
    if found is None:
        raise ChecksumFormatError(path, f"no {algorithm} line for {target}")
    return found


@dataclass(frozen=True, slots=True)
class Expected:
    """What a file must be before it is published; no digest means size + Last-Modified only."""

    size: int | None = None
    sha256: str | None = None
    sha512: str | None = None
    sources: tuple[str, ...] = ()

    @property
    def verified(self) -> bool:
        return self.sha256 is not None or self.sha512 is not None


def expectations(
    directory: str,
    files: Iterable[str],
    sidecars: Mapping[str, Mapping[str, str]],
    releases: Iterable[ReleaseEntry],
) -> dict[str, Expected]:
    """Per file of ``files``: the joined promises of its sidecars and its yaml entry.

    ``sidecars`` maps a file name to {algorithm: digest} as read from its
    sidecars. A yaml entry or a sidecar for a file the directory does not hold
    is a ChecksumFormatError; a sidecar that disagrees with the yaml is a
    ChecksumMismatchError. Both refuse the whole directory.
    """
    present = set(files)
    by_file = {entry.file: entry for entry in releases}
    for name in sorted((set(by_file) | set(sidecars)) - present):
        what = LATEST_RELEASES if name in by_file else "a sidecar"
        raise ChecksumFormatError(f"{directory}/{name}", f"listed by {what} but not present")
    result: dict[str, Expected] = {}
    for name in sorted(present):
        entry = by_file.get(name)
        side = sidecars.get(name, {})
        digests: dict[str, str | None] = {"sha256": None, "sha512": None}
        sources: list[str] = []
        for algorithm in digests:
            from_yaml = getattr(entry, algorithm) if entry is not None else None
            from_side = side.get(algorithm)
            if from_yaml is not None and from_side is not None and from_yaml != from_side:
                raise ChecksumMismatchError(
                    f"{directory}/{name}",
                    f"{name}.{algorithm} against {LATEST_RELEASES}",
                    from_yaml,
                    from_side,
                )
            digests[algorithm] = from_yaml or from_side
            if from_side is not None:
                sources.append(f"{name}.{algorithm}")
        if entry is not None:
            sources.insert(0, LATEST_RELEASES)
        result[name] = Expected(
            size=entry.size if entry is not None else None,
            sha256=digests["sha256"],
            sha512=digests["sha512"],
            sources=tuple(sources),
        )
    return result


@dataclass(frozen=True, slots=True)
class FileDigest:
    sha256: str
    sha512: str
    size: int


class FileDigester:
    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512()
        self._size = 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        self._sha256.update(chunk)
        self._sha512.update(chunk)
        self._size += len(chunk)

    def finish(self) -> FileDigest:
        return FileDigest(self._sha256.hexdigest(), self._sha512.hexdigest(), self._size)


def check_file(path: str, expected: Expected, digest: FileDigest) -> None:
    """Raise ChecksumMismatchError unless ``digest`` is what ``expected`` promises."""
    if expected.size is not None and digest.size != expected.size:
        raise ChecksumMismatchError(path, "size", str(expected.size), str(digest.size))
    if expected.sha256 is not None and digest.sha256 != expected.sha256:
        raise ChecksumMismatchError(path, "sha256", expected.sha256, digest.sha256)
    if expected.sha512 is not None and digest.sha512 != expected.sha512:
        raise ChecksumMismatchError(path, "sha512", expected.sha512, digest.sha512)
