"""A fix for a race in pyghmi's shared I/O (pyghmi 1.6.19), applied explicitly by whoever
starts pyghmi sessions (IpmiDriver, VirtualBmc): importing this module changes nothing.

pyghmi's I/O thread reads with `_io_recvfrom`, which sets the socket non-blocking and then
calls recvfrom; every sender calls `_io_sendto`, which sets the same socket *blocking* before
sendto. When a send lands between those two steps, the I/O thread blocks in recvfrom on an
empty socket until some packet arrives on it, and every session of the process waits with it.
With dead BMCs sharing the socket nothing may ever arrive: this is the "all threads hung for
90 s" seen with many dead BMCs, and it also froze virtual BMC processes under load.

The fix reads with MSG_DONTWAIT, which never blocks whatever mode another thread left the
socket in. Sending keeps pyghmi's blocking mode (a full send buffer waits instead of dropping).
"""

from __future__ import annotations

import socket

from pyghmi.ipmi.private import session as _session


def _io_recvfrom(mysocket: socket.socket, size: int) -> tuple[bytes, tuple] | None:
    """Same contract as pyghmi's: a (data, address) pair, or None when nothing is waiting."""
    try:
        return mysocket.recvfrom(size, socket.MSG_DONTWAIT)
    except OSError:
        return None


def apply() -> None:
    """Install the fix (idempotent); pyghmi looks the function up at each call."""
    _session._io_recvfrom = _io_recvfrom
