"""Option negotiation for read requests: RFC 2347 (OACK), 2348 blksize, 2349 timeout/tsize,
7440 windowsize. Pure: the server passes in what the client asked and the file size.

Only options understood and accepted appear in the OACK; an out-of-range value is ignored
(the RFCs' "the server may ignore it"), a too-large one is lowered to what the server allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464
DEFAULT_BLKSIZE = 512
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255
MAX_WINDOWSIZE = 65535
DEFAULT_TIMEOUT = 1.0
# A window is sent back to back, so it must fit the client's socket receive buffer: more is
# dropped, the client times out and the resent window overflows again. That is how large
# windows at 65464-byte blocks collapse in atftpd (0.6 to 12 MiB/s). The buffer is charged
# per datagram at the kernel's allocation size ("truesize"), not the payload: a 1468-byte
# block costs ~2.3 KiB, an 8192-byte one ~16.6 KiB. Assume a Linux client with the default
# net.core.rmem_default and use three quarters of it.
DEFAULT_CLIENT_RCVBUF = 212992


@dataclass(frozen=True)
class Negotiated:
    """Transfer parameters and the OACK to send (empty: no OACK, start with DATA 1)."""

    blksize: int = DEFAULT_BLKSIZE
    timeout: float = DEFAULT_TIMEOUT
    windowsize: int = 1
    reply: dict[str, str] = field(default_factory=dict)


def datagram_truesize(blksize: int) -> int:
    """Estimated receive-buffer charge of one DATA datagram (sk_buff plus rounded data)."""
    need = blksize + 512  # headers, headroom and skb_shared_info
    if need <= 32768:
        return (1 << (need - 1).bit_length()) + 256  # kmalloc rounds to a power of two
    return -(-need // 4096) * 4096 + 256  # large datagrams: whole pages


def window_cap(blksize: int, client_rcvbuf: int = DEFAULT_CLIENT_RCVBUF) -> int:
    """Largest window for this block size that the client's receive buffer absorbs."""
    return max(1, min(MAX_WINDOWSIZE, client_rcvbuf * 3 // 4 // datagram_truesize(blksize)))


def _int(value: str) -> int | None:
    value = value.strip()
    # isdigit() alone takes superscripts (which int() refuses) and other scripts' digits.
    return int(value) if value.isascii() and value.isdigit() else None


def retries_within(timeout: float, retries: int, max_silence: float) -> int:
    """Retransmissions for one transfer so that a client that never answers holds it at most
    `max_silence` seconds ((retries + 1) waits of `timeout`), whatever timeout it asked for."""
    return max(0, min(retries, int(max_silence // timeout) - 1))


def negotiate(
    requested: dict[str, str],
    size: int,
    max_blksize: int = MAX_BLKSIZE,
    client_rcvbuf: int = DEFAULT_CLIENT_RCVBUF,
    max_timeout: int = MAX_TIMEOUT,
) -> Negotiated:
    """Accept what we understand from an RRQ's options; `size` is the bytes we will send.
    A timeout over `max_timeout` is not acknowledged (RFC 2349 allows no other value), so
    the default applies."""
    blksize, timeout, windowsize = DEFAULT_BLKSIZE, DEFAULT_TIMEOUT, 1
    reply: dict[str, str] = {}
    if (value := _int(requested.get("blksize", ""))) is not None and value >= MIN_BLKSIZE:
        blksize = min(value, max_blksize, MAX_BLKSIZE)
        reply["blksize"] = str(blksize)
    if (value := _int(requested.get("timeout", ""))) is not None and (
        MIN_TIMEOUT <= value <= min(MAX_TIMEOUT, max_timeout)
    ):
        timeout = float(value)
        reply["timeout"] = str(value)
    if "tsize" in requested and _int(requested["tsize"]) is not None:
        reply["tsize"] = str(size)
    if (value := _int(requested.get("windowsize", ""))) is not None and value >= 1:
        windowsize = min(value, window_cap(blksize, client_rcvbuf))
        reply["windowsize"] = str(windowsize)
    return Negotiated(blksize, timeout, windowsize, reply)
