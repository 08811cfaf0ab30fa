"""The origin servers: nginx (with an access log to count requests), an rsync daemon,
and the delay proxy that puts either of them at the far end of a slow link."""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.nginx import CONFIG, LoopbackServer, Nginx, free_port, start_listening
from tests.rsyncd import RsyncDaemon as BaseRsyncDaemon

DELAY_PROXY = Path(__file__).with_name("delayproxy.py")
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


class RsyncDaemon(BaseRsyncDaemon):
    """``rsync --daemon`` on 127.0.0.1 serving ``root`` as module ``origin``."""

    def __init__(self, root: Path, directory: Path) -> None:
        config = RSYNCD_CONF.format(
            directory=directory, uid=os.getuid(), gid=os.getgid(), module="origin", root=root
        )
        super().__init__(config, directory, "origin")
        self.root = root


class DelayProxy(LoopbackServer):
    """benchmarks/delayproxy.py on 127.0.0.1:port, in front of 127.0.0.1:target."""

    def __init__(self, target: int, rtt_ms: float, rate_mbit: float, log: Path) -> None:
        super().__init__()
        self.target = target
        self.rtt_ms = rtt_ms
        self.rate_mbit = rate_mbit
        self.log = log

    def __enter__(self) -> DelayProxy:
        self.port = free_port()
        argv = [sys.executable, str(DELAY_PROXY), str(self.port), str(self.target)]
        argv += [f"{self.rtt_ms:g}", f"{self.rate_mbit:g}"]
        with self.log.open("ab") as output:
            self._process = start_listening(argv, self.port, "delay proxy", 10.0, self.log, output)
        return self
