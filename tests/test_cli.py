"""The sync command's contract: exit codes and one line per failed arch."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from mirrord.core.errors import StateDamagedError
from mirrord.core.model import ArchKey
from mirrord.demo.repogen import build_index, simple_specs
from mirrord.shell.cli import main
from mirrord.storage.lock import StorageLock
from mirrord.sync.engine import SyncEngine
from tests.helpers import Mirror, pipe_without_reader, spawn_mirrord

GOOD = ArchKey("v3.20", "main", "x86_64")
BAD = ArchKey("v3.20", "main", "aarch64")


async def mirrord(*args: str) -> tuple[int, str, str]:
    process = await spawn_mirrord(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_sync_exit_codes_and_failure_lines(mirror: Mirror) -> None:
    mirror.tree.put(GOOD, simple_specs("a", 5))
    mirror.tree.put(BAD, simple_specs("b", 5, arch="aarch64"))
    mirror.tree.write_index(BAD, build_index(mirror.tree.packages(BAD), None))  # unsigned
    config = str(mirror.config_file(GOOD, BAD))

    code, _out, err = await mirrord("sync", "--config", config, "--log-format", "json")
    assert code == 1
    assert err.strip().splitlines() == [
        f"mirrord: {BAD}: failed: signature check failed: index is not signed (no .SIGN.RSA member)"
    ]

    code, _out, err = await mirrord("sync", "--config", config, "--only", str(GOOD))
    assert (code, err) == (0, "")

    code, _out, err = await mirrord("sync", "--config", config, "--only", "v9/x/y")
    assert code == 2 and "not in the configuration" in err


async def test_a_report_whose_reader_went_away_ends_with_status_1_and_no_traceback(
    mirror: Mirror,
) -> None:
    mirror.tree.put(GOOD, simple_specs("a", 3))
    config = str(mirror.config_file(GOOD))
    assert (await mirrord("sync", "--config", config))[0] == 0
    for command in ("verify-tree", "check-config"):
        stdout = pipe_without_reader()  # | head, having read what it wanted
        try:
            process = await spawn_mirrord(
                command, "--config", config, stdout=stdout, stderr=asyncio.subprocess.PIPE
            )
        finally:
            os.close(stdout)
        _, err = await process.communicate()
        assert (process.returncode, err.decode()) == (1, ""), command


async def test_a_second_instance_on_the_same_storage_is_refused(mirror: Mirror) -> None:
    mirror.tree.put(GOOD, simple_specs("a", 2))
    config = str(mirror.config_file(GOOD))
    lock = StorageLock.acquire(mirror.tmp / "storage")
    try:
        code, _out, err = await mirrord("sync", "--config", config)
    finally:
        lock.release()
    assert code == 3
    assert "locked by another mirrord" in err and "Traceback" not in err


def test_an_error_inside_the_one_shots_task_group_is_one_line(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pass runs in a task group beside the progress reporter and the releases pass:
    its failure comes out of the group as the one line main prints, not a traceback."""
    mirror.tree.put(GOOD, simple_specs("a", 2))
    config = str(mirror.config_file(GOOD))

    async def damaged(*_: Any, **__: Any) -> None:
        raise StateDamagedError("state.db", "injected for the test")

    monkeypatch.setattr(SyncEngine, "run_pass", damaged)
    code = main(["sync", "--config", config, "--log-format", "json"])

    assert code == 3
    assert (
        capsys.readouterr().err
        == f"mirrord: {StateDamagedError('state.db', 'injected for the test')}\n"
    )
