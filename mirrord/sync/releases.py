"""Mirror the releases trees: discover, verify, store, publish, announce.

One pass walks every configured ``<branch>/releases/<arch>/`` directory (found
from the origin's listings when the configuration says ``all``), then the
top-level files, then ``latest-stable``. Per directory: list it (and its
subdirectories, such as ``netboot/``), read its sidecars and
``latest-releases.yaml``, join them into what each file must be, let
``plan_tree`` decide, download what changed (one file at a time, through the
shared rate limit, on the download connections), make it durable through the
committer, publish content first and indexes last, delete what waited out
the grace, save the manifest, and announce on the publish feed. Any
disagreement refuses the directory and leaves it as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from structlog.typing import FilteringBoundLogger

from mirrord.alpine.latestreleases import LATEST_RELEASES, ReleaseEntry, parse_latest_releases
from mirrord.alpine.listing import Listing, ListingEntry, parse_listing
from mirrord.alpine.sidecars import (
    MAX_SIDECAR_BYTES,
    Expected,
    expectations,
    parse_sidecar,
    sidecar_of,
)
from mirrord.core.clock import Clock
from mirrord.core.config import Config, ReleasesConfig
from mirrord.core.errors import (
    MirrordError,
    PermanentOriginError,
    PublishError,
    TreeRejectedError,
    said_beside,
)
from mirrord.core.metrics import Metrics
from mirrord.core.model import TreeFile, TreeManifest, TreeSnapshot, valid_segment
from mirrord.fetch.filedownload import FileDownloader
from mirrord.fetch.origin import OriginClient
from mirrord.publish.generations import branch_goes_back
from mirrord.publish.treeplan import OriginFile, choose_latest_stable, is_index, plan_tree
from mirrord.publish.treepublisher import TreePublisher
from mirrord.storage.committer import Committer
from mirrord.storage.store import StoredObject
from mirrord.storage.treehistory import TreeHistory
from mirrord.storage.treestate import TreeState
from mirrord.sync.feed import Published, PublishFeed
from mirrord.sync.treerollback import roll_back_tree

MAX_LISTING_BYTES = 8 << 20
MAX_YAML_BYTES = 1 << 20
MAX_DEPTH = 2  # <arch>/ and one level below it (netboot/)
LATEST_STABLE = "latest-stable"
_BRANCH = re.compile(r"edge|v\d+\.\d+")


@dataclass
class TreeOutcome:
    directory: str
    outcome: str  # "published", "unchanged", "refused", "failed"
    error: str | None = None
    fetched: int = 0
    fetched_bytes: int = 0
    unverified: tuple[str, ...] = ()
    pending_removal: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome in ("published", "unchanged", "held")


@dataclass
class TreeStatus:
    """What ``ctl status`` and the metrics say of one releases directory (or top-level file)."""

    directory: str
    outcome: str | None = None
    error: str | None = None
    checked_at: float | None = None
    published_at: float | None = None
    behind_since: float | None = None  # the origin had what we do not serve, since
    unverified: int = 0
    pending_removal: int = 0
    held: bool = False  # rolled back: passes publish nothing here until released

    def lag(self, now: float) -> float:
        return 0.0 if self.behind_since is None else max(0.0, now - self.behind_since)


@dataclass
class TreePass:
    outcomes: list[TreeOutcome] = field(default_factory=list)
    latest_stable: str | None = None

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


class ReleaseMirror:
    def __init__(
        self,
        *,
        config: Callable[[], Config],
        origin: OriginClient,
        downloader: FileDownloader,
        committer: Committer,
        trees: TreePublisher,
        state: TreeState,
        history: TreeHistory,
        feed: PublishFeed,
        clock: Clock,
        log: FilteringBoundLogger,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics or Metrics()
        self._origin = origin
        self.downloader = downloader
        self._committer = committer
        self._trees = trees
        self.state = state
        self.history = history
        self._feed = feed
        self._clock = clock
        self._log = log
        self._lock = asyncio.Lock()  # one pass at a time
        self.last: TreePass | None = None
        self.status: dict[str, TreeStatus] = {}
        self.running = False
        self.passes = 0
        self._passed = asyncio.Condition()
        # Objects published in (or committed for) a releases directory: garbage
        # collection keeps them, as it keeps what a package snapshot lists.
        self._published: dict[str, set[str]] = {}
        self._remembered: dict[str, set[str]] = {}  # objects of remembered snapshots
        self._committed: set[str] = set()
        self._directory_locks: dict[str, asyncio.Lock] = {}  # a pass's publish or a rollback
        self.held: set[str] = set()  # rolled back: no pass publishes them until released
        self._asked = asyncio.Event()  # an operator asked for a pass now (ctl sync/publish)
        self._asked_force: set[str] = set()

    # --- one pass -------------------------------------------------------------------

    async def run_pass(self, force: Collection[str] = ()) -> TreePass:
        config = self._config()
        releases = config.releases
        result = TreePass()
        if releases is None:
            return result
        async with self._lock:
            self.running = True
            try:
                await self._pass(releases, config, force, result)
            finally:
                self.running = False
                self._committed.clear()
            self.last = result
        async with self._passed:
            self.passes += 1
            self._passed.notify_all()
        return result

    def ask(self, force: Collection[str] = ()) -> str:
        """A pass now (or right after the one running), past the guard for ``force``."""
        self._asked_force.update(force)
        queued = self.running or self._asked.is_set()
        self._asked.set()
        return "queued" if queued else "started"

    async def asked(self) -> None:
        """Until an operator asks for a pass."""
        await self._asked.wait()

    def take_asked(self) -> set[str]:
        """The directories the asked-for pass forces; the request is taken."""
        self._asked.clear()
        force, self._asked_force = self._asked_force, set()
        return force

    def configured(self, directory: str) -> bool:
        """Whether ``directory`` (``<branch>/releases/<arch>``) is one the config mirrors."""
        releases = self._config().releases
        parts = directory.split("/")
        if releases is None or len(parts) != 3 or parts[1] != "releases":
            return False
        branch, _, arch = parts
        return (releases.branches == ("all",) or branch in releases.branches) and (
            releases.arches == ("all",) or arch in releases.arches
        )

    async def wait_for_passes(self, count: int) -> None:
        """Until ``count`` passes have ended (for tests and ``ctl``)."""
        async with self._passed:
            await self._passed.wait_for(lambda: self.passes >= count)

    async def load(self) -> None:
        """At start-up: sweep what a crash left in the releases trees, then read every
        manifest and snapshot history, so garbage collection knows their objects."""
        swept = await asyncio.to_thread(self._sweep_all)
        if swept:
            self._log.info("releases.recovery.swept", temp_files=swept)
        for directory in await asyncio.to_thread(self.state.directories):
            manifest = await asyncio.to_thread(self.state.load, directory)
            self._published[directory] = {f.sha256 for f in manifest.files.values()}
        for directory in await asyncio.to_thread(self.history.directories):
            await self._remember_objects(directory)

    async def _remember_objects(self, directory: str) -> None:
        history = await asyncio.to_thread(self.history.load, directory)
        self._remembered[directory] = {f.sha256 for s in history for f in s.files.values()}

    def in_use(self) -> set[str]:
        """Every object a releases directory publishes or remembers, or a pass just committed."""
        return self._committed.union(*self._published.values(), *self._remembered.values())

    def _sweep_all(self) -> int:
        """Blocking: temp names in every published releases directory, at the top level,
        and beside the manifests (a crash in their atomic write)."""
        if self._config().releases is None:
            return 0
        swept = self._trees.sweep_top() + self.state.sweep() + self.history.sweep()
        return swept + sum(self._trees.sweep(d) for d in self._trees.releases_directories())

    def _directory_lock(self, directory: str) -> asyncio.Lock:
        return self._directory_locks.setdefault(directory, asyncio.Lock())

    # --- snapshots and rollback -----------------------------------------------------------

    def release(self, directory: str) -> bool:
        """End a rollback's hold; whether there was one."""
        held = directory in self.held
        self.held.discard(directory)
        if directory in self.status:
            self.status[directory].held = False
        return held

    async def history_of(self, directory: str) -> list[TreeSnapshot]:
        """The remembered snapshots of ``directory``, oldest first."""
        return await asyncio.to_thread(self.history.load, directory)

    async def current_snapshot(self, directory: str) -> int | None:
        return (await asyncio.to_thread(self.state.load, directory)).snapshot

    async def rollback(self, directory: str, snapshot_id: int) -> TreeSnapshot:
        """Publish a remembered snapshot again and hold the directory there."""
        log = self._log.bind(directory=directory)
        async with self._directory_lock(directory):
            now = self._clock.time()
            snapshot, plan = await roll_back_tree(
                directory,
                snapshot_id,
                history=self.history,
                state=self.state,
                trees=self._trees,
                now=now,
            )
            self._published[directory] = {f.sha256 for f in plan.manifest.files.values()}
            self.held.add(directory)
            status = self.status.setdefault(directory, TreeStatus(directory))
            status.held, status.published_at, status.outcome = True, now, "held"
            status.pending_removal = len(plan.manifest.gone_since)
            changed = plan.indexes or plan.content
            self._feed.announce(
                Published(directory, tuple(f"{directory}/{p}" for p in changed), self._clock.time())
            )
        log.warning(
            "releases.rollback.done",
            snapshot=snapshot_id,
            files=len(snapshot.files),
            pending_removal=len(plan.manifest.gone_since),
        )
        return snapshot

    def _add(self, result: TreePass, outcome: TreeOutcome) -> None:
        result.outcomes.append(outcome)
        self._note(outcome)

    def _note(self, outcome: TreeOutcome) -> None:
        status = self.status.setdefault(outcome.directory, TreeStatus(outcome.directory))
        now = self._clock.time()
        status.outcome, status.error, status.checked_at = outcome.outcome, outcome.error, now
        if outcome.ok:
            status.behind_since = None
            status.unverified = len(outcome.unverified)
            status.pending_removal = outcome.pending_removal
            if outcome.outcome == "published":
                status.published_at = now
        elif status.behind_since is None:
            status.behind_since = now

    def _behind(self, directory: str, since: float) -> None:
        status = self.status.setdefault(directory, TreeStatus(directory))
        if status.behind_since is None:
            status.behind_since = since

    async def _pass(
        self, releases: ReleasesConfig, config: Config, force: Collection[str], result: TreePass
    ) -> None:
        branches: dict[str, list[str]] = {}
        for branch in await self._branches(releases, result):
            arches = await self._arches(releases, branch, result)
            branches[branch] = [f"{branch}/releases/{arch}" for arch in arches]
        for directories in branches.values():
            for directory in directories:
                outcome = await self.sync_directory(directory, config, force=directory in force)
                self._add(result, outcome)
        swept = await asyncio.to_thread(self._trees.sweep_top)
        if swept:
            self._log.info("releases.top.swept", temp_files=swept)
        for name in releases.files:
            self._add(result, await self._top_file(name))
        if releases.latest_stable:
            published = {
                branch: bool(dirs) and all(o.ok for o in result.outcomes if o.directory in dirs)
                for branch, dirs in branches.items()
            }
            back = config.publish.older_index == "publish"
            result.latest_stable = await self._latest_stable(published, result, back=back)

    async def _list(self, relpath: str) -> Listing:
        url = self._origin.path_url(f"{relpath}/" if relpath else "")
        got = await self._origin.fetch_small(
            url, max_bytes=MAX_LISTING_BYTES, now=self._clock.time(), what="listing"
        )
        assert got.body is not None  # no validators sent
        listing = parse_listing(got.body, str(url))
        for refused in listing.refused:
            self._log.warning(
                "releases.listing.refused",
                directory=relpath,
                name=refused.name,
                reason=refused.reason,
            )
        return listing

    async def _branches(self, releases: ReleasesConfig, result: TreePass) -> list[str]:
        if releases.branches != ("all",):
            return list(releases.branches)
        try:
            top = await self._list("")
        except MirrordError as error:
            self._add(result, TreeOutcome("", "failed", str(error)))
            return []
        return [d for d in top.directories() if _BRANCH.fullmatch(d)]

    async def _arches(self, releases: ReleasesConfig, branch: str, result: TreePass) -> list[str]:
        if releases.arches != ("all",):
            return list(releases.arches)
        try:
            listing = await self._list(f"{branch}/releases")
        except PermanentOriginError as error:
            if error.status == 404:
                return []  # a branch without releases (most old ones have them; edge may not)
            self._add(result, TreeOutcome(f"{branch}/releases", "failed", str(error)))
            return []
        except MirrordError as error:
            self._add(result, TreeOutcome(f"{branch}/releases", "failed", str(error)))
            return []
        return [d for d in listing.directories() if valid_segment(d)]

    # --- one directory ----------------------------------------------------------------

    async def sync_directory(
        self, directory: str, config: Config, *, force: bool = False
    ) -> TreeOutcome:
        log = self._log.bind(directory=directory)
        if directory in self.held:
            log.info("releases.directory.held")
            return TreeOutcome(directory, "held")
        try:
            return await self._sync_directory(directory, config, force, log)
        except (MirrordError, OSError) as error:
            if isinstance(error, TreeRejectedError | PublishError):
                log.warning("releases.directory.refused", error=str(error))
                return TreeOutcome(directory, "refused", said_beside(error))
            log.warning("releases.directory.failed", error=str(error))
            return TreeOutcome(directory, "failed", str(error))

    async def _walk(self, directory: str) -> dict[str, ListingEntry]:
        files: dict[str, ListingEntry] = {}
        pending = [("", 1)]
        while pending:
            sub, depth = pending.pop()
            listing = await self._list(f"{directory}/{sub}".rstrip("/"))
            for entry in listing.entries:
                relpath = f"{sub}{entry.name}"
                if entry.is_dir:
                    if depth < MAX_DEPTH:
                        pending.append((f"{relpath}/", depth + 1))
                else:
                    files[relpath] = entry
        return files

    async def _small(self, path: str, limit: int) -> bytes:
        got = await self._origin.fetch_small(
            self._origin.path_url(path), max_bytes=limit, now=self._clock.time()
        )
        assert got.body is not None
        return got.body

    async def _sync_directory(
        self, directory: str, config: Config, force: bool, log: FilteringBoundLogger
    ) -> TreeOutcome:
        releases = config.releases
        assert releases is not None
        branch, _, arch = directory.split("/")
        swept = await asyncio.to_thread(self._trees.sweep, directory)
        if swept:
            log.info("releases.directory.swept", temp_files=swept)
        listed = await self._walk(directory)
        # The "index" files are small: read them whole, they decide what the rest must be.
        index_bytes: dict[str, bytes] = {}
        sidecars: dict[str, dict[str, dict[str, str]]] = {}  # subdir -> target -> alg -> hex
        entries: tuple[ReleaseEntry, ...] = ()
        for relpath in sorted(p for p in listed if is_index(p)):
            limit = MAX_YAML_BYTES if relpath == LATEST_RELEASES else MAX_SIDECAR_BYTES
            data = await self._small(f"{directory}/{relpath}", limit)
            index_bytes[relpath] = data
            sub, _, name = relpath.rpartition("/")
            if name == LATEST_RELEASES:
                if sub:
                    continue  # only the arch directory's own yaml describes it
                text = data.decode("utf-8", "replace")
                entries = parse_latest_releases(
                    text, f"{directory}/{relpath}", branch=branch, arch=arch
                )
                continue
            target, algorithm = sidecar_of(name) or ("", "")
            digest = parse_sidecar(data, f"{directory}/{relpath}", algorithm, target)
            sidecars.setdefault(sub, {}).setdefault(target, {})[algorithm] = digest
        wanted: dict[str, OriginFile] = {}
        subdirs = {p.rpartition("/")[0] for p in listed}
        for sub in sorted(subdirs):
            names = [p.rpartition("/")[2] for p in listed if p.rpartition("/")[0] == sub]
            where = f"{directory}/{sub}".rstrip("/")
            joined = expectations(where, names, sidecars.get(sub, {}), entries if not sub else ())
            for name, expected in joined.items():
                relpath = f"{sub}/{name}" if sub else name
                entry = listed[relpath]
                if relpath in index_bytes:
                    data = index_bytes[relpath]
                    expected = Expected(len(data), hashlib.sha256(data).hexdigest())
                mtime = entry.mtime.isoformat() if entry.mtime else None
                wanted[relpath] = OriginFile(expected, entry.size, mtime)
        manifest = await asyncio.to_thread(self.state.load, directory)
        now = self._clock.time()
        plan = plan_tree(
            directory,
            wanted,
            manifest,
            now=now,
            grace=config.publish.grace,
            max_delete_fraction=config.publish.max_delete_fraction,
            force=force,
        )
        if plan.fetch or plan.delete:
            self._behind(directory, now)
        files = dict(manifest.files)
        fetched_bytes = reused = 0
        for relpath in plan.fetch:  # one at a time: an ISO never crowds out package downloads
            origin_file = wanted[relpath]
            if relpath in index_bytes:
                sha256 = await self._committer.commit_bytes(index_bytes[relpath])
                size, last_modified = len(index_bytes[relpath]), None
            elif (stored_size := await self._stored(origin_file.expected)) is not None:
                # Stored before (a pass a crash cut short, another directory): not again.
                assert origin_file.expected.sha256 is not None
                size, last_modified = stored_size, None
                sha256 = await self._committer.commit(
                    StoredObject(origin_file.expected.sha256, size), None
                )
                reused += 1
            else:
                if self.downloader.yield_to is not None:
                    await self.downloader.yield_to()  # packages first: start no image beside them
                received = self.downloader.received
                try:
                    stored = await self.downloader.download(
                        f"{directory}/{relpath}", origin_file.expected, releases.max_file_bytes
                    )
                finally:  # what came off the wire, retries and refused bodies included
                    self._metrics.fetched_bytes.labels(
                        branch=branch, repo="releases", arch=arch, outcome="received"
                    ).inc(self.downloader.received - received)
                size, last_modified = stored.digest.size, stored.last_modified
                sha256 = await self._committer.commit(
                    StoredObject(stored.digest.sha256, size), None
                )
                fetched_bytes += size
            self._committed.add(sha256)
            files[relpath] = TreeFile(
                sha256,
                size,
                origin_file.expected.sources,
                last_modified,
                origin_file.listed_mtime,
            )
        for relpath in plan.keep:  # the listing's mtime moves on; what it means does not
            files[relpath] = _with_listed_mtime(files[relpath], wanted[relpath].listed_mtime)
        unverified = tuple(p for p in sorted(wanted) if not wanted[p].expected.sources)
        if not plan.fetch and not plan.delete and plan.gone_since == manifest.gone_since:
            if manifest.snapshot is None and manifest.files:  # published before snapshots
                await self._remember(directory, manifest, wanted, config, forced=False)
            return TreeOutcome(
                directory, "unchanged", unverified=unverified, pending_removal=len(plan.gone_since)
            )
        fetched = set(plan.fetch)
        content = [(p, files[p].sha256) for p in plan.content if p in fetched]
        indexes = [(p, files[p].sha256) for p in plan.indexes if p in fetched]
        async with self._directory_lock(directory):  # a rollback waits for this publish
            if directory in self.held:  # rolled back while this pass downloaded
                return TreeOutcome(directory, "held")
            await asyncio.to_thread(self._trees.publish, directory, content, indexes)
            deleted = await asyncio.to_thread(self._trees.delete, directory, plan.delete)
            for relpath in plan.delete:
                files.pop(relpath, None)
            new = TreeManifest(files, plan.gone_since, now)
            dropped = force and bool(plan.gone_since.keys() - manifest.gone_since.keys())
            await self._remember(directory, new, wanted, config, forced=dropped)
            self._published[directory] = {f.sha256 for f in files.values()}
        changed = tuple(f"{directory}/{p}" for p, _ in indexes) or tuple(
            f"{directory}/{p}" for p, _ in content
        )
        self._feed.announce(Published(directory, changed, self._clock.time()))
        log.info(
            "releases.directory.published",
            fetched=len(plan.fetch),
            bytes=fetched_bytes,
            reused=reused,
            deleted=len(deleted),
            pending_removal=len(plan.gone_since),
        )
        return TreeOutcome(
            directory,
            "published",
            fetched=len(plan.fetch),
            fetched_bytes=fetched_bytes,
            unverified=unverified,
            pending_removal=len(plan.gone_since),
        )

    # --- the top level ------------------------------------------------------------------

    async def _top_file(self, name: str) -> TreeOutcome:
        try:
            got = await self._origin.fetch_small(
                self._origin.path_url(name), max_bytes=MAX_YAML_BYTES, now=self._clock.time()
            )
            assert got.body is not None
            current = await asyncio.to_thread(_read_or_none, self._trees.root / name)
            if current == got.body:
                return TreeOutcome(name, "unchanged", unverified=(name,))
            await asyncio.to_thread(self._trees.write_file, name, got.body, got.last_modified_ts)
        except (MirrordError, OSError) as error:
            self._log.error("releases.file.failed", path=name, error=str(error))
            return TreeOutcome(name, "failed", str(error))
        self._feed.announce(Published("", (name,), self._clock.time()))
        return TreeOutcome(
            name, "published", fetched=1, fetched_bytes=len(got.body), unverified=(name,)
        )

    def _settled(self, outcome: str) -> None:
        """The link was checked without trouble: a failure or refusal shown until now is over."""
        if LATEST_STABLE in self.status:
            self._note(TreeOutcome(LATEST_STABLE, outcome))

    async def _origin_latest_stable(self) -> str | None:
        """The branch the origin's ``latest-stable`` names: its latest-releases.yaml says."""
        listing = await self._list(f"{LATEST_STABLE}/releases")
        for arch in listing.directories():
            path = f"{LATEST_STABLE}/releases/{arch}/{LATEST_RELEASES}"
            try:
                text = (await self._small(path, MAX_YAML_BYTES)).decode("utf-8", "replace")
            except PermanentOriginError:
                continue
            named = {e.branch for e in parse_latest_releases(text, path, arch=arch)}
            if len(named) == 1:
                return named.pop()
        return None

    async def _latest_stable(
        self, published: dict[str, bool], result: TreePass, *, back: bool
    ) -> str | None:
        """Point ``latest-stable`` where the origin's does, once that branch is published here.

        ``back``: follow it to an older branch too (``publish.older_index: publish``).
        """
        current = await asyncio.to_thread(self._trees.read_link, LATEST_STABLE)
        try:
            target = await self._origin_latest_stable()
        except MirrordError as error:
            self._log.error("releases.latest_stable.failed", error=str(error))
            self._add(result, TreeOutcome(LATEST_STABLE, "failed", str(error)))
            return current
        move_to = choose_latest_stable(target, published, current)
        if move_to is not None and not back and branch_goes_back(move_to, current):
            refusal = (
                f"refusing to move latest-stable back from {current} to {move_to}: the origin's "
                "link names an older branch (a server behind the others, or a restore); "
                "publish.older_index: publish follows it"
            )
            self._log.warning("releases.latest_stable.refused", origin=move_to, published=current)
            self._add(result, TreeOutcome(LATEST_STABLE, "refused", refusal))
            return current
        if move_to is None:
            if target is not None and target != current:
                self._log.info("releases.latest_stable.waiting", origin=target, published=current)
            self._settled("unchanged")
            return current
        await asyncio.to_thread(self._trees.point_link, LATEST_STABLE, move_to)
        self._feed.announce(Published("", (LATEST_STABLE,), self._clock.time()))
        self._log.info("releases.latest_stable.moved", previous=current, target=move_to)
        self._settled("published")
        return move_to

    async def _stored(self, expected: Expected) -> int | None:
        """The size of the object ``expected`` names, when the store has it already."""
        if expected.sha256 is None:
            return None
        size = await asyncio.to_thread(self._trees.stored_size, expected.sha256)
        return size if size is not None and expected.size in (None, size) else None

    async def _remember(
        self,
        directory: str,
        manifest: TreeManifest,
        listed: Collection[str],
        config: Config,
        *,
        forced: bool,
    ) -> None:
        """Remember what the directory lists now as a snapshot, then save its manifest."""
        manifest.snapshot = await asyncio.to_thread(
            self.history.remember,
            directory,
            {p: f for p, f in manifest.files.items() if p in listed},
            created_at=manifest.published_at or self._clock.time(),
            keep=config.publish.keep_snapshots,
            forced=forced,
        )
        await asyncio.to_thread(self.state.save, directory, manifest)
        await self._remember_objects(directory)


def _with_listed_mtime(old: TreeFile, mtime: str | None) -> TreeFile:
    return TreeFile(old.sha256, old.size, old.verified_by, old.last_modified, mtime)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
