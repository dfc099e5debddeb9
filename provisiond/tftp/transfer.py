"""One TFTP read transfer: its preparation (path checks, the responder, the file, options)
and, for the Python loop (pyloop.py), its state machine: send a window, take an ACK, resend
on the timer. The native sender (native.py) runs prepared transfers by itself.

A transfer knows the server only through Settings (root, responder, limits) and Gso (UDP
segmentation offload, switched off for good at the first refusal); the loop that drives it
gives it `watch_write`, to wait for room in a full send buffer.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisiond.tftp import native, packet
from provisiond.tftp.options import Negotiated, negotiate, retries_within
from provisiond.tftp.packet import ErrorCode, PacketError, Request
from provisiond.tftp.paths import PathRefused, normalize, open_in_root, open_named

log = logging.getLogger("provisiond.tftp.server")

# Given the requested path and the client, the responder returns generated content, a file to
# serve in its place (outside the root, e.g. a packaged boot loader), or None: from the root.
Responder = Callable[[str, tuple[str, int]], "bytes | Path | None"]

READ_CHUNK = 256 * 1024  # file read-ahead: one pread serves many blocks
NETASCII_MAX = 16 * 1024 * 1024  # netascii is for text files; larger ones must use octet
_RECV_MAX = 1024
_ACK0 = b"\x00\x04\x00\x00"
_HEAD = struct.Struct("!HH")
_SEGMENT = struct.Struct("=H")
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # Linux >= 4.18; Python does not export it
GSO_MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
GSO_MAX_BYTES = 65507  # one IPv4 datagram
_NO_GSO = {errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE}
SHRANK = "the file shrank during the transfer: replace served files atomically (write, then rename)"


@dataclass(frozen=True)
class TransferStats:
    """One finished (or refused) transfer. `peer` is "ip:port"; outcome "ok", "timeout" or
    "error: ..."; options are the negotiated values that were acknowledged."""

    peer: str
    filename: str
    bytes: int
    duration: float
    retransmits: int
    options: dict[str, int]
    outcome: str


@dataclass(frozen=True)
class Settings:
    """What a transfer needs from its server."""

    root: Path
    responder: Responder | None
    retries: int
    max_blksize: int
    client_rcvbuf: int
    max_silence: float = 30.0  # seconds a transfer may wait for a silent client, in all


class Gso:
    """UDP segmentation offload: on until the kernel refuses it once, then off for good."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def batch(self, blksize: int) -> int:
        """How many blocks one send may carry (1: no GSO)."""
        if not self.enabled:
            return 1
        return max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // (blksize + 4)))

    def disable(self, exc: OSError) -> None:
        if self.enabled:
            self.enabled = False
            log.info("TFTP: UDP segmentation offload not available (%s); sending one "
                     "datagram per block", exc.strerror or exc)


def _ignore_write_wait(sock: socket.socket, waiting: bool) -> None:
    """Until a loop drives the transfer, nobody waits for EPOLLOUT for it."""


class Blocks:
    """Content addressed by offset: in memory, or a file read ahead in large chunks so that
    a block is a memoryview slice and not a system call."""

    def __init__(self, content: bytes | None, fd: int | None, size: int) -> None:
        self.fd, self.size = fd, size
        self.view = memoryview(content if content is not None else b"")
        self.start, self.end = 0, len(self.view)

    def fill(self, offset: int, want: int) -> None:
        assert self.fd is not None
        data = os.pread(self.fd, max(READ_CHUNK, want), offset)
        if len(data) < min(want, self.size - offset):
            raise OSError(errno.ENODATA, SHRANK)
        self.view, self.start, self.end = memoryview(data), offset, offset + len(data)


