"""The event loop: one epoll thread for the listening socket and, without the native sender,
for every transfer (the per-window work is one recv() and one sendmsg(); each ready socket
costs a dict lookup and a method call).

The server hands it prepared transfers (`submit`, from any thread) and gets every finished
one back through `end(transfer, outcome)`; new requests on the listening socket go to
`accept()`. Nothing else of the server is known here.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable

from provisiond.tftp.transfer import Transfer

TIMER_TICK = 0.1  # how often deadlines are checked; TFTP timeouts are whole seconds
_IN, _INOUT = select.EPOLLIN, select.EPOLLIN | select.EPOLLOUT


class PythonLoop:
    """Listener and Python transfers on one epoll; `run()` until `stopping` is set."""

    def __init__(self, listen: socket.socket, accept: Callable[[], None],
                 end: Callable[[Transfer, str], None], stopping: threading.Event) -> None:
        self.listen, self.accept, self.end, self.stopping = listen, accept, end, stopping
        self.epoll = select.epoll()
        self.wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.ready: collections.deque[Transfer] = collections.deque()
        self.epoll.register(listen, _IN)
        self.epoll.register(self.wake, _IN)

    def submit(self, transfer: Transfer) -> None:
        """A prepared transfer, to be started by the loop thread."""
        self.ready.append(transfer)
        os.eventfd_write(self.wake, 1)

    def wake_up(self) -> None:
        os.eventfd_write(self.wake, 1)

    def forget(self, transfer: Transfer) -> None:
        """Stop watching a transfer's socket (it is ending)."""
        if transfer.sock is not None and transfer.sock.fileno() >= 0:
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(transfer.sock)

    def leftovers(self) -> list[Transfer]:
        """Transfers submitted but never started (after the loop ended)."""
        left = list(self.ready)
        self.ready.clear()
        return left

    def close(self) -> None:
        self.epoll.close()
        os.close(self.wake)

    def _watch_write(self, sock: socket.socket, waiting: bool) -> None:
        self.epoll.modify(sock, _INOUT if waiting else _IN)

    def run(self) -> None:
        poll, listen_fd, wake_fd = self.epoll.poll, self.listen.fileno(), self.wake
        epollout, monotonic = select.EPOLLOUT, time.monotonic
        running: dict[int, Transfer] = {}
        next_tick = time.monotonic() + TIMER_TICK
        while not self.stopping.is_set():
            events = poll(max(0.0, next_tick - monotonic()))
            now = monotonic()
            for fd, mask in events:
                transfer = running.get(fd)
                if transfer is None:
                    if fd == listen_fd:
                        self.accept()
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
                    self.end(transfer, outcome)
            if now >= next_tick:
                next_tick = now + TIMER_TICK
                for fd, transfer in list(running.items()):
                    try:
                        outcome = transfer.expired(now)
                    except OSError as exc:
                        outcome = f"error: {exc.strerror or exc}"
                    if outcome is not None:
                        del running[fd]
                        self.end(transfer, outcome)
        for transfer in running.values():
            self.end(transfer, "error: server stopped")
        self._start_ready({}, time.monotonic())

    def _start_ready(self, running: dict[int, Transfer], now: float) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.wake)
        while self.ready:
            transfer = self.ready.popleft()
            if self.stopping.is_set():
                self.end(transfer, "error: server stopped")
                continue
            assert transfer.sock is not None
            fd = transfer.sock.fileno()
            transfer.watch_write = self._watch_write
            self.epoll.register(fd, _IN)
            running[fd] = transfer
            try:
                transfer.begin(now)
            except OSError as exc:
                del running[fd]
                self.end(transfer, f"error: {exc.strerror or exc}")
