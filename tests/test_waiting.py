"""The packed waiting map gives back the identities and positions put into it."""

from __future__ import annotations

from mirrord.publish.waiting import Waiting, pack, packed_size, unpack

CHECKSUM = "Q1ZmFrZWNoZWNrc3VtZm9yYXRlc3Q="


def test_identities_round_trip_through_their_packed_form() -> None:
    for identity in [(CHECKSUM, 0), (CHECKSUM, 2**63), ("Q1é", 5)]:
        assert unpack(pack(identity)) == identity
        assert packed_size(pack(identity)) == identity[1]


def test_positions_accumulate_per_identity_in_first_added_order() -> None:
    waiting = Waiting()
    waiting.add((CHECKSUM, 10), 0)
    waiting.add(("Q1other", 20), 1)
    waiting.add((CHECKSUM, 10), 2)
    waiting.add((CHECKSUM, 11), 3)  # same checksum, other size: another identity
    assert list(waiting) == [(CHECKSUM, 10), ("Q1other", 20), (CHECKSUM, 11)]
    assert waiting[(CHECKSUM, 10)] == [0, 2] and waiting[("Q1other", 20)] == 1
    assert waiting.bytes_waiting() == 41
    assert [unpack(p) for p in waiting.snapshot()] == list(waiting)
    assert waiting.take(("Q1other", 20)) == 1 and waiting.pop((CHECKSUM, 11)) == 3
    assert ("Q1other", 20) not in waiting and len(waiting) == 1
    del waiting[(CHECKSUM, 10)]
    assert not waiting and list(waiting) == []
    waiting.add((CHECKSUM, 10), 4)
    assert waiting[(CHECKSUM, 10)] == 4
