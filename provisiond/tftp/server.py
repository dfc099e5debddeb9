"""The TFTP server: a small pool prepares requests (transfer.py: path checks, the responder,
opening the file, options), so a slow responder never stalls running transfers; then each
transfer runs in the native sender (native.py: one thread per transfer, GIL released).
docs/tftp.md says why, with the measurements.

Without the native sender (no C compiler at install), transfers run in the event loop
instead (pyloop.py, which also reads the listening socket). Either way each transfer has its
own connected UDP socket (its TID), and a slow or vanished client only holds its own deadline.

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
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from provisiond.errors import UserError
from provisiond.tftp import native, packet
from provisiond.tftp.options import DEFAULT_CLIENT_RCVBUF, MAX_BLKSIZE
from provisiond.tftp.packet import ErrorCode, Opcode, PacketError, Request
from provisiond.tftp.pyloop import PythonLoop
from provisiond.tftp.transfer import SHRANK, Gso, Responder, Settings, Transfer, TransferStats

__all__ = ["SHRANK", "Responder", "TftpServer", "TransferStats"]

log = logging.getLogger(__name__)

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python does not export it
DEFAULT_RETRIES = 5
MAX_TRANSFERS = 1024  # a row of racks booting at once (bench/storm: 1,000 nodes)
MAX_PER_CLIENT = 8  # transfers one client address may have at once (a booting box needs 1-2)
MAX_SILENCE = 30.0  # seconds a transfer waits for a client that stopped answering
# Requests beyond max_transfers wait in line (a boot storm) instead of getting an ERROR, which
# PXE firmware takes as the end of its boot (PXE-E3x, EDK2's EFI_TFTP_ERROR). A waiting
# request is dropped once its client has not repeated it for WAIT_FRESH seconds (firmware
# repeats an unanswered RRQ every 1-4 s and gives up after about 20 s).
MAX_WAITING = 4096
WAIT_FRESH = 10.0
PREPARE_THREADS = 4
LISTEN_RCVBUF = 1 << 20  # a boot storm sends many RRQs at once


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
        max_transfers: int = MAX_TRANSFERS,
        *,
        max_per_client: int = MAX_PER_CLIENT,
        max_silence: float = MAX_SILENCE,
        max_waiting: int = MAX_WAITING,
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
        self.max_per_client = max_per_client
        self.max_silence = max_silence
        self.max_waiting = max_waiting
        self.retries = retries
        self.max_blksize = max_blksize
        self.client_rcvbuf = client_rcvbuf
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._active: dict[tuple[tuple[str, int], str], Transfer] = {}
        self._per_client: collections.Counter[str] = collections.Counter()  # address: transfers
        # Requests waiting for a free transfer, oldest first: key -> (request, local address,
        # when the client last asked). Their clients count in _per_client too.
        self._waiting: collections.OrderedDict[
            tuple[tuple[str, int], str], tuple[Request, str, float]] = collections.OrderedDict()
        self._sock: socket.socket | None = None
        self._loop: PythonLoop | None = None
        self._jobs: queue.SimpleQueue[Transfer | None] = queue.SimpleQueue()
        self._stats: queue.SimpleQueue[TransferStats | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._gso = Gso(gso)
        self._use_native = native_sender
        self._native: ctypes.CDLL | None = None  # the loaded native sender, set by start()
        self._native_runs: dict[Transfer, threading.Thread] = {}

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
        self._loop = loop = PythonLoop(sock, self._accept, self._end, self._stopping)
        self._threads = [
            threading.Thread(target=self._dispatch_stats, name="tftp-stats", daemon=True),
            *(threading.Thread(target=self._prepare_jobs, name=f"tftp-prepare-{i}", daemon=True)
              for i in range(PREPARE_THREADS)),
            threading.Thread(target=loop.run, name="tftp-loop", daemon=True),
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
        if self._loop is not None:
            self._loop.wake_up()
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
        for transfer in self._loop.leftovers() if self._loop is not None else ():
            self._end(transfer, "error: server stopped")
        self._stats.put(None)
        for thread in stats:
            thread.join(max(0.1, deadline - time.monotonic()))
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _settings(self) -> Settings:
        return Settings(self.root, self.responder, self.retries, self.max_blksize,
                        self.client_rcvbuf, self.max_silence)

    @property
    def native(self) -> bool:
        """True if transfers run in the native sender (see native.py)."""
        return self._native is not None

    @property
    def active_transfers(self) -> int:
        with self._lock:
            return len(self._active)

    @property
    def waiting_requests(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _end(self, transfer: Transfer, outcome: str) -> None:
        if self._loop is not None:
            self._loop.forget(transfer)
        stats = transfer.close(outcome)
        with self._lock:
            if self._active.pop((transfer.peer, transfer.request.filename), None) is not None:
                self._release(transfer.peer[0])
            self._start_waiting()
        self._stats.put(stats)

    def _release(self, client: str) -> None:
        self._per_client[client] -= 1
        if not self._per_client[client]:
            del self._per_client[client]

    def _drop_stale_waiting(self) -> None:
        """Forget waiting requests whose clients stopped asking (called with the lock held)."""
        now = time.monotonic()
        for key, (_, _, asked) in list(self._waiting.items()):
            if now - asked > WAIT_FRESH:
                del self._waiting[key]
                self._release(key[0][0])

    def _start_waiting(self) -> None:
        """Start the oldest waiting requests whose clients still ask, while slots are free
        (called with the lock held)."""
        now = time.monotonic()
        while self._waiting and len(self._active) < self.max_transfers:
            key, (request, local_ip, asked) = self._waiting.popitem(last=False)
            if self._stopping.is_set() or now - asked > WAIT_FRESH:
                self._release(key[0][0])  # its client gave up (or we stop): nothing to send
                continue
            self._active[key] = transfer = Transfer(self._settings(), self._gso, request,
                                                    key[0], local_ip)
            self._jobs.put(transfer)

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
            if key in self._waiting:  # repeated while waiting: it still wants the file
                self._waiting[key] = (request, local_ip, time.monotonic())
                return
            busy, own = len(self._active), self._per_client[peer[0]]
            if own < self.max_per_client:
                if busy < self.max_transfers and not self._waiting:
                    self._active[key] = transfer = Transfer(self._settings(), self._gso,
                                                            request, peer, local_ip)
                    self._per_client[peer[0]] += 1
                    self._jobs.put(transfer)
                    return
                if len(self._waiting) >= self.max_waiting:
                    self._drop_stale_waiting()
                if len(self._waiting) < self.max_waiting:
                    self._waiting[key] = (request, local_ip, time.monotonic())
                    self._per_client[peer[0]] += 1
                    self._start_waiting()  # a slot may have freed meanwhile
                    return
        if own >= self.max_per_client:
            reason = (f"{peer[0]} already has {own} transfers running: finish them or let "
                      f"them time out (at most {self.max_silence:.0f} s of silence)")
        else:
            reason = f"server busy ({busy} transfers, {self.max_waiting} waiting): retry later"
        log.warning("TFTP refused %r from %s:%d: %s", request.filename, peer[0], peer[1], reason)
        sock.sendto(packet.build_error(ErrorCode.NOT_DEFINED, reason), peer)

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
            elif self._native is not None and not transfer.converts_as_it_goes:
                self._start_native(transfer)
            else:
                assert self._loop is not None
                self._loop.submit(transfer)

    # -- the native sender: one thread per transfer ----------------------------------------

    def _start_native(self, transfer: Transfer) -> None:
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

    def _run_native(self, transfer: Transfer) -> None:
        sock, neg = transfer.sock, transfer.neg
        assert sock is not None and self._native is not None
        try:
            sock.setblocking(True)
            plan = native.Plan(fd=transfer.fd, content=transfer.content,
                               size=transfer.blocks.size, blksize=neg.blksize,
                               windowsize=neg.windowsize,
                               gso_batch=transfer.batch,
                               oack=packet.build_oack(neg.reply) if neg.reply else b"",
                               timeout=neg.timeout, retries=transfer.retries)
            end = native.send(self._native, sock, plan, transfer.stop)
            if end.gso_refused:
                self._gso.disable(OSError(end.gso_refused, os.strerror(end.gso_refused)))
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
