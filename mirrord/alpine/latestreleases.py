"""``latest-releases.yaml``: what Alpine's release tooling says each latest image is.

Pure parsing and validation. Read with YAML's base loader, so every scalar
stays the string it was written as (``version: 3.20`` is not a float,
``time: 22:53:39`` not a sexagesimal integer); each field is then checked
here. An entry's ``file`` becomes a path component of the mirror, so it must
be a plain name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from mirrord.alpine.listing import name_problem
from mirrord.core.errors import ChecksumFormatError

LATEST_RELEASES = "latest-releases.yaml"
REQUIRED = ("branch", "arch", "version", "flavor", "file", "size", "sha256")
_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "sha512": re.compile(r"[0-9a-f]{128}")}
_BRANCH = re.compile(r"edge|v\d+\.\d+")


@dataclass(frozen=True, slots=True)
class ReleaseEntry:
    """One image of ``latest-releases.yaml``."""

    branch: str
    arch: str
    version: str
    flavor: str
    file: str
    size: int
    sha256: str
    sha512: str | None
    date: str
    time: str


def parse_latest_releases(
    text: str, path: str, *, branch: str | None = None, arch: str | None = None
) -> tuple[ReleaseEntry, ...]:
    """Every entry, checked; ``branch``/``arch`` (when given) must match each entry's fields."""
    try:
        document = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - strings only
    except yaml.YAMLError as error:
        raise ChecksumFormatError(path, f"not YAML: {str(error).splitlines()[0]}") from None
    except RecursionError:  # nesting deeper than the parser's stack
        raise ChecksumFormatError(path, "YAML nested too deeply") from None
    if document is None or document == "":  # an empty document
        return ()
    if not isinstance(document, list):
        raise ChecksumFormatError(path, "not a list of releases")
    entries: list[ReleaseEntry] = []
    seen: set[str] = set()
    for number, item in enumerate(document, 1):
        entry = _entry(item, f"{path} entry {number}")
        if branch is not None and entry.branch != branch:
            raise ChecksumFormatError(
                path, f"entry {number} ({entry.file}) is for branch {entry.branch}, not {branch}"
            )
        if arch is not None and entry.arch != arch:
            raise ChecksumFormatError(
                path, f"entry {number} ({entry.file}) is for arch {entry.arch}, not {arch}"
            )
        if entry.file in seen:
            raise ChecksumFormatError(path, f"{entry.file} is listed twice")
        seen.add(entry.file)
        entries.append(entry)
    return tuple(entries)


def _entry(item: object, where: str) -> ReleaseEntry:
    if not isinstance(item, dict):
        raise ChecksumFormatError(where, "not a mapping")
    fields = {k: v for k, v in item.items() if isinstance(k, str) and isinstance(v, str)}
    missing = [k for k in REQUIRED if not fields.get(k)]
    if missing:
        raise ChecksumFormatError(where, f"missing {', '.join(missing)}")
    problem = name_problem(fields["file"])
    if problem is not None:
        raise ChecksumFormatError(where, f"file {fields['file']!r}: {problem}")
    if not _BRANCH.fullmatch(fields["branch"]):
        raise ChecksumFormatError(where, f"branch {fields['branch']!r} is not edge or vX.Y")
    if not fields["size"].isdigit():
        raise ChecksumFormatError(where, f"size {fields['size']!r} is not a byte count")
    digests: dict[str, str | None] = {}
    for algorithm, pattern in _HEX.items():
        value = fields.get(algorithm)
        if value is not None and not pattern.fullmatch(value.lower()):
            raise ChecksumFormatError(where, f"{algorithm} {value!r} is not a hex digest")
        digests[algorithm] = value.lower() if value is not None else None
    sha256 = digests["sha256"]
    assert sha256 is not None  # required above
    return ReleaseEntry(
        branch=fields["branch"],
        arch=fields["arch"],
        version=fields["version"],
        flavor=fields["flavor"],
        file=fields["file"],
        size=int(fields["size"]),
        sha256=sha256,
        sha512=digests["sha512"],
        date=fields.get("date", ""),
        time=fields.get("time", ""),
    )
