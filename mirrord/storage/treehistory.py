"""The remembered snapshots of each releases directory, one JSON file per directory.

Each publish of a releases directory remembers what it listed (a
``TreeSnapshot``); the newest ``publish.keep_snapshots`` are kept (and the
one served now, after a rollback), so an operator can roll a directory back
as they roll back an arch. The file is replaced atomically and durably.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mirrord.core.errors import StoreError
from mirrord.core.model import TreeFile, TreeSnapshot
from mirrord.storage.durable import write_atomic
from mirrord.storage.treestate import files_from_json, json_directories, sweep_json


class TreeHistory:
    def __init__(self, root: Path) -> None:
        self.root = root / "tree-snapshots"

    def _path(self, directory: str) -> Path:
        return self.root / f"{directory}.json"  # directory: validated path segments

    def load(self, directory: str) -> list[TreeSnapshot]:
        """Oldest first."""
        path = self._path(directory)
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:
            raise StoreError(str(path), f"unreadable tree snapshots: {error}") from None
        return [
            TreeSnapshot(
                id=entry["id"],
                created_at=entry["created_at"],
                files=files_from_json(entry["files"]),
                forced=bool(entry.get("forced", False)),
            )
            for entry in data.get("snapshots", [])
        ]

    def remember(
        self,
        directory: str,
        files: dict[str, TreeFile],
        *,
        created_at: float,
        keep: int,
        forced: bool = False,
    ) -> int:
        """Blocking: the snapshot id of ``files`` (an equal one is reused), the oldest pruned."""
        history = self.load(directory)
        digests = _digests(files)
        for snapshot in history:
            if _digests(snapshot.files) == digests:
                return snapshot.id
        new_id = max((s.id for s in history), default=0) + 1
        history.append(TreeSnapshot(new_id, created_at, dict(files), forced))
        self._save(directory, history[-max(1, keep) :])
        return new_id

    def find(self, directory: str, snapshot_id: int) -> TreeSnapshot | None:
        return next((s for s in self.load(directory) if s.id == snapshot_id), None)

    def _save(self, directory: str, history: list[TreeSnapshot]) -> None:
        path = self._path(directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "directory": directory,
            "snapshots": [
                {
                    "id": s.id,
                    "created_at": s.created_at,
                    "forced": s.forced,
                    "files": {name: asdict(f) for name, f in sorted(s.files.items())},
                }
                for s in history
            ],
        }
        write_atomic(path, json.dumps(data, indent=1).encode())

    def sweep(self) -> int:
        """Blocking: remove what a crash in an atomic write left (at start-up)."""
        return sweep_json(self.root)

    def directories(self) -> list[str]:
        return json_directories(self.root)


def _digests(files: dict[str, TreeFile]) -> dict[str, str]:
    return {name: f.sha256 for name, f in files.items()}
