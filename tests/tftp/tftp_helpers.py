"""Helpers for the TFTP tests: a server fixture that records its statistics, and a raw
protocol client for what real clients cannot do on purpose (drop ACKs, repeat them, stall)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from provisiond.tftp import TftpServer, TransferStats, packet


class Recorder:
    """Collects TransferStats from on_transfer; waits are bounded."""

    def __init__(self) -> None:
        self.stats: list[TransferStats] = []
        self._cond = threading.Condition()

    def __call__(self, stats: TransferStats) -> None:
        with self._cond:
            self.stats.append(stats)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 30.0) -> list[TransferStats]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.stats) >= count, timeout):
                raise AssertionError(f"only {len(self.stats)} of {count} transfers reported "
                                     f"within {timeout} s: {self.stats}")
            return list(self.stats)


@contextmanager
def running_server(root: Path, engine: str = "native",
                   **kwargs) -> Iterator[tuple[TftpServer, Recorder]]:
    recorder = Recorder()
    server = TftpServer(root, "127.0.0.1", 0, on_transfer=recorder,
                        native_sender=engine == "native", **kwargs)
    server.start()
    assert server.native == (engine == "native")
    try:
        yield server, recorder
    finally:
        server.stop()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


class RawClient:
    """Speaks TFTP packet by packet from one socket on `source` (127.0.0.1 by default; any
    127.x.y.z is this machine too, for clients at different addresses)."""

    def __init__(self, port: int, timeout: float = 5.0, source: str = "127.0.0.1") -> None:
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.settimeout(timeout)
        self.tid: tuple[str, int] | None = None
        self.received: list[bytes] = []  # every datagram the server ever sent us

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def rrq(self, name: str, mode: str = "octet", options: dict[str, str] | None = None) -> None:
        self.send_raw(packet.build_request(packet.Opcode.RRQ, name, mode, options))

    def recv(self) -> packet.Packet:
        data, addr = self.sock.recvfrom(70000)
        self.received.append(data)
        self.tid = addr
        return packet.parse(data)

    def ack(self, block: int) -> None:
        assert self.tid is not None
        self.sock.sendto(packet.build_ack(block), self.tid)

    def drain(self, quiet: float = 0.3) -> list[packet.Packet]:
        """Everything that arrives until the line has been quiet for `quiet` seconds."""
        packets = []
        self.sock.settimeout(quiet)
        try:
            while True:
                packets.append(self.recv())
        except TimeoutError:
            return packets
        finally:
            self.sock.settimeout(5.0)
