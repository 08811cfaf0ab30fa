"""The shipped nginx and rsyncd configurations, run for real on loopback.

Only paths and ports are templated: the listen lines, ``root``/``path``, the
logs, pid and lock files. Everything else is the file an operator installs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers import REPO_ROOT
from tests.nginx import Nginx, system_binary
from tests.rsyncd import RsyncDaemon

NGINX_SHIPPED = REPO_ROOT / "config" / "nginx-mirrord.conf"
RSYNCD_SHIPPED = REPO_ROOT / "config" / "rsyncd-mirrord.conf"
SHIPPED_ROOT = "/srv/mirror/alpine"

NGINX_MAIN = """
worker_processes {{workers}};
daemon off;
{{user}}
pid {{prefix}}/nginx.pid;
error_log {{prefix}}/error.log warn;
events {{{{ worker_connections 4096; }}}}
http {{{{
    types {{{{ application/gzip gz; application/octet-stream apk; text/plain txt; }}}}
    default_type application/octet-stream;
    client_body_temp_path {{prefix}}/client;
    proxy_temp_path {{prefix}}/proxy;
    fastcgi_temp_path {{prefix}}/fastcgi;
    uwsgi_temp_path {{prefix}}/uwsgi;
    scgi_temp_path {{prefix}}/scgi;
{server}
}}}}
"""


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with its one ``old`` replaced: fails loudly when the shipped file changed."""
    if text.count(old) != 1:
        raise AssertionError(f"the shipped file should have {old!r} exactly once")
    return text.replace(old, new)


SHIPPED_HEALTH = "http://127.0.0.1:9469/health"  # the daemon's metrics.listen by default


def shipped_nginx_template(health: str | None = None) -> str:
    """config/nginx-mirrord.conf inside a minimal nginx.conf, as a ``Nginx`` template.

    ``health``: the daemon's metrics address (host:port) that ``/health`` goes to."""
    server = NGINX_SHIPPED.read_text().replace("{", "{{").replace("}", "}}")
    if health is not None:
        server = replace_once(server, SHIPPED_HEALTH, f"http://{health}/health")
    server = replace_once(server, "    listen 80;\n", "    listen 127.0.0.1:{port};\n")
    server = replace_once(server, "    listen [::]:80;\n", "")
    server = replace_once(server, f"root {SHIPPED_ROOT};", "root {root};")
    server = replace_once(server, "/var/log/nginx/mirrord-access.log", "{prefix}/access.log")
    server = replace_once(server, "/var/log/nginx/mirrord-error.log", "{prefix}/error.log")
    return NGINX_MAIN.format(server=server)


class ShippedNginx(Nginx):
    """nginx running config/nginx-mirrord.conf over ``root`` (``/health`` to ``health``)."""

    def __init__(
        self,
        root: Path,
        prefix: Path,
        workers: int = 1,
        niceness: int = 0,
        *,
        health: str | None = None,
    ) -> None:
        super().__init__(root, prefix, workers, niceness)
        self.health = health

    def config_template(self) -> str:
        return shipped_nginx_template(self.health)

    def __enter__(self) -> ShippedNginx:
        self.start()
        return self


def shipped_rsyncd_config(root: Path, directory: Path) -> str:
    """config/rsyncd-mirrord.conf with its paths under ``directory``, serving ``root``."""
    text = RSYNCD_SHIPPED.read_text()
    text = replace_once(text, "/run/rsyncd.pid", f"{directory}/rsyncd.pid")
    text = replace_once(text, "/run/rsyncd-alpine.lock", f"{directory}/rsyncd-alpine.lock")
    text = replace_once(text, f"path = {SHIPPED_ROOT}", f"path = {root}")
    if os.geteuid() != 0:  # chroot and changing user need root; the module is the same
        text = replace_once(text, "use chroot = yes", "use chroot = no")
        text = replace_once(text, "uid = nobody\n", "")
        text = replace_once(text, "gid = nogroup\n", "")
    return f"log file = {directory}/rsyncd.log\n" + text


def shipped_rsyncd(root: Path, directory: Path) -> RsyncDaemon:
    """``rsync --daemon`` with config/rsyncd-mirrord.conf over ``root``."""
    return RsyncDaemon(shipped_rsyncd_config(root, directory), directory, "alpine")


def t2_pull(url: str, destination: Path, staging: Path) -> None:
    """How a T2 pulls from the [alpine] module (README): indexes fetched first, installed last."""
    rsync = system_binary("rsync")
    destination.mkdir(parents=True, exist_ok=True)
    only_indexes = ["--include=*/", "--include=APKINDEX.tar.gz", "--exclude=*", "-m"]
    but_indexes = ["--exclude=APKINDEX.tar.gz", "--delay-updates", "--delete-after"]
    for argv in (
        [rsync, "-rlt", *only_indexes, url, f"{staging}/"],
        [rsync, "-rlt", *but_indexes, url, f"{destination}/"],
        [rsync, "-rlt", "--delay-updates", f"{staging}/", f"{destination}/"],
    ):
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
