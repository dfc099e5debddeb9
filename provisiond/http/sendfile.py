"""Boot assets leave through sendfile(2) from waitress's I/O loop.

Why: waitress sends a `wsgi.file_wrapper` from its non-blocking loop (so a slow reader holds
an open file and an offset, never a worker thread), but it copies the file through Python in
socket-buffer-sized pieces, reading each piece twice; kernels, initrds and images came out at
0.3x nginx. Here the same loop hands the file to the kernel with sendfile(2) whenever the
socket is writable: the slow-client protection stays, the copies go. Everything that is not
a boot asset (scripts, answer files, the API) keeps waitress's own buffers.

Also here, the idle rule for every connection (`http_idle_timeout`, see `idle_check`). waitress
counts only its own writes and reads as activity, and a write happens only when the socket
has room for a third of its send buffer, which the kernel grows to megabytes: a client that
keeps receiving slowly (an initrd in a 1,000-node boot storm, 2 loaded cores) could go a
minute without freeing that third, and was cut in the middle of its file, costing it a
minute and a retry. Here a client that acknowledged bytes (TCP_INFO) since the last look is
active too, so what is cut is a client that received nothing for the idle time, as nginx
documents its `send_timeout`. And waitress only marked an idle connection, to be closed at its
next write event, which never comes for a client that stopped reading (its socket stays
full): such a client held its connection for good. It is closed now.

Also here: waitress 3.0.2 logs an AttributeError traceback when a client disconnects while
its malformed request is being refused (it names `request.path`, which a request whose first
line never parsed lacks); the parser below has an empty path from the start.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer
from waitress.task import WSGITask

from provisiond.http.tcp_info import TCP_INFO_LENGTH, acked_bytes, notsent_bytes
from provisiond.logs import log_event

log = logging.getLogger("provisiond.http")

DISCONNECTED = frozenset({errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN,
                          errno.ECONNABORTED, errno.EPIPE, errno.EBADF})


class SendfileBuffer(ReadOnlyFileBasedBuffer):
    """A file_wrapper that sends itself with sendfile(2) from an offset of its own (`prepare`
    is called once the Content-Length is known; files.py has positioned the file at the
    range start). The file's position is never used after that."""

    offset = 0

    def prepare(self, size: int | None = None) -> int:
        remain = int(super().prepare(size))
        self.offset = self.file.tell()
        return remain

    def send_to(self, channel: HTTPChannel, do_close: bool) -> int:
        """As much as the socket takes now; 0 when it takes nothing (or is gone)."""
        try:
            sent = os.sendfile(channel.socket.fileno(), self.file.fileno(), self.offset,
                               self.remain)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno not in DISCONNECTED:
                raise
            sent = 0
        if sent == 0:  # the client is gone, or the file shrank: the length cannot be kept
            if do_close:
                channel.handle_close()
            return 0
        self.offset += sent
        self.remain -= sent
        return sent

    def get(self, numbytes: int = -1, skip: bool = False) -> bytes:
        if numbytes == -1 or numbytes > self.remain:
            numbytes = self.remain
        data = os.pread(self.file.fileno(), numbytes, self.offset)
        if skip:
            self.skip(len(data))
        return data

    def skip(self, numbytes: int, allow_prune: int = 0) -> None:
        numbytes = min(numbytes, self.remain)
        self.offset += numbytes
        self.remain -= numbytes


class SendfileTask(WSGITask):
    """A WSGI task whose environment offers SendfileBuffer as wsgi.file_wrapper."""

    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        environ["wsgi.file_wrapper"] = SendfileBuffer
        return environ


class RequestParser(HTTPRequestParser):
    path = ""  # set once the request line parses; waitress logs it even when it never did


