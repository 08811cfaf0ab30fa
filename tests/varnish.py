"""A private Varnish on 127.0.0.1 in front of a backend, for the CDN purge tests."""

from __future__ import annotations

import os
from pathlib import Path

from tests.nginx import LoopbackServer, free_port, start_listening, system_binary

# PURGE only from the ACL; a fixed TTL and no grace, so "until its TTL" is exact.
VCL = """vcl 4.1;

backend origin {{ .host = "127.0.0.1"; .port = "{backend_port}"; }}

acl purgers {{ "127.0.0.1"; }}

sub vcl_recv {{
    if (req.method == "PURGE") {{
        if (client.ip !~ purgers) {{ return (synth(405, "PURGE not allowed")); }}
        return (purge);
    }}
}}

sub vcl_backend_response {{
    set beresp.ttl = {ttl}s;
    set beresp.grace = 0s;
    set beresp.keep = 0s;
}}

sub vcl_deliver {{
    set resp.http.X-Cache = "MISS";
    if (obj.hits > 0) {{ set resp.http.X-Cache = "HIT"; }}
}}
"""


class Varnish(LoopbackServer):
    def __init__(self, backend_port: int, directory: Path, ttl: float) -> None:
        super().__init__()
        self.backend_port = backend_port
        self.directory = directory
        self.ttl = ttl

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Varnish:
        self.directory.mkdir(parents=True, exist_ok=True)
        vcl = self.directory / "test.vcl"
        vcl.write_text(VCL.format(backend_port=self.backend_port, ttl=self.ttl))
        self.port = free_port()
        argv = [system_binary("varnishd"), "-F", "-f", str(vcl), "-n", str(self.directory / "n")]
        argv += ["-a", f"127.0.0.1:{self.port}", "-s", "malloc,32m", "-T", "none"]
        if os.geteuid() == 0:
            argv += ["-j", "none"]  # no jail: the working directory is the test's own
        log = self.directory / "varnishd.log"
        with log.open("wb") as output:
            self._process = start_listening(argv, self.port, "varnishd", 30.0, log, output)
        return self
