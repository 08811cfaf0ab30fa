"""Start-up checks that need no network, as ``check-config``, ``sync`` and ``run`` make them.

A refusal exits 2 naming the key path, and leaves no directory behind.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mirrord.core.errors import ConfigError
from mirrord.sync.preflight import Root, create_roots
from tests.helpers import FIXTURES, run_mirrord, write_yaml

COMMANDS = ("check-config", "sync", "run")


@contextmanager
def tmpfs(mountpoint: Path, *, read_only: bool = False) -> Iterator[Path]:
    """A filesystem of its own at ``mountpoint`` (the suite runs as root, as CI does)."""
    mountpoint.mkdir()
    options = "size=8m,ro" if read_only else "size=8m"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the suite needs root): {mounted.stderr}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def config_file(
    tmp_path: Path, *, storage: Path, publish: Path, keys: Path = FIXTURES / "keys"
) -> Path:
    return write_yaml(
        tmp_path / "mirrord.yaml",
        {
            "origin": {"url": "http://127.0.0.1:9/alpine", "keys": str(keys)},  # never asked
            "repositories": [{"branch": "v3.20", "repos": ["main"], "arches": ["x86_64"]}],
            "storage": {"path": str(storage)},
            "publish": {"path": str(publish)},
            "metrics": {"listen": False},
            "control": {"socket": False},
        },
    )


def tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def refused(command: str, config: Path, tmp_path: Path) -> str:
    """Run ``command``; it must exit 2 and leave ``tmp_path`` as it was. Returns stderr."""
    before = tree(tmp_path)
    result = run_mirrord(command, "--config", str(config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert tree(tmp_path) == before
    assert result.stderr.startswith(f"mirrord: config error: {config}: ")
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.removeprefix(f"mirrord: config error: {config}: ").rstrip("\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_roots_on_two_filesystems_are_refused(tmp_path: Path, command: str) -> None:
    with tmpfs(tmp_path / "other") as other:
        storage, publish = tmp_path / "state" / "storage", other / "alpine"
        config = config_file(tmp_path, storage=storage, publish=publish)
        assert refused(command, config, tmp_path) == (
            f"publish.path: {publish} must be on the same filesystem as storage.path "
            f"{storage}: published files are hard links to stored objects"
        )


@pytest.mark.parametrize("command", COMMANDS)
def test_a_root_that_cannot_be_written_is_refused(tmp_path: Path, command: str) -> None:
    with tmpfs(tmp_path / "ro", read_only=True) as read_only:
        storage, publish = read_only / "storage", read_only / "alpine"
        config = config_file(tmp_path, storage=storage, publish=publish)
        assert refused(command, config, tmp_path) == (
            f"storage.path: cannot create {storage}: "
            f"cannot write to {read_only} (read-only filesystem)"
        )
        config = config_file(tmp_path, storage=tmp_path / "storage", publish=read_only)
        assert refused(command, config, tmp_path) == (
            f"publish.path: cannot write to {read_only} (read-only filesystem)"
        )


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreadable_key_is_refused_with_its_path(tmp_path: Path, command: str) -> None:
    keys = tmp_path / "keys"
    shutil.copytree(FIXTURES / "keys", keys)
    gone = keys / "alpine-devel@lists.alpinelinux.org-0000.rsa.pub"
    gone.symlink_to(tmp_path / "removed-with-the-old-alpine-keys.pub")
    config = config_file(
        tmp_path, storage=tmp_path / "storage", publish=tmp_path / "published", keys=keys
    )
    assert refused(command, config, tmp_path) == (
        f"origin.keys: cannot read {gone}: No such file or directory"
    )


def test_a_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "srv").write_text("not a directory")
    publish = tmp_path / "srv" / "alpine"
    config = config_file(tmp_path, storage=tmp_path / "storage", publish=publish)
    assert refused("check-config", config, tmp_path) == (
        f"publish.path: cannot create {publish}: {tmp_path / 'srv'} is not a directory"
    )


def test_check_config_passes_and_creates_nothing(tmp_path: Path) -> None:
    storage, publish = tmp_path / "var" / "storage", tmp_path / "published"
    publish.mkdir()
    config = config_file(tmp_path, storage=storage, publish=publish)
    before = tree(tmp_path)
    result = run_mirrord("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{config}: OK"
    assert f"  storage     {storage} (not there yet: created at start, in {tmp_path})" in lines
    assert f"  publish     {publish}, grace 3600 s" in lines
    assert tree(tmp_path) == before


def test_creating_the_roots_undoes_itself_when_one_cannot_be_made(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", read_only=True) as read_only:
        # Roots as if checked a moment before the filesystem went read-only.
        storage = Root("storage.path", tmp_path / "var" / "lib" / "storage", tmp_path)
        publish = Root("publish.path", read_only / "alpine", read_only)
        with pytest.raises(ConfigError) as caught:
            create_roots((storage, publish))
        assert str(caught.value) == (
            f"publish.path: cannot create {read_only / 'alpine'}: Read-only file system"
        )
        assert not (tmp_path / "var").exists()
        create_roots((storage,))
        assert storage.path.is_dir()
