"""A private single-member etcd (Debian's etcd-server) on 127.0.0.1, data in the test's dir."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from tests.nginx import LoopbackServer, free_port, start_listening, system_binary

HEALTH_RETRY = 0.02


class Etcd(LoopbackServer):
    """Started and stopped by the test; ``start`` again after ``stop`` keeps port and data."""

    def __init__(self, prefix: Path) -> None:
        super().__init__()
        self.prefix = prefix
        self.port = free_port()
        self.peer_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.prefix / "etcd.log"

    def start(self, timeout: float = 20.0) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            system_binary("etcd"),
            "--name=test",
            f"--data-dir={self.prefix / 'data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            "--log-level=warn",
        ]
        with self.log.open("ab") as log:
            self._process = start_listening(argv, self.port, "etcd", timeout, self.log, log)
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        """The port answers before the member has elected itself leader: ask /health."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if json.loads(response.read()).get("health") == "true":
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd not healthy after {timeout} s: {self.log.read_text()}")
            time.sleep(HEALTH_RETRY)  # between health requests, not instead of one
