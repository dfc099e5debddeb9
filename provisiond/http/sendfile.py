"""Boot assets leave through sendfile(2) from waitress's I/O loop.

Why: waitress sends a `wsgi.file_wrapper` from its non-blocking loop (so a slow reader holds
an open file and an offset, never a worker thread), but it copies the file through Python in
socket-buffer-sized pieces, reading each piece twice; kernels, initrds and images came out at
0.3x nginx. Here the same loop hands the file to the kernel with sendfile(2) whenever the
socket is writable: the slow-client protection stays, the copies go. Everything that is not
a boot asset (scripts, answer files, the API) keeps waitress's own buffers.

Also here: waitress 3.0.2 logs an AttributeError traceback when a client disconnects while
its malformed request is being refused (it names `request.path`, which a request whose first
line never parsed lacks); the parser below has an empty path from the start.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any

from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer
from waitress.task import WSGITask

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


def use_sendfile(listeners: dict[int, Any]) -> int:
    """Make every waitress listener in `listeners` (create_server's map) accept connections
    as SendfileChannel; how many listeners were changed."""
    changed = 0
    for listener in listeners.values():
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = SendfileChannel
            changed += 1
    return changed
