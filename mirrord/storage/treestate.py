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
from mirrord.storage.durable import write_atomic


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
        files = {
            name: TreeFile(
                sha256=entry["sha256"],
                size=entry["size"],
                verified_by=tuple(entry["verified_by"]),
                last_modified=entry.get("last_modified"),
                listed_mtime=entry.get("listed_mtime"),
            )
            for name, entry in data.get("files", {}).items()
        }
        return TreeManifest(files, dict(data.get("gone_since", {})), data.get("published_at"))

    def save(self, directory: str, manifest: TreeManifest) -> None:
        """Blocking: write the manifest atomically and durably."""
        path = self._path(directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "directory": directory,
            "files": {name: asdict(entry) for name, entry in sorted(manifest.files.items())},
            "gone_since": manifest.gone_since,
            "published_at": manifest.published_at,
        }
        write_atomic(path, json.dumps(data, indent=1).encode())

    def directories(self) -> list[str]:
        """Every directory with a manifest (published at least once)."""
        if not self.root.is_dir():
            return []
        found = self.root.rglob("*.json")
        return sorted(str(p.relative_to(self.root).with_suffix("")) for p in found)
