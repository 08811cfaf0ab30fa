"""Start-up checks that need no network: trusted keys, usable roots, one filesystem.

``mirrord check-config`` runs them and creates nothing; ``sync`` and ``run`` run
the same checks before they create the storage and publish roots, so a refusal
leaves no empty directories behind.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from mirrord.alpine.signing import Keyring
from mirrord.core.config import Config
from mirrord.core.errors import ConfigError


@dataclass(frozen=True)
class Root:
    """A configured directory and the existing directory it is (or will be created) in."""

    key_path: str
    path: Path
    existing: Path  # ``path`` itself, or its nearest existing ancestor

    @property
    def exists(self) -> bool:
        return self.existing == self.path


@dataclass(frozen=True)
class Preflight:
    keyring: Keyring
    storage: Root
    publish: Root


def preflight(config: Config) -> Preflight:
    """Every start-up check of ``config`` that needs no network; raises ConfigError."""
    keyring = Keyring.load(config.origin.keys, required=not config.origin.allow_untrusted)
    storage, publish = check_roots(config)
    return Preflight(keyring, storage, publish)


def check_roots(config: Config) -> tuple[Root, Root]:
    """Check that the storage and publish roots exist or can be created, can be written,
    and share a filesystem (published files are hard links to stored objects)."""
    storage = _usable_root("storage.path", config.storage.path)
    publish = _usable_root("publish.path", config.publish.path)
    # A directory not created yet will be on its nearest existing ancestor's filesystem.
    if storage.existing.stat().st_dev != publish.existing.stat().st_dev:
        raise ConfigError(
            "publish.path",
            f"{publish.path} must be on the same filesystem as storage.path "
            f"{storage.path}: published files are hard links to stored objects",
        )
    return storage, publish


def create_roots(roots: tuple[Root, ...]) -> None:
    """Create checked roots that do not exist yet; on failure, remove what this call made."""
    created: list[Path] = []
    for root in roots:
        for directory in _missing_directories(root):
            try:
                directory.mkdir()
            except FileExistsError:
                continue  # the other root's parent, or made meanwhile by someone else
            except OSError as error:
                for made in reversed(created):
                    with contextlib.suppress(OSError):
                        made.rmdir()
                raise ConfigError(
                    root.key_path, f"cannot create {root.path}: {error.strerror}"
                ) from None
            created.append(directory)


def _missing_directories(root: Root) -> list[Path]:
    """The directories from just below ``root.existing`` down to ``root.path``."""
    missing: list[Path] = []
    directory = root.path
    while directory != root.existing:
        missing.append(directory)
        directory = directory.parent
    return missing[::-1]


def _usable_root(key_path: str, path: Path) -> Root:
    path = path.absolute()
    existing = path
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            raise ConfigError(key_path, f"{path} is not a directory")
        raise ConfigError(key_path, f"cannot create {path}: {existing} is not a directory")
    if not os.access(existing, os.R_OK | os.W_OK | os.X_OK):
        why = "read-only filesystem" if _read_only(existing) else "permission denied"
        if existing == path:
            raise ConfigError(key_path, f"cannot write to {path} ({why})")
        raise ConfigError(key_path, f"cannot create {path}: cannot write to {existing} ({why})")
    return Root(key_path, path, existing)


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
