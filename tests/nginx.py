"""A private nginx serving a directory on 127.0.0.1, for tests and benchmarks."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

CONFIG = """
worker_processes {workers};
daemon off;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    types {{ application/gzip gz; application/octet-stream apk; }}
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {host}:{port};
        root {root};
        autoindex on;
    }}
}}
"""


def system_binary(name: str) -> str:
    """A Debian package's program, found also where /usr/sbin is not on PATH."""
    sbin = Path("/usr/sbin") / name
    found = shutil.which(name) or (str(sbin) if sbin.exists() else None)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run ./dev test, which installs it")
    return found


def nginx_binary() -> str:
    return system_binary("nginx")


LOWEST_CHOSEN_PORT = 10000


def ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free on 127.0.0.1 now, from below the kernel's ephemeral range.

    A port from ``bind(0)`` is an ephemeral one: between this probe and the
    server's own bind, any outgoing connection of a parallel test may take it
    as its local port (a SeaweedFS with ten ports lost one that way in CI, and
    died after it had started listening). Below the range only another
    chooser can collide, which needs the same random pick as well.
    """
    highest = ephemeral_ports_start() - 1
    if highest - LOWEST_CHOSEN_PORT < 1000:  # an odd range: let the kernel choose
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            chosen: int = probe.getsockname()[1]
            return chosen
    chooser = random.SystemRandom()
    while True:
        port = chooser.randint(LOWEST_CHOSEN_PORT, highest)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


PORT_RETRY = 0.01


def wait_for_port(
    port: int,
    process: subprocess.Popen[bytes],
    what: str,
    timeout: float,
    log: Path | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Return once host:port accepts a connection; fail if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            detail = f": {log.read_text(errors='replace')}" if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {process.returncode} before listening{detail}")
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(PORT_RETRY)  # between connection attempts, not instead of one


def start_listening(
    argv: list[str],
    port: int,
    what: str,
    timeout: float,
    log: Path,
    output: IO[bytes] | None = None,
    host: str = "127.0.0.1",
) -> subprocess.Popen[bytes]:
    """Start a server and return once it accepts connections on host:port."""
    sink = output if output is not None else subprocess.DEVNULL
    process = subprocess.Popen(argv, stdout=sink, stderr=sink)
    try:
        wait_for_port(port, process, what, timeout, log, host)
    except BaseException:
        stop_process(process)
        raise
    return process


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LoopbackServer:
    """A server process on 127.0.0.1:port (subclasses write ``start``), a ``with`` block long."""

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class WebServer(LoopbackServer):
    """An HTTP server of ``root`` on 127.0.0.1 run from ``prefix``."""

    def __init__(self, root: Path, prefix: Path) -> None:
        super().__init__()
        self.root = root
        self.prefix = prefix
        self.host = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class Nginx(WebServer):
    def __init__(self, root: Path, prefix: Path, workers: int = 1, niceness: int = 0) -> None:
        super().__init__(root, prefix)
        self.workers = workers
        self.niceness = niceness  # for the master and the workers it forks
        self.command_prefix: tuple[str, ...] = ()  # e.g. ip netns exec NAME, with ``host``

    def config_template(self) -> str:
        """The nginx.conf, with {workers} {user} {prefix} {host} {port} {root} to fill in."""
        return CONFIG

    def start(self, timeout: float = 10.0) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        user = "user root;" if os.geteuid() == 0 else ""
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            self.config_template().format(
                workers=self.workers,
                user=user,
                prefix=self.prefix,
                host=self.host,
                port=self.port,
                root=self.root,
            )
        )
        error_log = self.prefix / "error.log"
        argv = [nginx_binary(), "-c", str(conf), "-p", str(self.prefix), "-e", str(error_log)]
        if self.niceness:
            argv = ["nice", "-n", str(self.niceness), *argv]  # nice execs: the pid is nginx's
        argv = [*self.command_prefix, *argv]  # ip netns exec execs too
        self._process = start_listening(
            argv, self.port, "nginx", timeout, error_log, host=self.host
        )
