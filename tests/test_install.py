"""The production install (``./dev install`` = packaging/install.sh) into a clean root."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from mirrord import __version__
from tests.helpers import FIXTURES, REPO_ROOT, write_yaml
from tests.test_systemd import systemd_analyze

INSTALL = REPO_ROOT / "packaging" / "install.sh"


def install(root: Path, prefix: Path) -> str:
    env = {**os.environ, "ROOT": str(root), "PREFIX": str(prefix)}
    done = subprocess.run(
        ["sh", str(INSTALL)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run from /, so that ``import mirrord`` cannot find this checkout."""
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, cwd="/", check=False
    )


def unit_setting(unit: Path, name: str) -> str:
    match = re.search(rf"^{name}=(\S+)", unit.read_text(), re.MULTILINE)
    assert match, f"{name}= missing from {unit}"
    return match.group(1)


@pytest.mark.slow
def test_install_into_a_clean_root_then_upgrade_in_place(tmp_path: Path) -> None:
    root = tmp_path / "root"
    prefix = root / "opt" / "mirrord"
    tree_before = run("git", "-C", REPO_ROOT, "status", "--porcelain").stdout
    build_before = (REPO_ROOT / "build").exists()
    unit = root / "etc" / "systemd" / "system" / "mirrord.service"
    assert install(root, prefix) == f"installed mirrord {__version__} in {prefix}; unit {unit}\n"

    mirrord = prefix / "bin" / "mirrord"
    assert run(mirrord, "--version").stdout == f"mirrord {__version__}\n"
    on_path = root / "usr" / "local" / "bin" / "mirrord"
    assert on_path.is_symlink() and on_path.resolve() == mirrord.resolve()
    # The wheel's copy runs, not this checkout's.
    where = run(prefix / "bin" / "python", "-c", "import mirrord; print(mirrord.__file__)")
    assert where.stdout.startswith(f"{prefix}/lib/"), where.stdout + where.stderr

    config = write_yaml(
        tmp_path / "mirrord.yaml",
        {
            "origin": {
                "url": "https://dl-cdn.alpinelinux.org/alpine",
                "keys": str(FIXTURES / "keys"),
            },
            "repositories": [{"branch": "v3.20", "repos": ["main"], "arches": ["x86_64"]}],
            "storage": {"path": str(tmp_path / "storage")},
            "publish": {"path": str(tmp_path / "published")},
        },
    )
    checked = run(on_path, "check-config", "--config", config)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[:3] == [
        f"{config}: OK",
        "  origin      https://dl-cdn.alpinelinux.org/alpine",
        f"  trusted     3 keys in {FIXTURES / 'keys'}",
    ]

    assert unit_setting(unit, "ExecStart") == str(mirrord)
    documentation = unit_setting(unit, "Documentation")
    assert documentation == f"file:{prefix}/share/doc/mirrord/README.md"
    assert (
        Path(documentation.removeprefix("file:")).read_bytes()
        == (REPO_ROOT / "README.md").read_bytes()
    )
    for served in ("nginx-mirrord.conf", "rsyncd-mirrord.conf"):
        doc = prefix / "share" / "doc" / "mirrord" / served
        assert doc.read_bytes() == (REPO_ROOT / "config" / served).read_bytes()
    for shipped, installed in (
        ("mirrord.sysusers", "usr/lib/sysusers.d/mirrord.conf"),
        ("mirrord.tmpfiles", "usr/lib/tmpfiles.d/mirrord.conf"),
    ):
        assert (root / installed).read_bytes() == (REPO_ROOT / "systemd" / shipped).read_bytes()
    # systemd-sysusers and systemd-tmpfiles ran on ROOT: the user, and its directories.
    users = [line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()]
    uid = next(int(fields[2]) for fields in users if fields[0] == "mirrord")
    assert (root / "srv" / "mirror" / "alpine").stat().st_uid == uid
    assert (root / "etc" / "mirrord" / "keys").is_dir()
    verified = run(systemd_analyze(), "verify", unit)
    assert (verified.returncode, verified.stderr.strip()) == (0, ""), (
        verified.stdout + verified.stderr
    )

    (prefix / "bin" / "mirrord").unlink()  # as if damaged or out of date: a re-run repairs it
    assert install(root, prefix).startswith(f"installed mirrord {__version__} in {prefix}")
    assert run(on_path, "--version").stdout == f"mirrord {__version__}\n"
    # The build happened in a copy: nothing new in the checkout, not even an ignored build/.
    assert run("git", "-C", REPO_ROOT, "status", "--porcelain").stdout == tree_before
    assert (REPO_ROOT / "build").exists() == build_before
