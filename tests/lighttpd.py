"""A private lighttpd with ``mod_dirlisting`` serving a directory on 127.0.0.1.

Alpine's master mirror serves its tree with lighttpd's directory listings;
the releases-tree tests discover files from these real listings.
"""

from __future__ import annotations

from tests.nginx import WebServer, free_port, start_listening, system_binary

CONFIG = """\
server.modules = ("mod_dirlisting")
server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{prefix}/error.log"
server.pid-file = "{prefix}/lighttpd.pid"
server.follow-symlink = "enable"
# Tests rewrite files in place between passes: no cached sizes from a second ago.
server.stat-cache-engine = "disable"
dir-listing.activate = "enable"
dir-listing.encoding = "utf-8"
dir-listing.hide-dotfiles = "disable"
mimetype.assign = (".txt" => "text/plain", "" => "application/octet-stream")
"""


class Lighttpd(WebServer):
    def start(self, timeout: float = 10.0) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.prefix / "lighttpd.conf"
        conf.write_text(CONFIG.format(root=self.root, port=self.port, prefix=self.prefix))
        error_log = self.prefix / "error.log"
        argv = [system_binary("lighttpd"), "-D", "-f", str(conf)]
        self._process = start_listening(argv, self.port, "lighttpd", timeout, error_log)
