"""The waiting map, held in columns, behaves as a dict of identity -> positions."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest

from mirrord.publish.waiting import Identity, Positions, Waiting

CHECKSUM = "Q1ZmFrZWNoZWNrc3VtZm9yYXRlc3Q="


def q1(seed: int) -> str:
    """A canonical Alpine checksum: "Q1" + the base64 of a SHA-1."""
    return "Q1" + base64.b64encode(hashlib.sha1(str(seed).encode()).digest()).decode()


def test_positions_accumulate_per_identity_in_first_added_order() -> None:
    waiting = Waiting()
    waiting.add((CHECKSUM, 10), 0)
    waiting.add(("Q1other", 20), 1)
    waiting.add((CHECKSUM, 10), 2)
    waiting.add((CHECKSUM, 11), 3)  # same checksum, other size: another identity
    assert list(waiting) == [(CHECKSUM, 10), ("Q1other", 20), (CHECKSUM, 11)]
    assert waiting[(CHECKSUM, 10)] == [0, 2] and waiting[("Q1other", 20)] == 1
    assert waiting.bytes_waiting() == 41
    assert [waiting.identity(entry) for entry in waiting.snapshot()] == list(waiting)
    assert waiting.take(("Q1other", 20)) == 1 and waiting.take((CHECKSUM, 11)) == 3
    assert waiting.take(("Q1other", 20)) is None
    assert ("Q1other", 20) not in waiting and len(waiting) == 1
    with pytest.raises(KeyError):
        waiting[("Q1other", 20)]
    assert waiting.take((CHECKSUM, 10)) == [0, 2]
    assert not waiting and list(waiting) == [] and waiting.bytes_waiting() == 0
    waiting.add((CHECKSUM, 10), 4)  # an emptied map takes identities again
    assert waiting[(CHECKSUM, 10)] == 4 and len(waiting) == 1


def test_checksums_that_are_not_canonical_round_trip_as_text() -> None:
    canonical = q1(1)
    # The same 20 bytes with stray bits in the padding, a "Q2", a non-ASCII text.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    stray = canonical[:-2] + alphabet[alphabet.index(canonical[-2]) ^ 1] + "="
    assert base64.b64decode(stray[2:]) == base64.b64decode(canonical[2:])
    odd = [stray, "Q2" + canonical[2:], "Q1é", "", canonical[2:]]
    waiting = Waiting()
    for position, checksum in enumerate([canonical, *odd]):
        waiting.add((checksum, 7), position)
    assert list(waiting) == [(canonical, 7)] + [(checksum, 7) for checksum in odd]
    assert waiting[(stray, 7)] == 1 and waiting[(canonical, 7)] == 0
    assert (canonical, 7) in waiting and ("Q1é", 7) in waiting and ("Q1é", 8) not in waiting
    not_identities: list[object] = ["Q1é", ("Q1é", "7"), ("Q1é", 7, 7)]
    assert not any(other in waiting for other in not_identities)


def test_twins_share_one_entry_and_leave_together() -> None:
    waiting = Waiting()
    twin = (q1(5), 100)
    waiting.add(twin, 0)
    waiting.add((q1(6), 100), 1)
    waiting.add(twin, 2)
    waiting.add(twin, 3)
    first, second = waiting.snapshot()
    assert waiting.identity(first) == twin and waiting.positions(first) == [0, 2, 3]
    assert waiting.size(first) == 100 and waiting.bytes_waiting() == 200
    assert waiting.take_entry(first) == [0, 2, 3]
    assert waiting.take_entry(first) is None and twin not in waiting
    assert list(waiting.snapshot()) == [second]
    with pytest.raises(KeyError):
        waiting.positions(first)
    waiting.add(twin, 9)  # after it left: a new entry, alone
    assert waiting[twin] == 9 and list(waiting) == [(q1(6), 100), twin]


def test_batches_cover_the_waiting_identities_in_order() -> None:
    waiting = Waiting()
    for i in range(7):
        waiting.add((q1(i), i), i)
    waiting.take((q1(3), 3))
    assert [len(batch) for batch in waiting.batches(2)] == [2, 2, 2]
    assert [one for batch in waiting.batches(4) for one in batch] == list(waiting)


def test_a_large_random_set_matches_a_plain_dict() -> None:
    rng = random.Random(15)
    waiting = Waiting()
    expected: dict[Identity, list[int]] = {}
    # A few sizes per checksum (the same C: with another S: is another identity), some twins.
    identities = [(q1(rng.randrange(9000)), rng.randrange(4)) for _ in range(12_000)]
    for position, identity in enumerate(identities):
        waiting.add(identity, position)
        expected.setdefault(identity, []).append(position)

    def bare(positions: list[int]) -> Positions:
        return positions if len(positions) > 1 else positions[0]

    assert len(waiting) == len(expected) and list(waiting) == list(expected)
    assert any(len(positions) > 1 for positions in expected.values())
    order = list(expected)
    rng.shuffle(order)
    for gone in order[: len(order) // 2]:
        assert waiting.take(gone) == bare(expected.pop(gone))
        assert gone not in waiting
    for identity, positions in expected.items():
        assert waiting[identity] == bare(positions)
    assert list(waiting) == list(expected)
    assert waiting.bytes_waiting() == sum(size for _, size in expected)
    # Taken ones come back as new entries, after the others.
    for position, identity in enumerate(order[:50], start=len(identities)):
        if identity not in expected:
            waiting.add(identity, position)
            expected[identity] = [position]
    assert list(waiting) == list(expected)
    for entry in waiting.snapshot():
        identity = waiting.identity(entry)
        assert waiting.take_entry(entry) == bare(expected.pop(identity))
    assert not expected and not waiting and list(waiting.snapshot()) == []


def test_lookups_by_identity_work_again_after_the_slot_array_is_dropped() -> None:
    waiting = Waiting()
    for i in range(100):
        waiting.add((q1(i), i), i)
    waiting.drop_lookups()
    assert waiting.take_entry(0) == 0 and waiting.identity(1) == (q1(1), 1)
    assert (q1(0), 0) not in waiting and waiting[(q1(50), 50)] == 50
    waiting.drop_lookups()
    waiting.add((q1(7), 7), 100)  # a twin, found through the rebuilt slots
    assert waiting.take((q1(7), 7)) == [7, 100] and len(waiting) == 98
    assert list(waiting) == [(q1(i), i) for i in range(1, 100) if i != 7]
