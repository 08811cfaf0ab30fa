"""`mirrord demo` is the README's first command: it must work offline, twice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mirrord.alpine.signing import Keyring
from mirrord.core.model import ArchKey
from mirrord.demo.runner import ARCHES, BRANCH, REPOS
from mirrord.publish.treecheck import check_tree
from tests.helpers import REPO_ROOT, stored_objects, temp_leftovers


def run_demo(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirrord.shell.cli", "demo", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        check=False,
    )


def test_demo_publishes_a_verified_tree_and_is_incremental_on_rerun(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    first = run_demo(directory)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("published  v3.20/") == 4 + len(ARCHES)  # + the releases dirs
    assert "CHECK FAILED" not in first.stdout
    assert "linked     latest-stable -> v3.20" in first.stdout
    releases = directory / "published" / "latest-stable" / "releases"
    release_files = [p for p in releases.rglob("*") if p.is_file()]
    assert {p.parent.name for p in releases.glob("*/*.iso")} == set(ARCHES)
    origin_releases = directory / "origin" / BRANCH / "releases"
    for path in release_files:
        assert path.read_bytes() == (origin_releases / path.relative_to(releases)).read_bytes()

    keys = [ArchKey(BRANCH, repo, arch) for repo in REPOS for arch in ARCHES]
    report = check_tree(directory / "published", keys, Keyring.load(directory / "keys"))
    assert report.ok, report.problems
    assert report.files == sum(REPOS.values()) * len(ARCHES) == 600
    objects = stored_objects(directory / "storage")
    assert len(objects) < 600 + len(release_files)  # the noarch packages are stored once
    assert temp_leftovers(directory / "storage", directory / "published") == []

    second = run_demo(directory)
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("unchanged  v3.20/") == 4 + len(ARCHES)
    assert "fetched    0 package files" in second.stdout and "with 0 downloads" in second.stdout
    assert stored_objects(directory / "storage") == objects