class NetasciiBlocks(Blocks):
    """A file in netascii, converted a chunk at a time as the transfer goes, so a transfer
    holds about two chunks whatever the file's size (converting the whole file held up to
    twice its size per transfer). The conversion is byte by byte (packet.to_netascii), so a
    chunk converts on its own; blocks are asked for in order, and a retransmission that
    reaches back before the current view starts the conversion again from the start."""

    def __init__(self, fd: int, source_size: int) -> None:
        super().__init__(None, fd, netascii_size(fd, source_size))
        self.source_end = 0  # where in the file the byte after the view comes from

    def fill(self, offset: int, want: int) -> None:
        assert self.fd is not None
        if self.start <= offset <= self.end:  # keep what is converted from offset on
            kept, first = bytes(self.view[offset - self.start:]), offset
            source, position = self.source_end, self.end
        elif offset > self.end:
            kept, first, source, position = b"", self.end, self.source_end, self.end
        else:
            kept, first, source, position = b"", 0, 0, 0
        pieces = [kept]
        while position < min(offset + want, self.size):
            data = os.pread(self.fd, READ_CHUNK, source)
            if not data:
                raise OSError(errno.ENODATA, SHRANK)
            converted = packet.to_netascii(data)
            source += len(data)
            if position + len(converted) <= offset:  # wholly before the asked offset
                position += len(converted)
                first = position
                continue
            pieces.append(converted)
            position += len(converted)
        self.view = memoryview(b"".join(pieces))
        self.start, self.end, self.source_end = first, position, source


def netascii_size(fd: int, size: int) -> int:
    """The file's size once converted (each CR and LF gains one byte), read in chunks."""
    extra = offset = 0
    while offset < size:
        data = os.pread(fd, min(READ_CHUNK, size - offset), offset)
        if not data:
            raise OSError(errno.ENODATA, SHRANK)
        extra += data.count(b"\r") + data.count(b"\n")
        offset += len(data)
    return size + extra


