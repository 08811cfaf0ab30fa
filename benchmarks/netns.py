"""A private network namespace for the whole run: its own ``lo``, nobody else's traffic.

On a shared machine other processes use the loopback interface too, which the
rate-limit scenario reads (/proc/net/dev). When allowed (root, or
CAP_SYS_ADMIN), the harness moves itself into a new network namespace before
it starts anything, so nginx, rsync, mirrord and the peers all talk over a
loopback interface that carries nothing else.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH14x"  # struct ifreq: the name, then ifr_flags in the union


def enter_private_loopback() -> str | None:
    """Unshare the network namespace and bring its ``lo`` up; the reason if not possible.

    Call it before any thread or child process starts: it moves only the calling thread.
    """
    if os.geteuid() != 0:
        return "not root"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))
    return None
