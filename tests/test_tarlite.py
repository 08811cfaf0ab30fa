from __future__ import annotations

import os

import pytest

from mirrord.alpine.tarlite import BLOCK, TarFormatError, build_member, iter_members


def _with_checksum(header: bytearray, checksum: int) -> bytes:
    header[148:156] = f"{checksum:06o}\0 ".encode()
    return bytes(header)


def _true_checksum(header: bytes) -> int:
    return sum(header[:148]) + 8 * 32 + sum(header[156:])


@pytest.mark.parametrize("fill", ["random", "all-ones", "zeros"])
def test_header_checksums_are_exact_sums(fill: str) -> None:
    member = bytearray(build_member("file", b"payload"))
    header = member[:BLOCK]
    if fill == "random":
        header[257:BLOCK] = os.urandom(BLOCK - 257)
    elif fill == "all-ones":  # the largest sum a header can have
        header[345:BLOCK] = b"\xff" * (BLOCK - 345)
        header[157:257] = b"\xff" * 100
    else:
        header[257:BLOCK] = bytes(BLOCK - 257)
    true = _true_checksum(bytes(header))
    good = _with_checksum(header, true) + member[BLOCK:]
    assert [bytes(m.data) for m in iter_members(good)] == [b"payload"]
    for wrong in (true + 1, true - 1, true + 65521, true - 65521, true + 65536):
        if wrong < 0:
            continue
        with pytest.raises(TarFormatError, match="bad header checksum"):
            list(iter_members(_with_checksum(header, wrong) + member[BLOCK:]))
