"""The TFTP server: a listener thread for requests and one thread per transfer.

Why threads and not asyncio: every transfer gets its own connected UDP socket (its TID), and
the per-block work is one recv() and one send() that release the GIL; a blocking socket with
SO_RCVTIMEO as the retransmission timer costs one system call per packet and no event-loop
bookkeeping, which is what decides lock-step throughput at 512-byte blocks. A slow or dead
client only ever blocks its own thread; an abandoned transfer ends after its retries.

Content comes first from the responder (generated per-node boot configs, never written to
disk), then from the root directory (see paths.py for confinement). Statistics of every
transfer go to `on_transfer` from a single dispatcher thread, so a slow store never stalls a
transfer and the callback always runs on the same thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisiond.errors import UserError
from provisiond.tftp import packet
from provisiond.tftp.options import DEFAULT_WINDOW_BYTES, MAX_BLKSIZE, Negotiated, negotiate
from provisiond.tftp.packet import ErrorCode, Opcode, PacketError, Request
from provisiond.tftp.paths import PathRefused, normalize, open_in_root

log = logging.getLogger(__name__)

Responder = Callable[[str, tuple[str, int]], "bytes | None"]

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python does not export it
DEFAULT_RETRIES = 5
READ_CHUNK = 256 * 1024  # file read-ahead: one pread serves many blocks
NETASCII_MAX = 16 * 1024 * 1024  # netascii is converted in memory; it is for small text files
LISTEN_RCVBUF = 1 << 20  # a boot storm sends many RRQs at once
_RECV_MAX = 1024
_HEAD = struct.Struct("!HH")


@dataclass(frozen=True)
class TransferStats:
    """One finished (or failed) transfer. `peer` is "ip:port"; outcome "ok", "timeout" or
    "error: ..."; options are the negotiated values that were acknowledged."""

    peer: str
    filename: str
    bytes: int
    duration: float
    retransmits: int
    options: dict[str, int]
    outcome: str


class _Stopped(Exception):
    """The server is stopping: the transfer ends at once."""


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class _Transfer:
    """One read request, served from its own socket on its own thread."""

    def __init__(self, server: TftpServer, request: Request, peer: tuple[str, int],
                 local_ip: str) -> None:
        self.server = server
        self.request = request
        self.peer = peer
        self.local_ip = local_ip
        self.sock: socket.socket | None = None
        self.retransmits = 0
        self.sent_bytes = 0
        self.options: dict[str, int] = {}
        self.thread = threading.Thread(
            target=self.run, name=f"tftp-{peer[0]}:{peer[1]}", daemon=True
        )

    def abort(self) -> None:
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a recv() blocked in this thread

    def run(self) -> None:
        started = time.monotonic()
        fd: int | None = None
        try:
            self.sock = sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.local_ip, 0))
            sock.connect(self.peer)
            if self.server._stopping.is_set():
                raise _Stopped
            outcome, fd = self._serve(sock)
        except _Stopped:
            outcome = "error: server stopped"
        except ConnectionRefusedError:
            outcome = "error: client went away (port unreachable)"
        except OSError as exc:
            outcome = f"error: {exc.strerror or exc}"
        except Exception:
            log.exception("TFTP transfer of %r to %s failed", self.request.filename, self.peer)
            outcome = "error: internal error"
        finally:
            if fd is not None:
                os.close(fd)
            if self.sock is not None:
                self.sock.close()
        self.server._finished(self, TransferStats(
            peer=f"{self.peer[0]}:{self.peer[1]}", filename=self.request.filename,
            bytes=self.sent_bytes, duration=time.monotonic() - started,
            retransmits=self.retransmits, options=self.options, outcome=outcome,
        ))

    # -- request handling -----------------------------------------------------------------

    def _fail(self, sock: socket.socket, code: ErrorCode, message: str) -> str:
        sock.send(packet.build_error(code, message))
        return f"error: {message}"

    def _refuse(self, sock: socket.socket, reason: str) -> str:
        log.warning("TFTP access violation from %s:%d for %r: %s",
                    self.peer[0], self.peer[1], self.request.filename, reason)
        return self._fail(sock, ErrorCode.ACCESS_VIOLATION, f"access violation: {reason}")

    def _serve(self, sock: socket.socket) -> tuple[str, int | None]:
        """Resolve the content, negotiate, send; returns (outcome, fd to close)."""
        request, server = self.request, self.server
        if request.mode not in packet.MODES:
            return self._fail(sock, ErrorCode.ILLEGAL_OPERATION,
                              f"transfer mode {request.mode!r} not supported: use octet or "
                              "netascii"), None
        try:
            path = normalize(request.filename)
        except PathRefused as exc:
            return self._refuse(sock, str(exc)), None
        content: bytes | None = None
        if server.responder is not None:
            try:
                content = server.responder(path.relative, self.peer)
            except Exception:
                log.exception("TFTP responder failed for %r (peer %s)", path.relative, self.peer)
                return self._fail(sock, ErrorCode.NOT_DEFINED,
                                  f"could not generate {path.relative}: see the server log"), None
        fd: int | None = None
        if content is None:
            try:
                fd, size = open_in_root(server.root, path.relative)
            except FileNotFoundError:
                if path.absolute:
                    return self._refuse(sock, "absolute path outside the TFTP root"), None
                return self._fail(sock, ErrorCode.FILE_NOT_FOUND,
                                  f"file not found: {path.relative}"), None
            except PathRefused as exc:
                return self._refuse(sock, str(exc)), None
        if request.mode == "netascii":
            if content is None:
                assert fd is not None
                if size > NETASCII_MAX:
                    return self._fail(sock, ErrorCode.NOT_DEFINED,
                                      f"{path.relative} is too large for netascii mode: use "
                                      "octet"), fd
                content = os.pread(fd, size, 0)
            content = packet.to_netascii(content)
        blocks = _Blocks(content, fd, size if content is None else len(content))
        neg = negotiate(request.options, blocks.size, server.max_blksize, server.window_bytes)
        self.options = {name: int(value) for name, value in neg.reply.items()}
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(neg.timeout))
        if neg.reply:
            failed = self._offer(sock, neg)
            if failed:
                return failed, fd
        return self._send(sock, blocks, neg), fd

    def _other(self, pkt: bytes) -> str | None:
        """A packet that is not the expected ACK: an ERROR ends the transfer, junk is ignored."""
        if not pkt and self.server._stopping.is_set():
            raise _Stopped
        if pkt[:2] == b"\x00\x05":
            try:
                error = packet.parse(pkt)
            except PacketError:
                return "error: client sent a malformed ERROR"
            assert isinstance(error, packet.Error)
            return f"error: client aborted: {error.message or error.code}"
        return None

    def _offer(self, sock: socket.socket, neg: Negotiated) -> str | None:
        """Send the OACK until ACK 0 comes back; returns an outcome only on failure."""
        oack = packet.build_oack(neg.reply)
        for attempt in range(self.server.retries + 1):
            if attempt:
                self.retransmits += 1
            sock.send(oack)
            deadline = time.monotonic() + neg.timeout
            while time.monotonic() < deadline:
                try:
                    pkt = sock.recv(_RECV_MAX)
                except BlockingIOError:
                    break
                if pkt == b"\x00\x04\x00\x00":
                    return None
                if (outcome := self._other(pkt)) is not None:
                    return outcome
        return "timeout"

    def _send(self, sock: socket.socket, blocks: _Blocks, neg: Negotiated) -> str:
        """Send all blocks, `windowsize` at a time (RFC 7440), with go-back on a partial ACK.

        A duplicate or stale ACK is never answered (sorcerer's apprentice): only the timer
        resends, so duplicated ACKs can never double the traffic.
        """
        bs, window, size = neg.blksize, neg.windowsize, blocks.size
        last = size // bs + 1  # the final block is shorter than bs (possibly empty)
        pack, send, recv = _HEAD.pack, sock.send, sock.recv
        retries, timeout = self.server.retries, neg.timeout
        acked = tries = 0
        view, buf_start, buf_end = blocks.view, blocks.start, blocks.end
        while acked < last:
            end = min(acked + window, last)
            for block in range(acked + 1, end + 1):
                offset = (block - 1) * bs
                if offset < buf_start or (offset + bs > buf_end and buf_end < size):
                    buf_start, buf_end = blocks.fill(offset, bs * window)
                    view = blocks.view
                send(pack(3, block & 0xFFFF) + view[offset - buf_start:offset - buf_start + bs])
            deadline = 0.0
            while True:
                try:
                    pkt = recv(_RECV_MAX)
                except BlockingIOError:  # SO_RCVTIMEO expired: resend the window
                    tries += 1
                    if tries > retries:
                        self.sent_bytes = min(acked * bs, size)
                        return "timeout"
                    self.retransmits += end - acked
                    break
                if len(pkt) == 4 and pkt[1] == 4 and pkt[0] == 0:
                    delta = (((pkt[2] << 8) | pkt[3]) - acked) & 0xFFFF
                    if 0 < delta <= end - acked:
                        acked += delta
                        tries = 0
                        if acked < end:  # the client saw a gap: go back to acked + 1
                            self.retransmits += end - acked
                        break
                elif (outcome := self._other(pkt)) is not None:
                    self.sent_bytes = min(acked * bs, size)
                    return outcome
                # Ignored packet: keep waiting, but never past the retransmission deadline.
                now = time.monotonic()
                if not deadline:
                    deadline = now + timeout
                elif now >= deadline:
                    tries += 1
                    if tries > retries:
                        self.sent_bytes = min(acked * bs, size)
                        return "timeout"
                    self.retransmits += end - acked
                    break
        self.sent_bytes = size
        return "ok"


class _Blocks:
    """Content addressed by offset: in memory, or a file read ahead in large chunks so that
    a block is a memoryview slice and not a system call."""

    def __init__(self, content: bytes | None, fd: int | None, size: int) -> None:
        self.fd, self.size = fd, size
        self.view = memoryview(content if content is not None else b"")
        self.start, self.end = 0, len(self.view)

    def fill(self, offset: int, want: int) -> tuple[int, int]:
        assert self.fd is not None
        data = os.pread(self.fd, max(READ_CHUNK, want), offset)
        self.view, self.start, self.end = memoryview(data), offset, offset + len(data)
        return self.start, self.end


class TftpServer:
    """Read-only TFTP server (RFC 1350, 2347, 2348, 2349, 7440) for one IPv4 address."""

    def __init__(
        self,
        root: Path,
        address: str = "0.0.0.0",
        port: int = 69,
        responder: Responder | None = None,
        on_transfer: Callable[[TransferStats], None] | None = None,
        max_transfers: int = 256,
        *,
        retries: int = DEFAULT_RETRIES,
        max_blksize: int = MAX_BLKSIZE,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
    ) -> None:
        self.root = Path(root)
        self.address = address
        self.port = port
        self.responder = responder
        self.on_transfer = on_transfer
        self.max_transfers = max_transfers
        self.retries = retries
        self.max_blksize = max_blksize
        self.window_bytes = window_bytes
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._active: dict[tuple[tuple[str, int], str], _Transfer] = {}
        self._sock: socket.socket | None = None
        self._listener: threading.Thread | None = None
        self._stats: queue.SimpleQueue[TransferStats | None] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve in background threads; returns at once. UserError if it cannot bind."""
        if not self.root.is_dir():
            raise UserError(f"TFTP root {self.root} is not a directory: create it or pass "
                            "another --tftp-root")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, LISTEN_RCVBUF)
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            sock.bind((self.address, self.port))
        except OSError as exc:
            sock.close()
            hint = "run as root or use a port above 1023" if exc.errno == 13 else (
                "stop the other TFTP server (tftpd-hpa, dnsmasq) or pick another port")
            raise UserError(f"cannot listen for TFTP on {self.address}:{self.port}: "
                            f"{exc.strerror}; {hint}") from None
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._stopping.clear()
        self._dispatcher = threading.Thread(target=self._dispatch_stats, name="tftp-stats",
                                            daemon=True)
        self._dispatcher.start()
        self._listener = threading.Thread(target=self._listen, name="tftp-listener", daemon=True)
        self._listener.start()
        log.info("TFTP serving %s on %s:%d", self.root, self.address, self.port)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, abort running transfers and join every thread (bounded)."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        with self._lock:
            transfers = list(self._active.values())
        for transfer in transfers:
            transfer.abort()
        for thread in [self._listener, *(t.thread for t in transfers)]:
            if thread is not None and thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        if self._dispatcher is not None:
            self._stats.put(None)
            self._dispatcher.join(max(0.1, deadline - time.monotonic()))
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def active_transfers(self) -> int:
        with self._lock:
            return len(self._active)

    # -- listener -------------------------------------------------------------------------

    def _listen(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stopping.is_set():
            try:
                data, ancdata, _flags, peer = sock.recvmsg(packet.MAX_REQUEST + 1, 256)
            except OSError as exc:
                if self._stopping.is_set():
                    break
                log.warning("TFTP listener: %s", exc)
                continue
            if self._stopping.is_set():
                break
            local_ip = self.address
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
                    local_ip = socket.inet_ntoa(value[4:8])  # ipi_spec_dst: our address
            try:
                self._request(sock, data, peer, local_ip)
            except OSError as exc:
                log.warning("TFTP listener: cannot answer %s: %s", peer, exc)

    def _request(self, sock: socket.socket, data: bytes, peer: tuple[str, int],
                 local_ip: str) -> None:
        try:
            request = packet.parse(data)
        except PacketError as exc:
            log.warning("TFTP malformed packet from %s:%d: %s", peer[0], peer[1], exc)
            sock.sendto(packet.build_error(ErrorCode.ILLEGAL_OPERATION, f"malformed: {exc}"),
                        peer)
            return
        if isinstance(request, packet.Error):
            return  # never answer an error with an error
        if not isinstance(request, Request):
            sock.sendto(packet.build_error(ErrorCode.UNKNOWN_TID,
                                           "no transfer on this port: send a read request"), peer)
            return
        if request.opcode is Opcode.WRQ:
            log.warning("TFTP write request from %s:%d for %r refused", peer[0], peer[1],
                        request.filename)
            sock.sendto(packet.build_error(ErrorCode.ACCESS_VIOLATION,
                                           "write requests are refused: this server only "
                                           "serves files"), peer)
            self._stats.put(TransferStats(f"{peer[0]}:{peer[1]}", request.filename, 0, 0.0, 0,
                                          {}, "error: write request refused"))
            return
        key = (peer, request.filename)
        with self._lock:
            if key in self._active:
                return  # the client repeated its RRQ; the transfer already answers it
            if len(self._active) >= self.max_transfers:
                busy = len(self._active)
                transfer = None
            else:
                transfer = self._active[key] = _Transfer(self, request, peer, local_ip)
        if transfer is None:
            log.warning("TFTP busy (%d transfers): refused %r from %s", busy, request.filename,
                        peer)
            sock.sendto(packet.build_error(ErrorCode.NOT_DEFINED,
                                           f"server busy ({busy} transfers): retry later"), peer)
            return
        transfer.thread.start()

    # -- statistics -----------------------------------------------------------------------

    def _finished(self, transfer: _Transfer, stats: TransferStats) -> None:
        with self._lock:
            self._active.pop((transfer.peer, transfer.request.filename), None)
        self._stats.put(stats)

    def _dispatch_stats(self) -> None:
        while (stats := self._stats.get()) is not None:
            level = logging.INFO if stats.outcome == "ok" else logging.WARNING
            log.log(level, "TFTP %s %r %d bytes in %.3fs, %d retransmits, options %s: %s",
                    stats.peer, stats.filename, stats.bytes, stats.duration, stats.retransmits,
                    stats.options, stats.outcome)
            if self.on_transfer is not None:
                try:
                    self.on_transfer(stats)
                except Exception:
                    log.exception("TFTP on_transfer callback failed for %r", stats.filename)
