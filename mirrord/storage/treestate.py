"""The manifests of published releases directories, one JSON file each under storage.

A manifest records what a releases directory publishes (each file's sha256,
size, what verified it, its Last-Modified) and which files are waiting out
``publish.grace``. It is written atomically and durably right after the
directory's publish: a crash in between leaves the previous manifest, and the
next pass finds the published files already right and only rewrites it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mirrord.core.errors import StoreError
from mirrord.core.model import TreeFile, TreeManifest
from mirrord.storage.durable import TEMP_MARK, unlink_if_exists, write_atomic


class TreeState:
    def __init__(self, root: Path) -> None:
        self.root = root / "trees"

    def _path(self, directory: str) -> Path:
        return self.root / f"{directory}.json"  # directory: validated path segments

    def load(self, directory: str) -> TreeManifest:
        path = self._path(directory)
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return TreeManifest()
        except (OSError, ValueError) as error:
            raise StoreError(str(path), f"unreadable tree manifest: {error}") from None
        files = files_from_json(data.get("files", {}))
        return TreeManifest(
            files,
            dict(data.get("gone_since", {})),
            data.get("published_at"),
            data.get("snapshot"),
        )

    def save(self, directory: str, manifest: TreeManifest) -> None:
        """Blocking: write the manifest atomically and durably."""
        path = self._path(directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "directory": directory,
            "files": {name: asdict(entry) for name, entry in sorted(manifest.files.items())},
            "gone_since": manifest.gone_since,
            "published_at": manifest.published_at,
            "snapshot": manifest.snapshot,
        }
        write_atomic(path, json.dumps(data, indent=1).encode())

    def sweep(self) -> int:
        """Blocking: remove what a crash in an atomic write left (at start-up)."""
        return sweep_json(self.root)

    def directories(self) -> list[str]:
        """Every directory with a manifest (published at least once)."""
        return json_directories(self.root)


def sweep_json(root: Path) -> int:
    """Blocking: temporary names under ``root`` that a crash in ``write_atomic`` left."""
    if not root.is_dir():
        return 0
    return sum(unlink_if_exists(p) for p in root.rglob(f"{TEMP_MARK}*"))


def json_directories(root: Path) -> list[str]:
    """The directories named by the ``<directory>.json`` files under ``root``."""
    if not root.is_dir():
        return []
    found = (p for p in root.rglob("*.json") if not p.name.startswith(TEMP_MARK))
    return sorted(str(p.relative_to(root).with_suffix("")) for p in found)


def files_from_json(data: dict[str, Any]) -> dict[str, TreeFile]:
    return {
        name: TreeFile(
            sha256=entry["sha256"],
            size=entry["size"],
            verified_by=tuple(entry["verified_by"]),
            last_modified=entry.get("last_modified"),
            listed_mtime=entry.get("listed_mtime"),
        )
        for name, entry in data.items()
    }
