"""The origin servers: nginx (with an access log to count requests) and an rsync daemon."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.nginx import CONFIG, Nginx
from tests.rsyncd import RsyncDaemon as BaseRsyncDaemon

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