class Transfer:
    """One read request: prepared on a pool thread, then driven by a loop or the native sender."""

    def __init__(self, settings: Settings, gso: Gso, request: Request, peer: tuple[str, int],
                 local_ip: str) -> None:
        self.settings, self.gso = settings, gso
        self.request, self.peer, self.local_ip = request, peer, local_ip
        # Set by the driving loop: wait (True) or stop waiting (False) for room to send.
        self.watch_write: Callable[[socket.socket, bool], None] = _ignore_write_wait
        self.started = time.monotonic()
        self.sock: socket.socket | None = None
        self.fd: int | None = None
        self.blocks = Blocks(None, None, 0)
        self.neg = Negotiated()
        self.options: dict[str, int] = {}
        self.retransmits = 0
        self.in_oack = False
        self.last = 1  # number of the final block
        self.acked = 0  # every block up to this one is acknowledged
        self.next = 1  # next block to send
        self.end = 0  # last block of the current window
        self.tries = 0
        self.retries = settings.retries  # lowered by prepare() to fit settings.max_silence
        self.deadline = 0.0
        self.want_write = False
        self.batch = 1  # blocks per send (more than one with UDP GSO)
        self.content: bytes | None = None  # generated content (else the file fd)
        self.stop = native.StopFlag()  # ends a transfer run by the native sender

    # -- preparation (pool thread) ---------------------------------------------------------

    def _fail(self, code: ErrorCode, message: str) -> str:
        assert self.sock is not None
        self.sock.send(packet.build_error(code, message))
        return f"error: {message}"

    def _refuse(self, reason: str) -> str:
        log.warning("TFTP access violation from %s:%d for %r: %s",
                    self.peer[0], self.peer[1], self.request.filename, reason)
        return self._fail(ErrorCode.ACCESS_VIOLATION, f"access violation: {reason}")

    def prepare(self) -> str | None:
        """Resolve content and options; returns an outcome if refused (ERROR already sent)."""
        request, settings = self.request, self.settings
        self.sock = sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.local_ip, 0))
        sock.connect(self.peer)
        if request.mode not in packet.MODES:
            return self._fail(ErrorCode.ILLEGAL_OPERATION, f"transfer mode {request.mode!r} "
                              "not supported: use octet or netascii")
        try:
            path = normalize(request.filename)
        except PathRefused as exc:
            return self._refuse(str(exc))
        answer: bytes | Path | None = None
        if settings.responder is not None:
            try:
                answer = settings.responder(path.relative, self.peer)
            except Exception:
                log.exception("TFTP responder failed for %r (peer %s)", path.relative, self.peer)
                return self._fail(ErrorCode.NOT_DEFINED,
                                  f"could not generate {path.relative}: see the server log")
        content = answer if isinstance(answer, bytes) else None
        size = 0
        if isinstance(answer, Path):
            try:
                self.fd, size = open_named(answer)
            except (OSError, PathRefused) as exc:
                log.error("TFTP %r stands for %s, which cannot be served: %s", path.relative,
                          answer, exc)
                return self._fail(ErrorCode.FILE_NOT_FOUND,
                                  f"{path.relative} is not available: see the server log")
        elif content is None:
            try:
                self.fd, size = open_in_root(settings.root, path.relative)
            except FileNotFoundError:
                if path.absolute:
                    return self._refuse("absolute path outside the TFTP root")
                return self._fail(ErrorCode.FILE_NOT_FOUND, f"file not found: {path.relative}")
            except PathRefused as exc:
                return self._refuse(str(exc))
        if request.mode == "netascii" and content is not None:
            content = packet.to_netascii(content)  # generated: small, in memory already
        if request.mode == "netascii" and content is None:
            assert self.fd is not None
            if size > NETASCII_MAX:
                return self._fail(ErrorCode.NOT_DEFINED, f"{path.relative} is too large "
                                  "for netascii mode: use octet")
            self.blocks = NetasciiBlocks(self.fd, size)
        else:
            self.blocks = Blocks(content, self.fd, size if content is None else len(content))
        self.neg = neg = negotiate(request.options, self.blocks.size, settings.max_blksize,
                                   settings.client_rcvbuf,
                                   max_timeout=max(1, int(settings.max_silence // 2)))
        self.retries = retries_within(neg.timeout, settings.retries, settings.max_silence)
        self.options = {name: int(value) for name, value in neg.reply.items()}
        self.last = self.blocks.size // neg.blksize + 1  # the final block is short, maybe empty
        self.batch = self.gso.batch(neg.blksize) if neg.windowsize > 1 else 1
        self.content = content
        sock.setblocking(False)
        return None

    @property
    def converts_as_it_goes(self) -> bool:
        """netascii from a file: converted block by block, so the Python loop drives it (the
        native sender sends bytes as they are)."""
        return isinstance(self.blocks, NetasciiBlocks)

    # -- driven by the Python loop (pyloop.py) ----------------------------------------------

    def begin(self, now: float) -> None:
        """First packet: the OACK if options were accepted, else DATA 1 (RFC 2347)."""
        if self.neg.reply:
            self.in_oack = True
            self.deadline = now + self.neg.timeout
            self._send_oack()
        else:
            self._window(now, 0)

    def _send_oack(self) -> None:
        assert self.sock is not None
        with contextlib.suppress(BlockingIOError):  # lost like any datagram: the timer resends
            self.sock.send(packet.build_oack(self.neg.reply))

    def _window(self, now: float, acked: int) -> None:
        """Start the window after block `acked` and send as much of it as the socket takes."""
        self.acked, self.next, self.tries = acked, acked + 1, 0
        self.end = min(acked + self.neg.windowsize, self.last)
        self.deadline = now + self.neg.timeout
        self.send_pending()

    def send_pending(self) -> None:
        """Send blocks next..end; if the socket buffer is full, wait for EPOLLOUT.

        With UDP GSO a run of blocks leaves in one sendmsg(): the kernel cuts the buffer into
        one datagram per block (every segment is 4 + blksize bytes, only the file's final
        block is shorter and it is always last), which saves most of the per-datagram cost.
        """
        blocks, bs, block, end = self.blocks, self.neg.blksize, self.next, self.end
        sock, pack, size, view = self.sock, _HEAD.pack, blocks.size, blocks.view
        assert sock is not None
        try:
            while block <= end:
                count = min(end - block + 1, self.batch)
                if count == 1:  # lock-step, or the window's last block
                    offset = (block - 1) * bs
                    if offset < blocks.start or (offset + bs > blocks.end and blocks.end < size):
                        blocks.fill(offset, bs * self.neg.windowsize)
                        view = blocks.view
                    start = offset - blocks.start
                    sock.send(pack(3, block & 0xFFFF) + view[start:start + bs])
                    block += 1
                    continue
                parts = []
                for number in range(block, block + count):
                    offset = (number - 1) * bs
                    if offset < blocks.start or (offset + bs > blocks.end and blocks.end < size):
                        blocks.fill(offset, bs * self.neg.windowsize)
                        view = blocks.view
                    start = offset - blocks.start
                    parts += (pack(3, number & 0xFFFF), view[start:start + bs])
                try:
                    sock.sendmsg(parts, [(socket.SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(bs + 4))])
                except OSError as exc:
                    if exc.errno not in _NO_GSO:
                        raise
                    self.gso.disable(exc)
                    self.batch = 1
                    continue
                block += count
        except BlockingIOError:
            if not self.want_write:
                self.want_write = True
                self.watch_write(sock, True)
        else:
            if self.want_write:
                self.want_write = False
                self.watch_write(sock, False)
        finally:
            self.next = block

    def readable(self, now: float) -> str | None:
        """Handle one datagram; returns the outcome once the transfer is over."""
        pkt = self.sock.recv(_RECV_MAX)  # type: ignore[union-attr]
        if len(pkt) == 4 and pkt[1] == 4 and pkt[0] == 0:
            if self.in_oack:
                if pkt == _ACK0:
                    self.in_oack = False
                    self._window(now, 0)
                return None
            acked = self.acked
            delta = (((pkt[2] << 8) | pkt[3]) - acked) & 0xFFFF
            # Only an ACK that moves forward counts; a duplicate or stale one is never
            # answered (sorcerer's apprentice): only the timer resends.
            if 0 < delta < self.next - acked:
                acked += delta
                if acked >= self.last:
                    return "ok"
                if acked < self.next - 1:  # the client saw a gap: go back (RFC 7440)
                    self.retransmits += self.next - 1 - acked
                self._window(now, acked)
            return None
        if pkt[:2] == b"\x00\x05":
            try:
                error = packet.parse(pkt)
            except PacketError:
                return "error: client sent a malformed ERROR"
            assert isinstance(error, packet.Error)
            return f"error: client aborted: {error.message or error.code}"
        return None  # junk from the peer's port: ignored

    def expired(self, now: float) -> str | None:
        """The retransmission timer: resend the OACK or the window, or give up."""
        if now < self.deadline:
            return None
        self.tries += 1
        if self.tries > self.retries:
            return "timeout"
        self.deadline = now + self.neg.timeout
        if self.in_oack:
            self.retransmits += 1
            self._send_oack()
        else:
            self.retransmits += self.next - 1 - self.acked
            tries = self.tries
            self._window(now, self.acked)
            self.tries = tries
        return None

    def close(self, outcome: str) -> TransferStats:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.sock is not None:
            self.sock.close()
        sent = self.blocks.size if outcome == "ok" else min(self.acked * self.neg.blksize,
                                                             self.blocks.size)
        return TransferStats(
            peer=f"{self.peer[0]}:{self.peer[1]}", filename=self.request.filename, bytes=sent,
            duration=time.monotonic() - self.started, retransmits=self.retransmits,
            options=self.options, outcome=outcome,
        )


