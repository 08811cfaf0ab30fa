"""The folders are the layers, and imports flow one way: down this list, never up."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mirrord

LAYERS = ("core", "alpine", "storage", "fetch", "publish", "sync", "demo", "shell")
PACKAGE = Path(mirrord.__file__).parent


def _layer(module: str) -> int | None:
    """The layer of a dotted mirrord module name (None for the package root)."""
    parts = module.split(".")
    if parts[0] != "mirrord" or len(parts) == 1 or parts[1].startswith("__"):
        return None
    return LAYERS.index(parts[1])


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, name) for line, name in found if name.startswith("mirrord.")]


def _module_name(path: Path) -> str:
    return ".".join(("mirrord", *path.relative_to(PACKAGE).with_suffix("").parts))


def test_every_module_lives_in_a_layer() -> None:
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert loose == []
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()) == sorted(
        LAYERS
    )


def test_imports_never_go_up_a_layer() -> None:
    upward: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _layer(_module_name(path))
        if own is None:  # mirrord/__init__.py: the version, imported by anyone
            continue
        for line, name in _imports(path):
            # "from mirrord.x import y": y may be a name, not a module; the package decides.
            target = _layer(name)
            if target is not None and target > own:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {name}")
    assert upward == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from mirrord.shell.daemon import Daemon\n")
    assert _imports(bad) == [(1, "mirrord.shell.daemon"), (1, "mirrord.shell.daemon.Daemon")]
    assert _layer("mirrord.shell.daemon") == LAYERS.index("shell")


def _loaded(modules: str, heavy: tuple[str, ...]) -> list[str]:
    """Which of ``heavy`` a fresh interpreter has loaded after importing ``modules``."""
    probe = f"import sys, {modules}\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return list(ast.literal_eval(done.stdout.strip()))


# Each process imports what it uses: every interpreter's imports count in the
# tree's RSS (issue 15). The origin is reached over ``mirrord.fetch.http1``: aiohttp's
# client alone was 14 MiB of a fetch worker (and ~0.1 s of every start, most of it its
# CA store); cryptography adds 8 MiB, prometheus_client, yaml and SQLite a few each. The
# one-shot ``sync`` (without fleet) serves no HTTP and speaks to no S3, MQTT or etcd.
# A fetch worker takes its settings as a FetchConfig, not from YAML (the parser and
# its checks), retries in a plain loop (tenacity), parses an HTTP date only from a
# Retry-After (email), logs through the daemon (structlog) and needs shutil (bz2,
# lzma) only to remove a directory: ~3 MiB of each worker.
SERVERS_AND_CLIENTS = ("aiohttp.web", "aiobotocore", "botocore", "aiomqtt")
PROCESS_IMPORTS = {
    "daemon": ("mirrord.shell.cli, mirrord.shell.daemon", ("aiobotocore", "botocore", "aiomqtt")),
    "sync": (
        "mirrord.shell.cli, mirrord.sync.runtime, mirrord.core.metrics",
        (*SERVERS_AND_CLIENTS, "aiohttp", "yarl"),
    ),
    "fetch worker": (
        "mirrord.fetch.worker",
        (
            *SERVERS_AND_CLIENTS,
            "aiohttp",
            "yarl",
            "cryptography",
            "prometheus_client",
            "yaml",
            "sqlite3",
            "mirrord.core.config.parse",
            "tenacity",
            "email",
            "structlog",
            "shutil",
        ),
    ),
}


# What `mirrord --help`, `mirrord ctl ...` and `check-config` load before they run:
# people type them and scripts poll with them, and the sync machinery behind these
# was ~0.2 s of every call.
SYNC_MACHINERY = (
    "mirrord.sync.runtime",
    "mirrord.fetch.fetcher",
    "mirrord.storage.statedb",
    "cryptography",
    "prometheus_client",
    "structlog",
    "sqlite3",
    "yaml",
)
PROCESS_IMPORTS["command line"] = ("mirrord.shell.cli", (*SYNC_MACHINERY, "aiohttp"))


def test_a_ctl_command_runs_without_the_sync_machinery(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from mirrord.shell.cli import main\n"
        f"code = main(['ctl', '--socket', {str(tmp_path / 'absent.sock')!r}, 'status'])\n"
        f"print(code, sorted(m for m in {SYNC_MACHINERY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split(maxsplit=1) == ["3", "[]\n"]
    assert "cannot reach the daemon" in done.stderr


@pytest.mark.parametrize("process", sorted(PROCESS_IMPORTS))
def test_each_process_leaves_heavy_modules_it_does_not_use_unimported(process: str) -> None:
    modules, heavy = PROCESS_IMPORTS[process]
    assert _loaded(modules, heavy) == []


def test_the_import_probe_sees_a_heavy_module() -> None:
    assert _loaded("mirrord.alpine.signing", ("cryptography", "aiomqtt")) == ["cryptography"]