class SendfileChannel(HTTPChannel):
    """waitress's connection, sending a SendfileBuffer at the head of its output with
    sendfile(2); called from the I/O loop when the socket is writable, as waitress's own
    flush is, so it never blocks on a slow reader."""

    task_class = SendfileTask
    parser_class = RequestParser
    written = 0  # bytes handed to the socket
    acked_seen: int | None = None  # the peer's acknowledged bytes at the last look
    kept_logged = False  # "http-idle-kept" was logged for this connection

    def tcp_info(self) -> bytes:
        """The socket's TCP_INFO, or b"" where there is none (not TCP, closed)."""
        try:
            return self.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LENGTH)
        except (OSError, AttributeError):
            return b""

    def note_client_progress(self, now: float) -> None:
        """Count the client's acknowledging bytes since the last look as activity: a client
        that is still receiving is not idle, even while its socket has no room for a write."""
        acked = acked_bytes(self.tcp_info())
        if acked is not None and self.acked_seen is not None and acked > self.acked_seen:
            if not self.kept_logged and now - self.last_activity > self.adj.channel_timeout:
                self.kept_logged = True  # once per connection: what the old rule would cut
                log_event(log, "http-idle-kept", peer=str(self.addr[0]) if self.addr else "",
                          write_idle_s=round(now - self.last_activity, 1),
                          acked_since=acked - self.acked_seen, written=self.written,
                          unsent=notsent_bytes(self.tcp_info()))
            self.last_activity = max(self.last_activity, now)
        self.acked_seen = acked

    def _flush_some(self, do_close: bool = True) -> bool:
        """waitress's flush (HTTPChannel._flush_some, 3.0), with a SendfileBuffer sent by
        sendfile(2) instead of read into Python piece by piece."""
        sent = 0
        while True:
            outbuf = self.outbufs[0]
            remaining = outbuf.__len__()
            blocked = False
            while remaining > 0:
                if isinstance(outbuf, SendfileBuffer):
                    num_sent = outbuf.send_to(self, do_close)
                else:
                    num_sent = self.send(outbuf.get(self.sendbuf_len), do_close=do_close)
                    if num_sent:
                        outbuf.skip(num_sent, True)
                if not num_sent:
                    blocked = True
                    break
                remaining -= num_sent
                sent += num_sent
                self.written += num_sent
                self.total_outbufs_len -= num_sent
            if blocked or len(self.outbufs) == 1:  # the last outbuf stays: it is writable
                break
            finished = self.outbufs.pop(0)
            try:
                finished.close()
            except Exception:
                self.logger.exception("Unexpected error when closing an outbuf")
        if sent:
            self.last_activity = time.time()
            return True
        return False


def idle_check(listener: BaseWSGIServer) -> Callable[[float], None]:
    """The listener's `maintenance` (waitress calls it every `cleanup_interval` from its
    loop): waitress's rule, a connection with no request in a worker and no activity for
    `channel_timeout` is closed, with two changes. A client that acknowledged bytes since the
    last look is active. And the connection is closed now: waitress only marks it, to be
    closed at its next write event, which a client that stopped reading never gives (its
    socket stays full), so such a client was held for good."""
    def check(now: float) -> None:
        cutoff = now - listener.adj.channel_timeout
        for channel in list(listener.active_channels.values()):
            if isinstance(channel, SendfileChannel):
                channel.note_client_progress(now)
            if channel.requests or channel.last_activity >= cutoff:
                continue
            if channel.total_outbufs_len:  # a response is cut, not an idle keep-alive
                log_event(log, "http-idle-closed", peer=str(channel.addr[0]) if channel.addr
                          else "", idle_s=round(now - channel.last_activity, 1),
                          written=getattr(channel, "written", 0),
                          not_sent=channel.total_outbufs_len)
            channel.will_close = True
            channel.handle_close()

    return check


def use_sendfile(listeners: dict[int, Any]) -> int:
    """Make every waitress listener in `listeners` (create_server's map) accept connections
    as SendfileChannel, with the idle check above; how many listeners were changed."""
    changed = 0
    for listener in listeners.values():
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = SendfileChannel
            listener.maintenance = idle_check(listener)
            changed += 1
    return changed
