"""The ``mirrord`` command line. The only place that picks the event loop (uvloop).

Exit codes: 0 done, 1 some arch failed (sync) or a check found problems,
2 bad configuration or usage, 3 cannot run (storage locked or unusable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mirrord import __version__
from mirrord.core.aio import first_of_group, run_async
from mirrord.core.crashpoints import CrashPoints
from mirrord.core.errors import ConfigError, LockHeldError, MirrordError
from mirrord.core.heap import cap_arenas, pin_mmap_threshold
from mirrord.core.streams import reader_gone, to_devnull
from mirrord.shell import ctl
from mirrord.shell.sdnotify import Notifier

# Each command imports what it uses: `mirrord ctl`, `--help` and `check-config` are
# typed by people and run by scripts, and the sync machinery is ~0.2 s of imports
# (tests/test_layers.py holds what they load).
if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from mirrord.core.config import Config
    from mirrord.core.model import ArchKey
    from mirrord.sync.preflight import Root
    from mirrord.sync.releases import TreePass
    from mirrord.sync.runtime import Runtime

DEFAULT_CONFIG = Path("/etc/mirrord/mirrord.yaml")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANNOT_RUN = 0, 1, 2, 3


def _fail(message: str, code: int) -> int:
    print(f"mirrord: {message}", file=sys.stderr)
    return code


def _load(path: Path) -> Config:
    from mirrord.core.config.parse import load_config

    try:
        return load_config(path)
    except ConfigError as error:
        raise ConfigError(error.key_path, f"{error.reason}") from None


def _arch_list(values: Sequence[str] | None, parser: argparse.ArgumentParser) -> list[ArchKey]:
    from mirrord.core.model import ArchKey

    keys: list[ArchKey] = []
    for value in values or ():
        try:
            keys.append(ArchKey.parse(value))
        except ValueError as error:
            parser.error(str(error))
    return keys


# --- commands -------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    from mirrord.sync.preflight import preflight

    config = _load(args.config)
    checked = preflight(config)
    arches = config.arch_keys()
    print(f"{args.config}: OK")
    print(f"  origin      {config.origin.url}")
    print(f"  trusted     {len(checked.keyring.names)} keys in {config.origin.keys}")
    print(f"  arches      {len(arches)}: {', '.join(str(k) for k in arches)}")
    print(f"  storage     {_root(checked.storage)}")
    print(f"  publish     {_root(checked.publish)}, grace {config.publish.grace:g} s")
    print("  filesystem  storage and publish share one (published files are hard links)")
    if config.s3 is not None:
        from mirrord.publish.bucket import load_credentials

        credentials = load_credentials(config.s3, os.environ)
        source = config.s3.credentials_file or "the environment"
        print(f"  bucket      {config.s3.bucket}/{config.s3.prefix} at {config.s3.endpoint}")
        print(f"  credentials key {credentials.access_key} from {source} (not checked online)")
        if config.s3.sign_payload:
            print("  bodies      Content-MD5 and signed (a SHA-256 pass over each body)")
        elif not config.s3.endpoint.startswith("https:"):
            print("  bodies      Content-MD5, not signed, over plain http (s3.sign_payload)")
    if config.fleet is not None:
        fleet = config.fleet
        print(
            f"  fleet       node {fleet.node} under {fleet.prefix} in etcd "
            f"{', '.join(fleet.etcd)}, stage_timeout {fleet.stage_timeout:g} s, "
            f"/health behind the fleet after {fleet.behind_grace:g} s (not checked online)"
        )
    return EXIT_OK


def _root(root: Root) -> str:
    if root.exists:
        return str(root.path)
    return f"{root.path} (not there yet: created at start, in {root.existing})"


def cmd_sync(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from mirrord.core.clock import SystemClock
    from mirrord.core.logoutput import LogOutput
    from mirrord.core.logs import make_logger
    from mirrord.shell.progress import ProgressReporter, summary
    from mirrord.sync.runtime import open_runtime

    config = _load(args.config)
    if config.s3 is not None:  # refuse before syncing, not after
        from mirrord.publish.bucket import load_credentials

        load_credentials(config.s3, os.environ)
    only = _arch_list(args.only, parser)
    forced = _arch_list(args.force, parser)
    trees_forced = {str(k) for k in forced if k.repo == "releases" and config.releases}
    force = frozenset(k for k in forced if str(k) not in trees_forced)
    known = set(config.arch_keys())
    for key in [*only, *force]:
        if key not in known:
            parser.error(f"{key} is not in the configuration's repositories")
    log = make_logger(
        args.log_level or config.log.level,
        args.log_format or config.log.format,
        output=LogOutput.to_stdout(os.environ),
    )

    # Lines redrawn in place on the terminal only while the logs go elsewhere (a log line
    # between two drawings would be drawn over); else progress is a log line.
    logs_on_terminal = sys.stdout.isatty()
    terminal = sys.stderr if sys.stderr.isatty() and not logs_on_terminal else None
    default_every = 0.5 if terminal else 2.0 if logs_on_terminal else 10.0
    every = args.progress if args.progress is not None else default_every

    async def main() -> int:
        async with contextlib.AsyncExitStack() as stack:
            fleet = None
            if config.fleet is not None:
                from mirrord.core.metrics import Metrics
                from mirrord.sync.fleet import open_fleet  # etcd: only when configured

                fleet = await stack.enter_async_context(
                    open_fleet(config.fleet, clock=SystemClock(), log=log, metrics=Metrics())
                )
            runtime = await stack.enter_async_context(
                open_runtime(
                    config,
                    log=log,
                    crash=CrashPoints.from_environ(os.environ),
                    barrier=fleet,
                    targets=only or None,
                )
            )
            reporter = ProgressReporter(
                runtime.book,
                only or config.arch_keys(),
                clock=runtime.clock,
                log=log,
                notifier=Notifier.from_environ(os.environ),
                terminal=terminal,
                every=every,
            )
            started = runtime.clock.monotonic()
            async with asyncio.TaskGroup() as group:
                progress = group.create_task(reporter.run(), name="progress")
                lease = group.create_task(fleet.run() if fleet else _no_fleet(), name="fleet")
                # The releases trees beside the packages: an ISO never delays a package publish.
                trees = group.create_task(
                    runtime.releases.run_pass(trees_forced) if not only else _no_trees(),
                    name="releases",
                )
                try:
                    results = await runtime.engine.run_pass(only or None, force)
                finally:
                    progress.cancel()
                    lease.cancel()
            tree_pass = trees.result()
            reporter.finish()
            bucket_failed = await _sync_bucket(runtime, config, only or config.arch_keys(), log)
            seconds = runtime.clock.monotonic() - started
        if sys.stderr.isatty():
            print(summary(results, seconds), file=sys.stderr)
        failed = [r for r in results if not r.ok]
        for result in failed:
            print(f"mirrord: {result.key}: {result.outcome}: {result.error}", file=sys.stderr)
        for outcome in tree_pass.outcomes:
            if not outcome.ok:
                print(
                    f"mirrord: {outcome.directory}: {outcome.outcome}: {outcome.error}",
                    file=sys.stderr,
                )
        for key in bucket_failed:
            print(
                f"mirrord: {key}: bucket: not brought up to date (see bucket.sync.failed)",
                file=sys.stderr,
            )
        return EXIT_FAILED if failed or not tree_pass.ok or bucket_failed else EXIT_OK

    return run_async(main())


async def _no_fleet() -> None:
    return None


async def _no_trees() -> TreePass:
    from mirrord.sync.releases import TreePass

    return TreePass()


async def _sync_bucket(
    runtime: Runtime, config: Config, keys: list[ArchKey], log: FilteringBoundLogger
) -> list[ArchKey]:
    """With ``s3`` configured: bring the bucket to each arch's published snapshot; the failed."""
    if config.s3 is None:
        return []
    from mirrord.sync.bucketmirror import open_bucket_mirror  # botocore: only when configured

    crash = CrashPoints.from_environ(os.environ)
    failed: list[ArchKey] = []
    async with open_bucket_mirror(runtime, config.s3, os.environ, crash) as mirror:
        for key in keys:
            if not await mirror.sync_logged(key):
                failed.append(key)
    return failed


