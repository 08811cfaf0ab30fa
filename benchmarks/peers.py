"""The tools operators use today, as command lines over the same files from the same server.

Each writes what it downloads under ``dest`` at the file's path relative to
the origin root, so one check covers every tool. None of them verifies
anything (signatures, sizes, checksums) or flushes what it wrote to disk,
except ``verified_wget2``: the cheapest verified and durable sync that
standard tools make.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CONCURRENCY = 16


@dataclass(frozen=True)
class Transfer:
    """What to fetch: files (relative paths) under ``base_url``, living in ``directories``."""

    base_url: str
    files: tuple[str, ...]
    directories: tuple[str, ...]
    sha256: tuple[str, ...] = ()  # of each file, in order (what verified_wget2 checks)


def _urls(transfer: Transfer) -> list[str]:
    return [f"{transfer.base_url}/{relative}" for relative in transfer.files]


def wget2(transfer: Transfer, dest: Path, inputs: Path) -> list[str]:
    urls = inputs / "wget2-urls.txt"
    urls.write_text("".join(f"{url}\n" for url in _urls(transfer)))
    return [
        "wget2",
        f"--max-threads={CONCURRENCY}",
        "-q",
        "--force-directories",
        "--no-host-directories",
        "-i",
        str(urls),
        "-P",
        str(dest),
    ]


def verified_wget2(transfer: Transfer, dest: Path, inputs: Path) -> list[str]:
    """wget2, then one SHA-256 pass over every file checked against a manifest, then syncfs.

    What a verifying, durable downloader cannot do with less: every byte hashed
    once (OpenSSL, as mirrord's hashlib) and the files on disk at exit. It checks
    whole-file digests, which mirrord cannot (the index promises the control
    part's SHA-1 and the data part's SHA-256), so it is a floor, not a peer.
    """
    if len(transfer.sha256) != len(transfer.files):
        raise ValueError("verified_wget2 needs every file's SHA-256")
    listing = inputs / "verified-files.txt"
    listing.write_text("".join(f"{relative}\n" for relative in transfer.files))
    manifest = inputs / "verified-sha256.txt"
    manifest.write_text(
        "".join(
            f"{digest} *{relative}\n"
            for digest, relative in zip(transfer.sha256, transfer.files, strict=True)
        )
    )
    fetch = shlex.join(wget2(transfer, dest, inputs))
    script = (
        f'{fetch} && cd "$0" && xargs -a "$1" openssl dgst -sha256 -r | cmp -s - "$2" && sync -f .'
    )
    return ["sh", "-c", script, str(dest), str(listing), str(manifest)]


def curl(transfer: Transfer, dest: Path, inputs: Path) -> list[str]:
    config = inputs / "curl.cfg"
    lines = [
        f'url = "{url}"\noutput = "{dest / relative}"\n'
        for url, relative in zip(_urls(transfer), transfer.files, strict=True)
    ]
    config.write_text("".join(lines))
    return [
        "curl",
        "-Z",
        "--parallel-max",
        str(CONCURRENCY),
        "-s",
        "-S",
        "-f",
        "--create-dirs",
        "-K",
        str(config),
    ]


def aria2c(transfer: Transfer, dest: Path, inputs: Path) -> list[str]:
    listing = inputs / "aria2c-input.txt"
    listing.write_text(
        "".join(
            f"{url}\n  out={relative}\n"
            for url, relative in zip(_urls(transfer), transfer.files, strict=True)
        )
    )
    return [
        "aria2c",
        "-j",
        str(CONCURRENCY),
        "-i",
        str(listing),
        "-d",
        str(dest),
        "-q",
        "--auto-file-renaming=false",
        "--allow-overwrite=true",
    ]


def wget(transfer: Transfer, dest: Path, inputs: Path) -> list[str]:
    """Single-threaded recursive mirror of each arch directory through nginx's autoindex."""
    return [
        "wget",
        "-r",
        "-np",
        "-nH",
        "-q",
        "-e",
        "robots=off",
        "-R",
        "index.html*",
        "-P",
        str(dest),
        *(f"{transfer.base_url}/{directory}/" for directory in transfer.directories),
    ]


def sequential_python(transfer: Transfer, dest: Path, inputs: Path) -> list[str]:
    """One file at a time over one keep-alive connection, hashed with SHA-256 (seqmirror.py)."""
    listing = inputs / "seqmirror-files.txt"
    listing.write_text("".join(f"{relative}\n" for relative in transfer.files))
    script = Path(__file__).with_name("seqmirror.py")
    return [sys.executable, str(script), transfer.base_url, str(listing), str(dest)]


@dataclass(frozen=True)
class Peer:
    name: str  # the column heading
    binary: str
    command: Callable[[Transfer, Path, Path], list[str]]

    def installed(self) -> bool:
        return shutil.which(self.binary) is not None


HTTP_PEERS = (
    Peer(f"wget2 -t{CONCURRENCY}", "wget2", wget2),
    Peer(f"curl -Z {CONCURRENCY}", "curl", curl),
    Peer(f"aria2c -j{CONCURRENCY}", "aria2c", aria2c),
    Peer("wget -r", "wget", wget),
    Peer("sequential Python", sys.executable, sequential_python),
)
SEQUENTIAL = HTTP_PEERS[-1].name
VERIFIED_WGET2 = Peer(f"wget2 -t{CONCURRENCY} + SHA-256 + syncfs", "wget2", verified_wget2)


def rsync(url: str, directory: str, dest: Path) -> list[str]:
    """``rsync -a --delete`` of one arch directory from the daemon into ``dest``."""
    return ["rsync", "-a", "--delete", "--stats", f"{url}/{directory}/", f"{dest / directory}/"]


@dataclass(frozen=True)
class RsyncStats:
    files_transferred: int
    bytes_received: int


def parse_rsync_stats(text: str) -> RsyncStats:
    def number(label: str) -> int:
        match = re.search(rf"^{re.escape(label)}: ([\d,]+)", text, re.MULTILINE)
        if match is None:
            raise ValueError(f"rsync --stats output has no {label!r}")
        return int(match.group(1).replace(",", ""))

    return RsyncStats(number("Number of regular files transferred"), number("Total bytes received"))
