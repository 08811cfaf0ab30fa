"""``mirrord ctl``: talk to a running daemon over its control socket."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from mirrord.core.aio import first_completed, first_of_group, run_async
from mirrord.core.config import DEFAULT_CONTROL_SOCKET
from mirrord.core.config.parse import load_config
from mirrord.core.errors import ControlError
from mirrord.core.streams import to_devnull
from mirrord.shell.control import render
from mirrord.shell.control.client import DaemonUnreachable, call

EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE = 0, 1, 3


def _connection_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """--socket, --config and --json, before the command or after it (as people type them).

    After the command the defaults are suppressed, so a value given before it stays.
    """
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if after_command else {}
    parser.add_argument(
        "--socket",
        type=Path,
        help=f"control socket (default: from --config, else {DEFAULT_CONTROL_SOCKET})",
        **unset,
    )
    parser.add_argument(
        "--config", "-c", type=Path, help="read control.socket from this file", **unset
    )
    parser.add_argument(
        "--json", action="store_true", help="print the daemon's answer as JSON", **unset
    )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"--every takes 0.1 to 3600 seconds, not {text}")
    return value


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ctl = commands.add_parser("ctl", help="steer a running daemon through its control socket")
    _connection_options(ctl, after_command=False)
    sub = ctl.add_subparsers(dest="ctl_command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help_text)
        _connection_options(parser, after_command=True)
        return parser

    status = command(
        "status", "per arch: state, snapshot, lag, next poll, last error; rate, downloads"
    )
    status.add_argument("--watch", "-w", action="store_true", help="refresh until Ctrl-C")
    status.add_argument(
        "--every", type=_positive_seconds, default=2.0, help="seconds between refreshes (2)"
    )
    sync = command("sync", "sync now (all arches, or the ones named); one more if syncing")
    sync.add_argument("arches", nargs="*", metavar="BRANCH/REPO/ARCH")
    command("pause", "start no new sync or download (in-flight ones finish)")
    resume = command("resume", "undo pause; with arches, release their hold")
    resume.add_argument("arches", nargs="*", metavar="BRANCH/REPO/ARCH")
    rate = command("rate", "show or set the download rate limit (kept across restarts)")
    rate.add_argument("value", nargs="?", help="e.g. 50MB/s, 400Mbit/s, unlimited, schedule")
    snapshots = command("snapshots", "list an arch's remembered snapshots")
    snapshots.add_argument("arch", metavar="BRANCH/REPO/ARCH")
    rollback = command("rollback", "publish an earlier snapshot again (and hold it)")
    rollback.add_argument("arch", metavar="BRANCH/REPO/ARCH")
    rollback.add_argument("snapshot", type=int)
    publish = command(
        "publish", "publish once past the mass-deletion guard or the refusal of an older index"
    )
    publish.add_argument("--force", action="store_true", required=True)
    publish.add_argument("arch", metavar="BRANCH/REPO/ARCH")
    verify = command("verify", "re-read every stored object against its digest")
    verify.add_argument("--repair", action="store_true", help="drop damaged objects and refetch")
    command("gc", "delete objects nothing needs any more (after the grace)")
    command("reload", "re-read the configuration file")
    command("drain", "finish the syncs in progress, then stop")
    purge = command("purge", "purge paths of the published tree downstream now (purge.*)")
    purge.add_argument("paths", nargs="+", metavar="PATH", help="e.g. v3.20/main/x86_64/")


def request_for(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    cmd: str = args.ctl_command
    if cmd in ("sync", "resume"):
        return cmd, {"arches": list(args.arches)}
    if cmd == "rate":
        return cmd, {"value": args.value}
    if cmd == "snapshots":
        return cmd, {"arch": args.arch}
    if cmd == "rollback":
        return cmd, {"arch": args.arch, "snapshot": args.snapshot}
    if cmd == "publish":
        return cmd, {"arch": args.arch, "force": args.force}
    if cmd == "verify":
        return cmd, {"repair": args.repair}
    if cmd == "purge":
        return cmd, {"paths": [path.lstrip("/") for path in args.paths]}
    return cmd, {}


def socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    if args.config is not None:
        configured = load_config(args.config).control.socket
        if configured is None:
            raise ControlError("disabled", f"{args.config} disables the control socket")
        return configured
    return DEFAULT_CONTROL_SOCKET


def cmd_ctl(args: argparse.Namespace) -> int:
    cmd, payload = request_for(args)
    try:
        if getattr(args, "watch", False):
            return run_async(_watch(socket_path(args), args.every, as_json=args.json))
        result = run_async(call(socket_path(args), cmd, payload))
        print(_answer(cmd, result, as_json=args.json), flush=True)
    except DaemonUnreachable as error:
        print(f"mirrord: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except ControlError as error:
        print(f"mirrord: {cmd} refused ({error.code}): {error}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:  # Ctrl-C before a watch took SIGINT over: it is meant to stop
        return EXIT_OK
    except BrokenPipeError:
        return _reader_gone()
    return EXIT_OK


def _reader_gone() -> int:
    """Whoever read stdout stopped (``| head``): that ends the command, quietly."""
    to_devnull(sys.stdout)
    return EXIT_OK


def _answer(cmd: str, result: Any, *, as_json: bool) -> str:
    return json.dumps(result, indent=2, sort_keys=True) if as_json else render.reply(cmd, result)


async def _watch(socket: Path, every: float, *, as_json: bool) -> int:
    """``status`` again every ``every`` seconds until SIGINT (Ctrl-C), then exit 0.

    The handler is the loop's own: a process started with SIGINT ignored (a script's
    background job inherits that) would otherwise never see it, and refresh forever.
    """
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    try:
        with first_of_group(DaemonUnreachable, ControlError, BrokenPipeError):
            await first_completed(_refresh(socket, every, as_json=as_json), interrupted.wait())
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    return EXIT_OK


async def _refresh(socket: Path, every: float, *, as_json: bool) -> None:
    """The status, the screen cleared before it (on a terminal), every ``every`` seconds."""
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
    while True:
        result = await call(socket, "status", {})
        footer = f"(every {render.duration(every)}; Ctrl-C to stop)"
        print(f"{clear}{_answer('status', result, as_json=as_json)}\n{footer}", flush=True)
        await asyncio.sleep(every)