def cmd_run(args: argparse.Namespace) -> int:
    from mirrord.core.logoutput import LogOutput
    from mirrord.core.logs import make_logger
    from mirrord.shell.daemon import Daemon

    config = _load(args.config)
    # Written behind: a log reader that stops reading freezes nothing.
    output = LogOutput.to_stdout(os.environ, write_behind=True)
    log = make_logger(
        args.log_level or config.log.level, args.log_format or config.log.format, output=output
    )

    async def main() -> int:
        daemon = Daemon(
            config,
            log,
            config_path=args.config,
            crash=CrashPoints.from_environ(os.environ),
            notifier=Notifier.from_environ(os.environ),
            environ=dict(os.environ),
            log_output=output,
        )
        daemon.install_signal_handlers(asyncio.get_running_loop())
        await daemon.run()
        if daemon.forced_exit:  # a second SIGTERM/SIGINT cut the grace period short
            print(
                "mirrord: stopped at once (second signal): downloads in flight were cancelled; "
                "the published tree is intact and recovery runs at the next start",
                file=sys.stderr,
            )
            return EXIT_FAILED
        return EXIT_OK

    try:
        return run_async(main())
    finally:
        output.close()


def cmd_demo(args: argparse.Namespace) -> int:
    from mirrord.core.logs import make_logger
    from mirrord.demo.runner import run_demo

    log = make_logger(args.log_level or "warning", args.log_format or "auto", stream=sys.stderr)
    return run_async(run_demo(args.dir.resolve(), log, sys.stdout))


