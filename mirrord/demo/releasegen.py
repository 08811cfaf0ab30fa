"""Generate a releases tree in the layout of Alpine's: small fake images, sidecars, yaml.

``<root>/<branch>/releases/<arch>/`` gets, per release, one file per flavor
(``alpine-standard-<v>-<arch>.iso``, ``alpine-minirootfs-<v>-<arch>.tar.gz``,
...), each with ``.sha256`` and ``.sha512`` sidecars, ``netboot/`` files
without checksums, and a ``latest-releases.yaml`` naming the latest release's
files only (older releases stay, as on Alpine's servers). The top level gets
``MIRRORS.txt`` and the relative ``latest-stable`` symlink.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FLAVORS = (("standard", ".iso"), ("minirootfs", ".tar.gz"))
NETBOOT = ("vmlinuz-lts", "initramfs-lts", "modloop-lts")


@dataclass(frozen=True)
class ReleaseFile:
    path: Path
    data: bytes


def image_bytes(name: str, size: int) -> bytes:
    block = hashlib.shake_256(name.encode()).digest(min(size, 1 << 16))
    return (block * (size // len(block) + 1))[:size]


def _yaml_entry(branch: str, arch: str, version: str, flavor: str, name: str, data: bytes) -> str:
    return (
        "-\n"
        f'  title: "{flavor.capitalize()}"\n'
        f'  desc: "A generated {flavor} image."\n'
        f"  branch: {branch}\n"
        f"  arch: {arch}\n"
        f"  version: {version}\n"
        f"  flavor: alpine-{flavor}\n"
        f"  file: {name}\n"
        f"  iso: {name}\n"
        "  date: 2024-09-06\n"
        "  time: 07:25:18\n"
        f"  size: {len(data)}\n"
        f"  sha256: {hashlib.sha256(data).hexdigest()}\n"
        f"  sha512: {hashlib.sha512(data).hexdigest()}\n"
    )


def write_release(
    root: Path,
    branch: str,
    arch: str,
    version: str,
    *,
    size: int = 64 << 10,
    flavors: Sequence[tuple[str, str]] = FLAVORS,
) -> list[ReleaseFile]:
    """Add one release to ``<branch>/releases/<arch>/`` and make it the yaml's latest."""
    directory = root / branch / "releases" / arch
    (directory / "netboot").mkdir(parents=True, exist_ok=True)
    written: list[ReleaseFile] = []
    entries: list[str] = []
    for flavor, suffix in flavors:
        name = f"alpine-{flavor}-{version}-{arch}{suffix}"
        data = image_bytes(name, size)
        (directory / name).write_bytes(data)
        for algorithm in ("sha256", "sha512"):
            digest = hashlib.new(algorithm, data).hexdigest()
            (directory / f"{name}.{algorithm}").write_text(f"{digest}  {name}\n")
        written.append(ReleaseFile(directory / name, data))
        entries.append(_yaml_entry(branch, arch, version, flavor, name, data))
    for name in NETBOOT:
        data = image_bytes(f"{branch}-{arch}-{version}-{name}", 4096)
        (directory / "netboot" / name).write_bytes(data)
        written.append(ReleaseFile(directory / "netboot" / name, data))
    (directory / "latest-releases.yaml").write_text("---\n" + "".join(entries))
    return written


def write_top(root: Path, latest_stable: str | None, mirrors: str = "") -> None:
    """``MIRRORS.txt`` and the relative ``latest-stable`` symlink (swapped atomically)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "MIRRORS.txt").write_text(mirrors or "http://127.0.0.1/alpine/\n")
    if latest_stable is not None:
        temp = root / ".latest-stable.new"
        if temp.is_symlink():
            temp.unlink()
        os.symlink(latest_stable, temp)
        os.replace(temp, root / "latest-stable")
