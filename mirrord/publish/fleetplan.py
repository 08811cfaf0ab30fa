"""Fleet mode's one decision: may this node make a staged index live now?

Pure: the caller reads the fleet's state from the coordination service (who
is a member, who staged which index of the arch) and acts on the answer.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class StagedIndex:
    """One node has every file of this index linked and durable, its index not yet live."""

    node: str
    digest: str  # sha256 of the index bytes: the same on every node for one origin index
    origin_mtime: float | None  # the origin's Last-Modified of it: orders generations


class Verdict(enum.StrEnum):
    GO = "all"  # every member has staged it
    WAIT = "wait"
    GO_WITHOUT = "left_out"  # stage_timeout passed: go live, leaving out the nodes named
    SUPERSEDED = "superseded"  # a member staged a newer index: poll again instead
    ALONE = "alone"  # etcd unreachable for stage_timeout: go live without the fleet


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    missing: tuple[str, ...] = ()  # members that have not staged our index


def decide(
    *,
    me: str,
    digest: str,
    origin_mtime: float | None,
    members: Collection[str],
    staged: Iterable[StagedIndex],
    waited: float,
    timeout: float,
) -> Decision:
    """Go when every live member staged ``digest``; after ``timeout``, go without the rest.

    A member that staged a newer index (by the origin's Last-Modified) will not
    stage ours: it skipped our generation. Going live with ours would let the
    CDN take our index and ask that node for a file it never had, so we do not
    wait for it either: we poll the origin again (SUPERSEDED).
    """
    staged = list(staged)
    have = {s.node for s in staged if s.digest == digest}
    missing = tuple(sorted(set(members) - have - {me}))
    if not missing:
        return Decision(Verdict.GO)
    if origin_mtime is not None and any(
        s.node in missing and s.origin_mtime is not None and s.origin_mtime > origin_mtime
        for s in staged
    ):
        return Decision(Verdict.SUPERSEDED, missing)
    if waited >= timeout:
        return Decision(Verdict.GO_WITHOUT, missing)
    return Decision(Verdict.WAIT, missing)