def cmd_verify_tree(args: argparse.Namespace) -> int:
    from mirrord.alpine.signing import Keyring
    from mirrord.publish.treecheck import check_tree

    config = _load(args.config)
    keyring = Keyring.load(config.origin.keys, required=not config.origin.allow_untrusted)
    report = check_tree(
        config.publish.path,
        config.arch_keys(),
        keyring,
        allow_untrusted=config.origin.allow_untrusted,
        max_index_bytes=config.limits.max_index_bytes,
        max_package_bytes=config.limits.max_package_bytes,
    )
    for problem in report.problems:
        print(f"problem: {problem}")
    print(
        f"{report.arches} arches, {report.files} files, {report.bytes} bytes verified; "
        f"{len(report.problems)} problems"
    )
    if config.releases is None:
        return EXIT_OK if report.ok else EXIT_FAILED
    from mirrord.publish.releasecheck import check_releases
    from mirrord.storage.treestate import TreeState

    trees = check_releases(
        config.publish.path, TreeState(config.storage.path), config.releases.files
    )
    for path in trees.unverified:
        print(f"unverified: {path}: no sidecar or yaml entry; mirrored by size + Last-Modified")
    for problem in trees.problems:
        print(f"problem: {problem}")
    print(
        f"releases: {trees.directories} directories, {trees.files} files, {trees.bytes} bytes; "
        f"{trees.verified} verified against sidecars/yaml, {len(trees.unverified)} by size + "
        f"Last-Modified only; latest-stable -> {trees.latest_stable or '(none)'}; "
        f"{len(trees.problems)} problems"
    )
    return EXIT_OK if report.ok and trees.ok else EXIT_FAILED


def cmd_recover(args: argparse.Namespace) -> int:
    from mirrord.core.clock import SystemClock
    from mirrord.core.logs import make_logger
    from mirrord.core.units import format_bytes
    from mirrord.sync.rebuild import rebuild_state

    config = _load(args.config)
    log = make_logger(  # stdout is the report
        args.log_level or config.log.level,
        args.log_format or config.log.format,
        stream=sys.stderr,
    )
    rebuilt = run_async(rebuild_state(config, log=log, clock=SystemClock()))
    print(
        f"state database rebuilt from the store and the published tree: {rebuilt.objects} "
        f"objects ({format_bytes(rebuilt.bytes)}), {rebuilt.adopted} arches adopted as "
        "published; nothing was downloaded"
    )
    for path in rebuilt.kept_aside:
        print(f"  the old file is kept as {path}")
    return EXIT_OK


