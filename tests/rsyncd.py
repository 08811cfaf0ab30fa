"""A private ``rsync --daemon`` on 127.0.0.1, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

from tests.nginx import LoopbackServer, free_port, start_listening, system_binary


class RsyncDaemon(LoopbackServer):
    """``rsync --daemon`` on 127.0.0.1 with this rsyncd.conf, serving ``module``."""

    def __init__(self, config: str, directory: Path, module: str) -> None:
        super().__init__()
        self.config = config
        self.directory = directory
        self.module = module

    @property
    def url(self) -> str:
        return f"rsync://127.0.0.1:{self.port}/{self.module}"

    def __enter__(self) -> RsyncDaemon:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "rsyncd.conf"
        conf.write_text(self.config)
        self.port = free_port()
        argv = [system_binary("rsync"), "--daemon", "--no-detach", f"--config={conf}"]
        argv += ["--address=127.0.0.1", f"--port={self.port}"]
        log = self.directory / "rsyncd.log"
        self._process = start_listening(argv, self.port, "rsync --daemon", 10.0, log)
        return self
