"""What every scenario is handed: the data sets, the sizes, how many runs, where to work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.sets import DataSets
from benchmarks.settings import Sizes
from benchmarks.trees import fresh, remove


@dataclass(frozen=True)
class Bench:
    sets: DataSets
    sizes: Sizes
    runs: int
    work: Path
    progress: Callable[[str], None]

    def scenario_dir(self, name: str) -> Path:
        """An empty scratch directory for one scenario (the last run's is deleted)."""
        return fresh(self.work / "run" / name)

    def tidy(self, name: str, keep: tuple[str, ...] = ("logs", "nginx")) -> None:
        """Delete a finished scenario's scratch data (mirrors, origin links), keep its logs."""
        directory = self.work / "run" / name
        if directory.is_dir():
            for entry in directory.iterdir():
                if entry.name in keep:
                    continue
                if entry.is_dir():
                    remove(entry)
                else:
                    entry.unlink()
