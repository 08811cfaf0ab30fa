"""Roll one releases directory back to a remembered snapshot: files first, indexes last.

The same transaction as a publish: every file the snapshot lists must still
be in the store (else a clear error and nothing changes), its content files
are linked first, its sidecars and ``latest-releases.yaml`` last, files it
does not list wait out ``publish.grace``, then the manifest is saved.
"""

from __future__ import annotations

import asyncio

from mirrord.core.errors import ControlError
from mirrord.core.model import TreeSnapshot
from mirrord.publish.treeplan import TreeRollback, plan_tree_rollback
from mirrord.publish.treepublisher import TreePublisher
from mirrord.storage.treehistory import TreeHistory
from mirrord.storage.treestate import TreeState


async def roll_back_tree(
    directory: str,
    snapshot_id: int,
    *,
    history: TreeHistory,
    state: TreeState,
    trees: TreePublisher,
    now: float,
) -> tuple[TreeSnapshot, TreeRollback]:
    """Blocking work in threads; the caller holds the directory's lock and announces."""
    snapshot = await asyncio.to_thread(history.find, directory, snapshot_id)
    if snapshot is None:
        raise ControlError("not_found", f"{directory} has no snapshot {snapshot_id}")
    digests = {f.sha256 for f in snapshot.files.values()}
    missing = await asyncio.to_thread(trees.missing, digests)
    if missing:
        names = sorted(p for p, f in snapshot.files.items() if f.sha256 in missing)
        raise ControlError(
            "not_found",
            f"snapshot {snapshot_id} of {directory} is no longer complete in the store "
            f"({len(names)} files missing, e.g. {', '.join(names[:3])}); nothing was changed",
        )
    manifest = await asyncio.to_thread(state.load, directory)
    plan = plan_tree_rollback(snapshot, manifest, now=now)
    files = plan.manifest.files
    await asyncio.to_thread(
        trees.publish,
        directory,
        [(p, files[p].sha256) for p in plan.content],
        [(p, files[p].sha256) for p in plan.indexes],
    )
    await asyncio.to_thread(state.save, directory, plan.manifest)
    return snapshot, plan
