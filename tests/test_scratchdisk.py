"""The benchmarks' scratch disk: a journaled ext4 image, mounted for a run and gone after."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from benchmarks import scratchdisk
from benchmarks.scratchdisk import scratch_disk

CAN_MOUNT = os.geteuid() == 0 and Path("/dev/loop-control").exists()


def _loop_devices_of(image: Path) -> str:
    return subprocess.run(
        ["losetup", "--associated", str(image)], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_work_directory_itself_when_asked(tmp_path: Path) -> None:
    said: list[str] = []
    with scratch_disk(tmp_path / "work", said.append, journaled=False) as disk:
        assert disk.path == tmp_path / "work" and disk.path.is_dir()
        assert "--disk work" in disk.description
    assert not (tmp_path / "work" / "disk.img").exists()


def test_runs_write_to_a_journaled_image_that_keeps_its_data_and_leaves_nothing_mounted(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    said: list[str] = []
    with scratch_disk(work, said.append) as disk:
        if not CAN_MOUNT:  # not root or no loop devices: the work directory, and why
            assert disk.path == work and "no image" in disk.description, disk.description
            return
        assert disk.path == work / "disk" and os.path.ismount(disk.path), said
        assert "ext4 with a journal" in disk.description
        assert scratchdisk._filesystem(disk.path) == "ext4 with a journal"
        (disk.path / "data").mkdir()
        (disk.path / "data" / "set").write_bytes(b"cached set")
    assert not os.path.ismount(work / "disk")
    assert _loop_devices_of(work / "disk.img") == ""
    assert (work / "disk.img").stat().st_blocks * 512 < (work / "disk.img").stat().st_size

    # A harness killed with the image mounted: the next start unmounts it first.
    scratchdisk._mount(work / "disk.img", work / "disk")
    assert os.path.ismount(work / "disk")
    with scratch_disk(work, said.append) as disk:
        assert (disk.path / "data" / "set").read_bytes() == b"cached set"
        assert scratchdisk._mount_source(disk.path) is not None
    assert not os.path.ismount(work / "disk")
    assert _loop_devices_of(work / "disk.img") == ""


def test_an_image_that_cannot_be_mounted_leaves_the_work_directory_with_the_reason(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "disk.img").write_bytes(b"not a filesystem" * 512)
    said: list[str] = []
    with scratch_disk(work, said.append) as disk:
        assert disk.path == work
        assert "no image:" in disk.description, disk.description
        if CAN_MOUNT:
            assert "mount failed" in disk.description, disk.description
    assert said and said[0].startswith("no journaled scratch disk")
    if CAN_MOUNT:
        assert _loop_devices_of(work / "disk.img") == ""
