"""A wire with a real round trip: two network namespaces joined through TUN devices.

``delayproxy.py`` delays bytes between two sockets on loopback, so TCP itself
never sees the round trip: the client's receive window, ACKs and slow start
run at loopback speed and only the payload waits. This kernel has no
``sch_netem`` to delay packets. Here a forwarder holds every IP packet for half
the RTT each way between a TUN device in the caller's namespace and one in a
namespace of its own: both ends are real TCP stacks and every segment and ACK
waits, so a connection's throughput is bound by its window over the RTT as on
a long link.

``TunWire(rtt_ms)`` (root): the caller's side is ``CLIENT`` (10.77.0.1), the
far side ``SERVER`` (10.77.0.2), reached by starting a server under
``wire.run_prefix`` (``ip netns exec <name>``). The forwarder runs as
``python benchmarks/tunwire.py NAME FD RTT MTU`` in the far namespace, with the
near device's descriptor passed to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import TracebackType

CLIENT = "10.77.0.1"
SERVER = "10.77.0.2"
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
READY = b"wire ready\n"


def open_tun(name: str) -> int:
    """A TUN device (IP packets, no header) in this process's network namespace."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def configure(device: str, address: str, peer: str, mtu: int) -> None:
    """This namespace's side: its loopback up, the device up with its point-to-point pair."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", address, "peer", peer, "dev", device], check=True)
    subprocess.run(["ip", "link", "set", device, "up", "mtu", str(mtu)], check=True)


class TunWire:
    def __init__(self, rtt_ms: float, *, mtu: int = 1500, log: Path | None = None) -> None:
        self.rtt_ms = rtt_ms
        self.mtu = mtu
        self.log = log
        self.name = f"mirrord-wire-{os.getpid()}"
        self.run_prefix: tuple[str, ...] = ("ip", "netns", "exec", self.name)
        self._forwarder: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> TunWire:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        near = open_tun("wire0")
        try:
            configure("wire0", CLIENT, SERVER, self.mtu)
            argv = [*self.run_prefix, sys.executable, str(Path(__file__).resolve())]
            argv += [self.name, str(near), f"{self.rtt_ms:g}", str(self.mtu)]
            with self.log.open("ab") if self.log is not None else open(os.devnull, "wb") as errors:
                self._forwarder = subprocess.Popen(
                    argv, pass_fds=(near,), stdout=subprocess.PIPE, stderr=errors
                )
        finally:
            os.close(near)  # the forwarder holds it now
        assert self._forwarder.stdout is not None
        if self._forwarder.stdout.readline() != READY:
            raise RuntimeError(
                f"the TUN forwarder did not start (exit {self._forwarder.wait()}; "
                f"its errors: {self.log or 'not kept'})"
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._forwarder is not None:
            self._forwarder.kill()
            self._forwarder.wait()
            self._forwarder = None
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def _forward(loop: asyncio.AbstractEventLoop, source: int, target: int, delay: float) -> None:
    def deliver(packet: bytes) -> None:
        # a full queue in the stack loses the packet, as a wire would
        with contextlib.suppress(BlockingIOError):
            os.write(target, packet)

    def readable() -> None:
        while True:
            try:
                packet = os.read(source, 65536)
            except BlockingIOError:
                return
            # one fixed delay: packets leave in the order they came
            loop.call_at(loop.time() + delay, deliver, packet)

    loop.add_reader(source, readable)


async def _serve(near: int, far: int, rtt_ms: float) -> None:
    loop = asyncio.get_running_loop()
    _forward(loop, near, far, rtt_ms / 2000)
    _forward(loop, far, near, rtt_ms / 2000)
    sys.stdout.buffer.write(READY)
    sys.stdout.flush()
    await asyncio.Event().wait()  # until killed


def main(argv: list[str]) -> None:
    _name, near, rtt_ms, mtu = argv
    far = open_tun("wire1")
    configure("wire1", SERVER, CLIENT, int(mtu))
    asyncio.run(_serve(int(near), far, float(rtt_ms)))


if __name__ == "__main__":
    main(sys.argv[1:])
