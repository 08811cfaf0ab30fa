"""The origin servers: nginx (with an access log to count requests) and an rsync daemon."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.nginx import CONFIG, Nginx, free_port, stop_process, wait_for_port

LOG_FORMAT = 'log_format bench "$status $request_method $body_bytes_sent $request_uri";'


@dataclass(frozen=True)
class Requests:
    total: int
    by_status: dict[int, int]
    body_bytes: int


class LoggedNginx(Nginx):
    """tests.nginx.Nginx with an access log, so every request can be counted."""

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def config_template(self) -> str:
        template = CONFIG.replace(
            "access_log off;", LOG_FORMAT + "\n    access_log {prefix}/access.log bench;"
        )
        if template == CONFIG:
            raise RuntimeError("tests.nginx.CONFIG no longer has 'access_log off;' to replace")
        return template

    def mark(self) -> int:
        """Where the access log ends now; pass it to ``requests_since``."""
        try:
            return self.access_log.stat().st_size
        except FileNotFoundError:
            return 0

    def requests_since(self, mark: int) -> Requests:
        statuses: Counter[int] = Counter()
        body = 0
        with self.access_log.open("rb") as handle:
            handle.seek(mark)
            for line in handle.read().decode(errors="replace").splitlines():
                status, _method, sent, _uri = line.split(" ", 3)
                statuses[int(status)] += 1
                body += int(sent)
        return Requests(sum(statuses.values()), dict(statuses), body)

    def __enter__(self) -> LoggedNginx:
        self.start()
        return self


RSYNCD_CONF = """\
pid file = {directory}/rsyncd.pid
log file = {directory}/rsyncd.log
use chroot = no
uid = {uid}
gid = {gid}

[{module}]
    path = {root}
    read only = yes
"""


class RsyncDaemon:
    """``rsync --daemon`` on 127.0.0.1 serving ``root`` as module ``origin``."""

    module = "origin"

    def __init__(self, root: Path, directory: Path) -> None:
        self.root = root
        self.directory = directory
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rsync://127.0.0.1:{self.port}/{self.module}"

    def __enter__(self) -> RsyncDaemon:
        binary = shutil.which("rsync")
        if binary is None:
            raise RuntimeError("rsync is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "rsyncd.conf"
        conf.write_text(
            RSYNCD_CONF.format(
                directory=self.directory,
                uid=os.getuid(),
                gid=os.getgid(),
                module=self.module,
                root=self.root,
            )
        )
        self.port = free_port()
        argv = [binary, "--daemon", "--no-detach", f"--config={conf}", f"--port={self.port}"]
        argv.append("--address=127.0.0.1")
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, self._process, "rsync --daemon", 10.0)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None
