"""What a TCP socket's TCP_INFO (getsockopt) says about the peer's progress; no I/O.

Why: waitress sees a connection's progress only in its own writes, which wait for room in a
send buffer of megabytes; the kernel knows how much of it the peer has acknowledged.
"""

from __future__ import annotations

import struct

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked is the u64 at offset 120 (Linux 4.1+),
# tcpi_notsent_bytes the u32 at offset 144 (Linux 4.6+).
TCP_INFO_LENGTH = 148
BYTES_ACKED = struct.Struct("=Q")
NOTSENT_BYTES = struct.Struct("=I")


def acked_bytes(tcp_info: bytes) -> int | None:
    """How many bytes the peer has acknowledged (a counter: only its growth is used; the
    connecting end's SYN counts as one), from a TCP_INFO answer; None if it is too short (an
    old kernel)."""
    if len(tcp_info) < 128:
        return None
    return int(BYTES_ACKED.unpack_from(tcp_info, 120)[0])


def notsent_bytes(tcp_info: bytes) -> int | None:
    """The bytes queued in the socket that TCP has not sent yet (the peer's window is
    full), from a TCP_INFO answer; None if it is too short."""
    if len(tcp_info) < TCP_INFO_LENGTH:
        return None
    return int(NOTSENT_BYTES.unpack_from(tcp_info, 144)[0])
