"""The TFTP server: a small pool prepares requests (path checks, the responder, opening the
file, options), so a slow responder never stalls running transfers; then each transfer runs
in the native sender (native.py: one thread per transfer, GIL released). docs/tftp.md says
why, with the measurements.

Without the native sender (no C compiler at install), transfers run in one epoll loop
instead: the per-window work is one recv() and one sendmsg() (UDP GSO); each ready socket
costs a dict lookup and a method call, and the file is read ahead in 256 KiB chunks so a
block is a memoryview slice. Either way each transfer has its own connected UDP socket (its
TID), and a slow or vanished client only holds its own deadline.

Content comes first from the responder (generated per-node boot configs, never written to
disk), then from the root directory (see paths.py for confinement). Statistics of every
transfer go to `on_transfer` from a single dispatcher thread, so a slow store never stalls a
transfer and the callback always runs on the same thread.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import logging
import os
import queue
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisiond.errors import UserError
from provisiond.tftp import native, packet
from provisiond.tftp.options import DEFAULT_CLIENT_RCVBUF, MAX_BLKSIZE, Negotiated, negotiate
from provisiond.tftp.packet import ErrorCode, Opcode, PacketError, Request
from provisiond.tftp.paths import PathRefused, normalize, open_in_root, open_named

log = logging.getLogger(__name__)

# Given the requested path and the client, the responder returns generated content, a file to
# serve in its place (outside the root, e.g. a packaged boot loader), or None: from the root.
Responder = Callable[[str, tuple[str, int]], "bytes | Path | None"]

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python does not export it
DEFAULT_RETRIES = 5
PREPARE_THREADS = 4
READ_CHUNK = 256 * 1024  # file read-ahead: one pread serves many blocks
NETASCII_MAX = 16 * 1024 * 1024  # netascii is converted in memory; it is for small text files
LISTEN_RCVBUF = 1 << 20  # a boot storm sends many RRQs at once
TIMER_TICK = 0.1  # how often deadlines are checked; TFTP timeouts are whole seconds
_RECV_MAX = 1024
_ACK0 = b"\x00\x04\x00\x00"
_HEAD = struct.Struct("!HH")
_SEGMENT = struct.Struct("=H")
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # Linux >= 4.18; Python does not export it
GSO_MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
GSO_MAX_BYTES = 65507  # one IPv4 datagram
_NO_GSO = {errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE}
_IN, _INOUT = select.EPOLLIN, select.EPOLLIN | select.EPOLLOUT
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


class _Blocks:
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


class _Transfer:
    """One read request: prepared on a pool thread, then driven by the event loop."""

    def __init__(self, server: TftpServer, request: Request, peer: tuple[str, int],
                 local_ip: str) -> None:
        self.server, self.request, self.peer, self.local_ip = server, request, peer, local_ip
        self.started = time.monotonic()
        self.sock: socket.socket | None = None
        self.fd: int | None = None
        self.blocks = _Blocks(None, None, 0)
        self.neg = Negotiated()
        self.options: dict[str, int] = {}
        self.retransmits = 0
        self.in_oack = False
        self.last = 1  # number of the final block
        self.acked = 0  # every block up to this one is acknowledged
        self.next = 1  # next block to send
        self.end = 0  # last block of the current window
        self.tries = 0
        self.deadline = 0.0
        self.want_write = False
        self.batch = 1  # blocks per send (more than one with UDP GSO)
        self.content: bytes | None = None  # generated or netascii content (else the file fd)
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
        request, server = self.request, self.server
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
        if server.responder is not None:
            try:
                answer = server.responder(path.relative, self.peer)
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
                self.fd, size = open_in_root(server.root, path.relative)
            except FileNotFoundError:
                if path.absolute:
                    return self._refuse("absolute path outside the TFTP root")
                return self._fail(ErrorCode.FILE_NOT_FOUND, f"file not found: {path.relative}")
            except PathRefused as exc:
                return self._refuse(str(exc))
        if request.mode == "netascii":
            if content is None:
                assert self.fd is not None
                if size > NETASCII_MAX:
                    return self._fail(ErrorCode.NOT_DEFINED, f"{path.relative} is too large "
                                      "for netascii mode: use octet")
                content = os.pread(self.fd, size, 0)
            content = packet.to_netascii(content)
        self.blocks = _Blocks(content, self.fd, size if content is None else len(content))
        self.neg = neg = negotiate(request.options, self.blocks.size, server.max_blksize,
                                   server.client_rcvbuf)
        self.options = {name: int(value) for name, value in neg.reply.items()}
        self.last = self.blocks.size // neg.blksize + 1  # the final block is short, maybe empty
        self.batch = server._gso_batch(neg.blksize) if neg.windowsize > 1 else 1
        self.content = content
        sock.setblocking(False)
        return None

    # -- the event loop ---------------------------------------------------------------------

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
                    self.server._disable_gso(exc)
                    self.batch = 1
                    continue
                block += count
        except BlockingIOError:
            if not self.want_write:
                self.want_write = True
                self.server._epoll.modify(sock, _INOUT)
        else:
            if self.want_write:
                self.want_write = False
                self.server._epoll.modify(sock, _IN)
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
        if self.tries > self.server.retries:
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


def _native_outcome(end: native.Finished) -> str:
    """The same outcome strings as the Python loop's."""
    if end.outcome == native.OK:
        return "ok"
    if end.outcome == native.TIMEOUT:
        return "timeout"
    if end.outcome == native.CLIENT_ERROR:
        return f"error: client aborted: {end.client_message or end.client_code}"
    if end.outcome == native.STOPPED:
        return "error: server stopped"
    if end.error == errno.ECONNREFUSED:
        return "error: client went away (port unreachable)"
    if end.error == errno.ENODATA:
        return f"error: {SHRANK}"
    return f"error: {os.strerror(end.error)}"


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
        client_rcvbuf: int = DEFAULT_CLIENT_RCVBUF,
        gso: bool = True,
        native_sender: bool = True,
    ) -> None:
        self.root = Path(root)
        self.address = address
        self.port = port
        self.responder = responder
        self.on_transfer = on_transfer
        self.max_transfers = max_transfers
        self.retries = retries
        self.max_blksize = max_blksize
        self.client_rcvbuf = client_rcvbuf
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._active: dict[tuple[tuple[str, int], str], _Transfer] = {}
        self._sock: socket.socket | None = None
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._ready: collections.deque[_Transfer] = collections.deque()
        self._jobs: queue.SimpleQueue[_Transfer | None] = queue.SimpleQueue()
        self._stats: queue.SimpleQueue[TransferStats | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._gso = gso
        self._use_native = native_sender
        self._native: ctypes.CDLL | None = None  # the loaded native sender, set by start()
        self._native_runs: dict[_Transfer, threading.Thread] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve in background threads; returns at once. UserError if it cannot bind."""
        if not self.root.is_dir():
            raise UserError(f"TFTP root {self.root} is not a directory: create it or choose "
                            "another TFTP root directory")
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
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._native = native.load() if self._use_native else None
        self._epoll.register(sock, _IN)
        self._epoll.register(self._wake, _IN)
        self._threads = [
            threading.Thread(target=self._dispatch_stats, name="tftp-stats", daemon=True),
            *(threading.Thread(target=self._prepare_jobs, name=f"tftp-prepare-{i}", daemon=True)
              for i in range(PREPARE_THREADS)),
            threading.Thread(target=self._loop, name="tftp-loop", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        log.info("TFTP serving %s on %s:%d (transfers: %s)", self.root, self.address,
                 self.port, "native sender" if self._native is not None else "Python loop")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, end running transfers ("error: server stopped"), join every thread
        (bounded by `timeout`) and close every socket."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        os.eventfd_write(self._wake, 1)
        for _ in range(PREPARE_THREADS):
            self._jobs.put(None)
        loop, stats, preparers = self._threads[-1:], self._threads[:1], self._threads[1:-1]
        for thread in preparers + loop:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            runs = dict(self._native_runs)
        for transfer in runs:
            transfer.stop.set()
            if transfer.sock is not None:
                with contextlib.suppress(OSError):  # wakes the sender blocked in recv()
                    transfer.sock.shutdown(socket.SHUT_RDWR)
        for thread in runs.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        while True:  # requests still queued, or prepared after the loop ended
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._end(job, "error: server stopped")
        while self._ready:
            self._end(self._ready.popleft(), "error: server stopped")
        self._stats.put(None)
        for thread in stats:
            thread.join(max(0.1, deadline - time.monotonic()))
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._epoll.close()
        os.close(self._wake)

    def _gso_batch(self, blksize: int) -> int:
        """How many blocks one send may carry (1: no GSO)."""
        if not self._gso:
            return 1
        return max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // (blksize + 4)))

    def _disable_gso(self, exc: OSError) -> None:
        if self._gso:
            self._gso = False
            log.info("TFTP: UDP segmentation offload not available (%s); sending one "
                     "datagram per block", exc.strerror or exc)

    @property
    def native(self) -> bool:
        """True if transfers run in the native sender (see native.py)."""
        return self._native is not None

    @property
    def active_transfers(self) -> int:
        with self._lock:
            return len(self._active)

    # -- the event loop -------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._sock is not None
        poll, listen_fd, wake_fd = self._epoll.poll, self._sock.fileno(), self._wake
        epollout, monotonic = select.EPOLLOUT, time.monotonic
        running: dict[int, _Transfer] = {}
        next_tick = time.monotonic() + TIMER_TICK
        while not self._stopping.is_set():
            events = poll(max(0.0, next_tick - monotonic()))
            now = monotonic()
            for fd, mask in events:
                transfer = running.get(fd)
                if transfer is None:
                    if fd == listen_fd:
                        self._accept()
                    elif fd == wake_fd:
                        self._start_ready(running, now)
                    continue
                try:
                    if mask & epollout:
                        transfer.send_pending()
                    outcome = transfer.readable(now) if mask & ~epollout else None
                except ConnectionRefusedError:
                    outcome = "error: client went away (port unreachable)"
                except BlockingIOError:
                    outcome = None
                except OSError as exc:
                    outcome = f"error: {exc.strerror or exc}"
                if outcome is not None:
                    del running[fd]
                    self._end(transfer, outcome)
            if now >= next_tick:
                next_tick = now + TIMER_TICK
                for fd, transfer in list(running.items()):
                    try:
                        outcome = transfer.expired(now)
                    except OSError as exc:
                        outcome = f"error: {exc.strerror or exc}"
                    if outcome is not None:
                        del running[fd]
                        self._end(transfer, outcome)
        for transfer in running.values():
            self._end(transfer, "error: server stopped")
        self._start_ready({}, time.monotonic())

    def _start_ready(self, running: dict[int, _Transfer], now: float) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake)
        while self._ready:
            transfer = self._ready.popleft()
            if self._stopping.is_set():
                self._end(transfer, "error: server stopped")
                continue
            assert transfer.sock is not None
            fd = transfer.sock.fileno()
            self._epoll.register(fd, _IN)
            running[fd] = transfer
            try:
                transfer.begin(now)
            except OSError as exc:
                del running[fd]
                self._end(transfer, f"error: {exc.strerror or exc}")

    def _end(self, transfer: _Transfer, outcome: str) -> None:
        if transfer.sock is not None and transfer.sock.fileno() >= 0:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(transfer.sock)
        stats = transfer.close(outcome)
        with self._lock:
            self._active.pop((transfer.peer, transfer.request.filename), None)
        self._stats.put(stats)

    # -- requests -------------------------------------------------------------------------

    def _accept(self) -> None:
        """Read the requests waiting on the listening socket (a bounded batch)."""
        sock = self._sock
        assert sock is not None
        for _ in range(64):
            try:
                data, ancdata, _flags, peer = sock.recvmsg(packet.MAX_REQUEST + 1, 256)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("TFTP listener: %s", exc)
                return
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
            busy = len(self._active)
            if busy < self.max_transfers:
                self._active[key] = transfer = _Transfer(self, request, peer, local_ip)
                self._jobs.put(transfer)
                return
        log.warning("TFTP busy (%d transfers): refused %r from %s", busy, request.filename, peer)
        sock.sendto(packet.build_error(ErrorCode.NOT_DEFINED,
                                       f"server busy ({busy} transfers): retry later"), peer)

    def _prepare_jobs(self) -> None:
        while (transfer := self._jobs.get()) is not None:
            try:
                outcome = transfer.prepare()
            except OSError as exc:
                outcome = f"error: {exc.strerror or exc}"
            except Exception:
                log.exception("TFTP request for %r from %s failed", transfer.request.filename,
                              transfer.peer)
                outcome = "error: internal error"
            if outcome is not None:
                self._end(transfer, outcome)
            elif self._native is not None:
                self._start_native(transfer)
            else:
                self._ready.append(transfer)
                os.eventfd_write(self._wake, 1)

    # -- the native sender: one thread per transfer ----------------------------------------

    def _start_native(self, transfer: _Transfer) -> None:
        """Why a thread per transfer: each block (each window) is a round trip with the
        client, and a thread (like in.tftpd's process) that sleeps in recv() is woken on the
        client's CPU; one loop serving every client pays a cross-CPU wake-up per round trip."""
        thread = threading.Thread(target=self._run_native, args=(transfer,), daemon=True,
                                  name=f"tftp-{transfer.peer[0]}:{transfer.peer[1]}")
        with self._lock:  # started under the lock: stop() never sees an unstarted thread
            stopped = self._stopping.is_set()
            if not stopped:
                self._native_runs[transfer] = thread
                thread.start()
        if stopped:
            self._end(transfer, "error: server stopped")

    def _run_native(self, transfer: _Transfer) -> None:
        sock, neg = transfer.sock, transfer.neg
        assert sock is not None and self._native is not None
        try:
            sock.setblocking(True)
            plan = native.Plan(fd=transfer.fd, content=transfer.content,
                               size=transfer.blocks.size, blksize=neg.blksize,
                               windowsize=neg.windowsize,
                               gso_batch=transfer.batch,
                               oack=packet.build_oack(neg.reply) if neg.reply else b"",
                               timeout=neg.timeout, retries=self.retries)
            end = native.send(self._native, sock, plan, transfer.stop)
            if end.gso_refused:
                self._disable_gso(OSError(end.gso_refused, os.strerror(end.gso_refused)))
            transfer.acked, transfer.retransmits = end.acked, end.retransmits
            outcome = _native_outcome(end)
        except Exception:
            log.exception("TFTP transfer of %r to %s failed", transfer.request.filename,
                          transfer.peer)
            outcome = "error: internal error"
        with self._lock:
            self._native_runs.pop(transfer, None)
        self._end(transfer, outcome)

    # -- statistics -----------------------------------------------------------------------

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
