"""Routing a push message to configured arches: pure, so every shape is a table row."""

from __future__ import annotations

import pytest

from mirrord.core.model import ArchKey
from mirrord.sync.push import (
    MAX_PAYLOAD_BYTES,
    Ignored,
    PushOutcome,
    PushRoute,
    push_outcome,
    reconnect_delay,
    route_push,
)
from mirrord.sync.scheduler import Trigger

MAIN_X86 = ArchKey("v3.20", "main", "x86_64")
MAIN_ARM = ArchKey("v3.20", "main", "aarch64")
COMMUNITY_X86 = ArchKey("v3.20", "community", "x86_64")
EDGE_X86 = ArchKey("edge", "main", "x86_64")
CONFIGURED = [MAIN_X86, MAIN_ARM, COMMUNITY_X86, EDGE_X86]
GUIDE_TOPIC = "rsync/rsync.alpinelinux.org/v3.20/main"
MASTER_TOPIC = "rsync/dl-master.alpinelinux.org/v3.20/x86_64"


@pytest.mark.parametrize(
    ("payload", "topic", "keys"),
    [
        (b"v3.20/main/x86_64", GUIDE_TOPIC, [MAIN_X86]),
        (b"v3.20/main/x86_64\n", MASTER_TOPIC, [MAIN_X86]),
        (b"  v3.20/community/x86_64\r\n", "anything", [COMMUNITY_X86]),
        (b"/edge/main/x86_64/", GUIDE_TOPIC, [EDGE_X86]),
        # A branch and an arch: every configured repo of it; a branch and a repo: every arch.
        (b"v3.20/x86_64", MASTER_TOPIC, [MAIN_X86, COMMUNITY_X86]),
        (b"v3.20/main", GUIDE_TOPIC, [MAIN_X86, MAIN_ARM]),
        (b"v3.20", GUIDE_TOPIC, [MAIN_X86, MAIN_ARM, COMMUNITY_X86]),
        # No payload: the topic's levels after rsync/<host>/ say what changed.
        (b"", MASTER_TOPIC, [MAIN_X86, COMMUNITY_X86]),
        (b"\n", "rsync/rsync.alpinelinux.org/edge/main/x86_64", [EDGE_X86]),
    ],
)
def test_a_payload_names_exactly_the_configured_arches_it_matches(
    payload: bytes, topic: str, keys: list[ArchKey]
) -> None:
    assert route_push(payload, topic, CONFIGURED) == PushRoute(tuple(keys))


def test_a_configured_releases_directory_is_routed_to_a_releases_pass() -> None:
    x86 = "v3.20/releases/x86_64"

    def configured(path: str) -> bool:
        return path == x86

    assert route_push(f"{x86}\n".encode(), MASTER_TOPIC, CONFIGURED, configured) == PushRoute(
        (), trees=(x86,)
    )
    assert route_push(b"", f"rsync/dl-master.alpinelinux.org/{x86}", CONFIGURED, configured) == (
        PushRoute((), trees=(x86,))
    )
    not_configured = PushRoute((), Ignored.NOT_CONFIGURED)
    assert route_push(b"v3.20/releases/s390x", MASTER_TOPIC, CONFIGURED, configured) == (
        not_configured
    )
    assert route_push(x86.encode(), MASTER_TOPIC, CONFIGURED) == not_configured  # no trees
    # A package repo that happens to be called "releases" is what the name means.
    repo = ArchKey("v3.20", "releases", "x86_64")
    assert route_push(x86.encode(), MASTER_TOPIC, [repo], configured) == PushRoute((repo,))


@pytest.mark.parametrize(
    ("payload", "topic", "reason"),
    [
        (b"v3.20/main/riscv64", GUIDE_TOPIC, Ignored.NOT_CONFIGURED),
        (b"v3.19/main/x86_64", GUIDE_TOPIC, Ignored.NOT_CONFIGURED),
        (b"v3.20/testing", GUIDE_TOPIC, Ignored.NOT_CONFIGURED),
        (b"V3.20/MAIN/X86_64", GUIDE_TOPIC, Ignored.NOT_CONFIGURED),  # names are exact
        (b"v3.20/main/x86_64/APKINDEX.tar.gz", GUIDE_TOPIC, Ignored.MALFORMED),
        (b"../v3.20/main/x86_64", GUIDE_TOPIC, Ignored.MALFORMED),
        (b"v3.20/../main/x86_64", GUIDE_TOPIC, Ignored.MALFORMED),
        (b"v3.20/./x86_64", GUIDE_TOPIC, Ignored.MALFORMED),
        (b"v3.20//x86_64", GUIDE_TOPIC, Ignored.MALFORMED),
        (b"v3.20\\main\\x86_64", GUIDE_TOPIC, Ignored.MALFORMED),
        (b"v3.20/main/x86_64\nv3.20/main/aarch64", GUIDE_TOPIC, Ignored.MALFORMED),
        (b"v3.20/main/x86_64\x00", GUIDE_TOPIC, Ignored.MALFORMED),
        (b"v3.20/main/%7886_64", GUIDE_TOPIC, Ignored.MALFORMED),
        (b"{}", GUIDE_TOPIC, Ignored.MALFORMED),
        (b"", "alpine/announce", Ignored.MALFORMED),
        (b"", "rsync/rsync.alpinelinux.org", Ignored.MALFORMED),
        (b"\xff\xfe/main/x86_64", GUIDE_TOPIC, Ignored.NOT_UTF8),
        (b"v3.20/main/x86_64" + b" " * MAX_PAYLOAD_BYTES, GUIDE_TOPIC, Ignored.TOO_LARGE),
        (b"v3.20", "rsync/" + "x/" * 1000, Ignored.TOO_LARGE),
    ],
)
def test_anything_else_is_ignored_with_a_reason(
    payload: bytes, topic: str, reason: Ignored
) -> None:
    assert route_push(payload, topic, CONFIGURED) == PushRoute((), reason)


def test_nothing_configured_routes_nothing() -> None:
    assert route_push(b"v3.20/main/x86_64", GUIDE_TOPIC, []).ignored is Ignored.NOT_CONFIGURED


@pytest.mark.parametrize(
    ("triggers", "outcome"),
    [
        ([Trigger.STARTED], PushOutcome.STARTED),
        ([Trigger.QUEUED, Trigger.STARTED], PushOutcome.STARTED),
        ([Trigger.QUEUED], PushOutcome.QUEUED),
        ([Trigger.ALREADY_QUEUED, Trigger.QUEUED], PushOutcome.QUEUED),
        ([Trigger.PAUSED], PushOutcome.QUEUED),
        ([], PushOutcome.IGNORED),
    ],
)
def test_one_outcome_per_message(triggers: list[Trigger], outcome: PushOutcome) -> None:
    assert push_outcome(triggers) is outcome


def test_reconnects_back_off_exponentially_up_to_the_cap_with_jitter() -> None:
    upper = [reconnect_delay(failures, 60.0, jitter=0.999999) for failures in range(9)]
    assert [round(d) for d in upper] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert reconnect_delay(3, 60.0, jitter=0.0) == 4.0  # half of 8 s at the least
    assert reconnect_delay(10_000, 60.0, jitter=0.0) == 30.0  # no overflow after days down