# --- argument parsing -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirrord", description="Verified, atomically published mirror of Alpine repositories."
    )
    parser.add_argument("--version", action="version", version=f"mirrord {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config",
            "-c",
            type=Path,
            default=DEFAULT_CONFIG,
            help=f"YAML file (default {DEFAULT_CONFIG})",
        )

    def with_logging(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
        sub.add_argument("--log-format", choices=("auto", "json", "console"))

    sync = commands.add_parser("sync", help="one pass: poll, fetch, verify, publish, exit")
    with_config(sync)
    with_logging(sync)
    sync.add_argument(
        "--only", action="append", metavar="BRANCH/REPO/ARCH", help="sync just these arches"
    )
    sync.add_argument(
        "--progress",
        type=float,
        metavar="SECONDS",
        help="seconds between progress reports (default: 0.5 drawn on a terminal, 2 as log "
        "lines on a terminal, 10 as log lines elsewhere)",
    )
    sync.add_argument(
        "--force",
        action="append",
        metavar="BRANCH/REPO/ARCH",
        help="publish this arch even if the mass-deletion guard would refuse (once)",
    )

    run = commands.add_parser("run", help="the daemon: a pass every `interval`, forever")
    with_config(run)
    with_logging(run)

    check = commands.add_parser("check-config", help="validate a configuration file")
    with_config(check)

    verify = commands.add_parser(
        "verify-tree", help="check the published tree like an apk client: indexes, sizes, C:"
    )
    with_config(verify)

    recover = commands.add_parser(
        "recover",
        help="rebuild a lost or damaged state database from the store and the published tree "
        "(daemon stopped; downloads nothing)",
    )
    with_config(recover)
    with_logging(recover)

    ctl.add_parser(commands)

    demo = commands.add_parser(
        "demo", help="the whole job against a generated local origin, offline"
    )
    demo.add_argument("--dir", type=Path, default=Path("mirrord-demo"), help="working directory")
    with_logging(demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _open_standard_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("sync", "run", "demo"):
        pin_mmap_threshold()  # the process that parses indexes; fetch workers keep the default
        cap_arenas()  # before the first thread
    try:
        # A task group that failed (a service of the daemon, the one-shot's pass, the
        # runtime's committer): the error that caused it, as the one line below.
        with first_of_group(MirrordError):
            return _dispatch(args, parser)
    except ConfigError as error:
        where = getattr(args, "config", None)
        prefix = f"{where}: " if where and error.key_path else ""
        return _fail(f"config error: {prefix}{error}", EXIT_USAGE)
    except LockHeldError as error:
        return _fail(str(error), EXIT_CANNOT_RUN)
    except MirrordError as error:
        return _fail(str(error), EXIT_CANNOT_RUN)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not reader_gone(sys.stdout):
            raise  # a socket's, not stdout's: a bug to see
        # The reader of the command's report went away (| head): exit 1, as the
        # tools a broken pipe kills do, without a traceback.
        to_devnull(sys.stdout)
        return EXIT_FAILED


def _open_standard_streams() -> None:
    """Point a closed stdin, stdout or stderr at /dev/null, as a daemon does.

    Started with one closed (``>&-``, some supervisors), the next file opened
    would take its number, and a stray write to it (a log line) would land in
    that file: the state database, say. Python has made the stream None.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            # Opened in order 0, 1, 2: the lowest free number, which is this one.
            opened = os.open(os.devnull, os.O_RDWR)
            setattr(sys, name, open(opened, mode, closefd=False))  # noqa: SIM115 (the process's own)


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "sync":
        return cmd_sync(args, parser)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "check-config":
        return cmd_check_config(args)
    if args.command == "verify-tree":
        return cmd_verify_tree(args)
    if args.command == "demo":
        return cmd_demo(args)
    if args.command == "recover":
        return cmd_recover(args)
    if args.command == "ctl":
        return ctl.cmd_ctl(args)
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
