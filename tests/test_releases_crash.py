"""kill -9 in the middle of a releases publish: the tree stays consistent, recovery sweeps
at start-up, and nothing verified that was stored is downloaded again."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

from mirrord.core.crashpoints import ENV_VAR
from mirrord.core.model import ArchKey
from mirrord.demo.releasegen import write_release, write_top
from mirrord.demo.repogen import simple_specs
from mirrord.sync.runtime import open_runtime
from tests.helpers import Mirror, spawn_mirrord, temp_leftovers
from tests.releasetree import set_mtime, tree_digests

KEY = ArchKey("v3.20", "main", "x86_64")
X86 = "v3.20/releases/x86_64"
T0 = 1_700_000_000
RELEASES = {"branches": ["v3.20"], "arches": ["x86_64"]}


async def _sync(config_path: Path, crash_at: str | None = None) -> int | None:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if crash_at:
        env[ENV_VAR] = crash_at
    process = await spawn_mirrord("sync", "--config", str(config_path), env=env)
    return await process.wait()


def _sidecars_hold(directory: Path) -> int:
    """Every published sha256 sidecar describes the file beside it; how many there are."""
    sidecars = list(directory.glob("*.sha256"))
    for sidecar in sidecars:
        digest, name = sidecar.read_text().split()
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest, name
    return len(sidecars)


def _verified_image(path: str) -> bool:
    return "/releases/" in path and path.endswith((".iso", ".tar.gz"))


async def test_kill_between_content_and_indexes_then_restart(mirror: Mirror) -> None:
    root = mirror.tree.root
    mirror.tree.put(KEY, simple_specs("a", 2))
    write_release(root, "v3.20", "x86_64", "3.20.2")
    write_top(root, "v3.20")
    set_mtime(list((root / X86).rglob("*")), T0)
    config = mirror.config(KEY, releases=RELEASES)
    config_path = mirror.config_file(KEY, releases=RELEASES)
    published = config.publish.path / X86
    assert await _sync(config_path) == 0
    old_yaml = (published / "latest-releases.yaml").read_bytes()
    write_release(root, "v3.20", "x86_64", "3.20.3")
    set_mtime(list((root / X86).rglob("*")), T0 + 100)  # netboot/ is judged by its mtime

    assert await _sync(config_path, "releases.after_content") == -signal.SIGKILL
    # Killed after the new images were linked, before any sidecar or the yaml: what the
    # published sidecars and yaml describe is exactly what is served.
    assert (published / "latest-releases.yaml").read_bytes() == old_yaml
    assert (published / "alpine-standard-3.20.3-x86_64.iso").exists()
    assert not (published / "alpine-standard-3.20.3-x86_64.iso.sha256").exists()
    assert _sidecars_hold(published) == 2
    # What a crash inside an atomic write leaves (a link, a manifest, the symlink).
    leftovers = [
        published / ".mirrord-tmp-alpine-standard-3.20.3-x86_64.iso",
        config.storage.path / "trees" / "v3.20" / "releases" / ".mirrord-tmp-x86_64.json",
    ]
    for path in leftovers:
        path.write_bytes(b"partial")
    (config.publish.path / ".mirrord-tmp-latest-stable").symlink_to("v3.20")
    requests_before = len(mirror.origin.requests)

    async with open_runtime(config, log=mirror.logs.logger()) as runtime:
        # Swept at start-up with the rest of recovery, before any releases pass.
        swept_at_start = temp_leftovers(config.publish.path, config.storage.path / "trees")
        result = await runtime.releases.run_pass()
    assert swept_at_start == []
    assert not (config.publish.path / ".mirrord-tmp-latest-stable").is_symlink()
    assert result.ok, [(o.directory, o.error) for o in result.outcomes]
    assert tree_digests(published) == tree_digests(root / X86)
    assert _sidecars_hold(published) == 4
    again = [r.path for r in mirror.origin.requests[requests_before:] if _verified_image(r.path)]
    assert again == [], f"stored images downloaded again: {again}"
    done = mirror.logs.events("releases.directory.published")
    assert [e["reused"] for e in done if e["directory"] == X86] == [2]
