"""What a publish of one releases directory must fetch, link, and delete. Pure.

A releases directory (``<branch>/releases/<arch>``, with ``netboot/``) is
published like a package arch: content files first, then its "index" files
(the ``.sha256``/``.sha512`` sidecars, ``latest-releases.yaml``) last, so a
reader who finds a sidecar or a yaml entry finds the file it describes.
Files gone from the origin stay published for ``publish.grace`` and are then
deleted; an origin that drops more than ``publish.max_delete_fraction`` of
the directory at once is refused (the mass-deletion guard).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mirrord.alpine.latestreleases import LATEST_RELEASES
from mirrord.alpine.sidecars import Expected, sidecar_of
from mirrord.core.errors import TreeDeletionError
from mirrord.core.model import TreeFile, TreeManifest, TreeSnapshot

MIN_GUARDED = 4  # a directory this small may lose every file without tripping the guard


@dataclass(frozen=True, slots=True)
class OriginFile:
    """A file the origin lists now, with what it must be and how its listing describes it."""

    expected: Expected
    listed_size: int | None
    listed_mtime: str | None


@dataclass(frozen=True)
class TreePlan:
    fetch: tuple[str, ...]  # relpaths to download (content and index files alike)
    keep: tuple[str, ...]  # relpaths already published with the right bytes
    content: tuple[str, ...]  # every origin file that is not an index, linked first
    indexes: tuple[str, ...]  # sidecars, then latest-releases.yaml: linked last
    gone_since: dict[str, float]  # the pending removals after this publish
    delete: tuple[str, ...]  # relpaths whose grace is over


def is_index(relpath: str) -> bool:
    name = relpath.rsplit("/", 1)[-1]
    return name == LATEST_RELEASES or sidecar_of(name) is not None


def unchanged(old: TreeFile, now: OriginFile) -> bool:
    """Whether the published bytes are still what the origin serves under this name."""
    expected = now.expected
    if expected.verified:
        return (expected.sha256 in (None, old.sha256)) and (
            expected.size is None or expected.size == old.size
        )
    # No checksum anywhere: the listing's size (when it gives one) and mtime.
    if now.listed_size is not None and now.listed_size != old.size:
        return False
    return now.listed_mtime is not None and now.listed_mtime == old.listed_mtime


def plan_tree(
    directory: str,
    origin: Mapping[str, OriginFile],
    manifest: TreeManifest,
    *,
    now: float,
    grace: float,
    max_delete_fraction: float,
    force: bool = False,
) -> TreePlan:
    """Decide one publish; TreeDeletionError when the origin dropped too much at once."""
    previous = set(manifest.files)
    dropped = sorted(previous - set(origin) - set(manifest.gone_since))
    if (
        not force
        and len(previous) >= MIN_GUARDED
        and dropped
        and len(dropped) / len(previous) > max_delete_fraction
    ):
        raise TreeDeletionError(
            directory, len(dropped), len(previous), max_delete_fraction, tuple(dropped[:5])
        )
    fetch: list[str] = []
    keep: list[str] = []
    for relpath, wanted in sorted(origin.items()):
        old = manifest.files.get(relpath)
        (keep if old is not None and unchanged(old, wanted) else fetch).append(relpath)
    gone_since: dict[str, float] = {}
    delete: list[str] = []
    for relpath in sorted(previous - set(origin)):
        since = manifest.gone_since.get(relpath, now)
        if now - since >= grace:
            delete.append(relpath)
        else:
            gone_since[relpath] = since
    indexes = sorted((p for p in origin if is_index(p)), key=_index_order)
    content = sorted(p for p in origin if not is_index(p))
    return TreePlan(
        tuple(fetch), tuple(keep), tuple(content), tuple(indexes), gone_since, tuple(delete)
    )


@dataclass(frozen=True)
class TreeRollback:
    content: tuple[str, ...]  # the snapshot's files that are not indexes, linked first
    indexes: tuple[str, ...]  # its sidecars, then latest-releases.yaml: linked last
    manifest: TreeManifest  # what the directory publishes afterwards


def plan_tree_rollback(
    snapshot: TreeSnapshot, manifest: TreeManifest, *, now: float
) -> TreeRollback:
    """Publish ``snapshot`` again over what ``manifest`` publishes now.

    Files the snapshot does not list stay for ``publish.grace`` (from now, or
    from when they were first seen gone); files it lists stop waiting.
    """
    files = dict(manifest.files)
    files.update(snapshot.files)
    gone_since = {
        relpath: manifest.gone_since.get(relpath, now)
        for relpath in sorted(set(manifest.files) - set(snapshot.files))
    }
    indexes = sorted((p for p in snapshot.files if is_index(p)), key=_index_order)
    content = sorted(p for p in snapshot.files if not is_index(p))
    return TreeRollback(
        tuple(content), tuple(indexes), TreeManifest(files, gone_since, now, snapshot.id)
    )


def _index_order(relpath: str) -> tuple[int, str]:
    """Sidecars before latest-releases.yaml: the yaml is the directory's last word."""
    return (1 if relpath.rsplit("/", 1)[-1] == LATEST_RELEASES else 0, relpath)


def choose_latest_stable(
    origin_target: str | None, published: Mapping[str, bool], current: str | None
) -> str | None:
    """The branch ``latest-stable`` should point at now, or None to leave it as it is.

    ``published`` says, per configured branch, whether every one of its
    releases directories is published. The link only moves to a branch that is.
    """
    if origin_target is None or origin_target == current:
        return None
    if not published.get(origin_target, False):
        return None
    return origin_target
