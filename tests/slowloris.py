"""Slow HTTP clients ("slowloris"): connections that send a request line and one header, then
one more header line every 2 s, and never end their headers. Used by the slow-client test
(tests/serve/test_http_slow_clients.py) and bench (bench/serve/bench_slow_clients.py).
Loopback only."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


def _drip(held: list[socket.socket], stop: threading.Event) -> None:
    """One more header line on every held connection every 2 s: never idle, never done."""
    while not stop.wait(2.0):
        for sock in held:
            with contextlib.suppress(OSError):
                sock.sendall(b"X-More: b\r\n")


@contextlib.contextmanager
def slow_clients(port: int, count: int, path: str = "/") -> Iterator[list[socket.socket]]:
    """`count` slow clients of 127.0.0.1:`port` asking for `path`, kept dripping until the
    block ends; every connection is closed on exit."""
    held: list[socket.socket] = []
    stop = threading.Event()
    dripper = threading.Thread(target=_drip, args=(held, stop), daemon=True)
    try:
        for number in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            held.append(sock)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Slow-{number}: a\r\n".encode())
        dripper.start()
        yield held
    finally:
        stop.set()
        if dripper.is_alive():
            dripper.join(10)
        for sock in held:
            sock.close()


def still_open(held: list[socket.socket]) -> int:
    """How many of the held connections the server has not closed (nothing to read, or data)."""
    alive = 0
    for sock in held:
        sock.setblocking(False)
        try:
            alive += sock.recv(1) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive
