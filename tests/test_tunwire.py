"""benchmarks/tunwire.py: a round trip that TCP itself sees, and what the kernel says of it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# In a child: the wire needs a network namespace of its own (a private loopback
# for the near side), which would stay with the pytest process that made it.
PROBE = """
import json, socket, subprocess, sys, time
from benchmarks.netns import enter_private_loopback
from benchmarks.tunwire import SERVER, TunWire
from mirrord.fetch.tcppath import sample_path

reason = enter_private_loopback()
assert reason is None, reason
with TunWire(float(sys.argv[1])) as wire:
    far = subprocess.Popen(
        [*wire.run_prefix, sys.executable, "-c",
         "import socket; s = socket.socket(); s.bind(('%s', 9000)); s.listen(1); "
         "print('up', flush=True); c, _ = s.accept(); c.sendall(b'x' * 300000); c.close()"
         % SERVER],
        stdout=subprocess.PIPE,
    )
    assert far.stdout.readline() == b"up\\n"
    started = time.monotonic()
    client = socket.create_connection((SERVER, 9000))
    handshake = time.monotonic() - started
    received = 0
    while chunk := client.recv(65536):
        received += len(chunk)
    sample = sample_path(client, pinned=False)
    far.wait()
print(json.dumps({"handshake": handshake, "rtt": sample.rtt, "received": received}))
"""


def test_every_packet_on_the_wire_waits_and_the_kernel_measures_the_round_trip() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "60"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    seen = json.loads(done.stdout.decode().splitlines()[-1])
    assert seen["received"] == 300_000
    assert 0.060 <= seen["handshake"] < 0.5  # SYN out, SYN-ACK back: one round trip
    assert 0.060 <= seen["rtt"] < 0.5  # tcp_info's tcpi_rtt, read where mirrord reads it
