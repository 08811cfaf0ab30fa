"""What to purge downstream when a publish goes live (pure: no I/O).

A ``Published`` event names the paths whose bytes changed (the index); the
directory's listing changed with it. A symlink at the top of the published
tree (``latest-stable`` -> ``v3.20``) serves the same files under a second
name, which caches hold separately, so those paths are purged too.
Surrogate keys are what config/nginx-mirrord.conf tags each index with: its
directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from mirrord.sync.feed import Published


@dataclass(frozen=True)
class PurgeTargets:
    paths: tuple[str, ...]  # relative to publish.path, as in URLs (a listing ends in "/")
    keys: tuple[str, ...]  # surrogate keys: the directories


def purge_targets(event: Published, aliases: Mapping[str, str]) -> PurgeTargets:
    """``aliases``: top-level symlink name -> the top-level directory it points at."""
    directories = [event.directory]
    paths = [*event.changed, f"{event.directory}/"]
    for link, target in sorted(aliases.items()):
        prefix = f"{target}/"
        if event.directory.startswith(prefix):
            directories.append(link + event.directory[len(target) :])
            paths += [link + path[len(target) :] for path in paths if path.startswith(prefix)]
    return PurgeTargets(tuple(dict.fromkeys(paths)), tuple(dict.fromkeys(directories)))


def purge_urls(bases: tuple[str, ...], paths: tuple[str, ...]) -> list[str]:
    """Every path under every base URL, percent-encoded as a client would ask for it."""
    return [f"{base.rstrip('/')}/{quote(path)}" for base in bases for path in paths]
