"""A full socket send buffer: the transfer waits for EPOLLOUT and resumes where it stopped.

Loopback UDP never fills a sender's buffer (the kernel hands the datagram over at once), so
the transfer runs over a real AF_UNIX datagram socket pair whose reader pauses; the code under
test is the same send path a congested NIC queue would exercise.
"""

from __future__ import annotations

import os
import select
import socket
from pathlib import Path

from provisiond.tftp import packet
from provisiond.tftp.options import negotiate
from provisiond.tftp.packet import Opcode
from provisiond.tftp.transfer import Blocks, Gso, Settings, Transfer


def test_full_send_buffer_waits_for_room_and_resumes(tmp_path: Path) -> None:
    content = os.urandom(512 * 200 + 7)
    settings = Settings(tmp_path, None, retries=5, max_blksize=65464, client_rcvbuf=1 << 20)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    epoll = select.epoll()
    try:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.setblocking(False)
        request = packet.Request(Opcode.RRQ, "f", "octet", {"windowsize": "100"})
        transfer = Transfer(settings, Gso(False), request, ("127.0.0.1", 9), "127.0.0.1")
        transfer.sock = ours
        transfer.blocks = Blocks(content, None, len(content))
        transfer.neg = negotiate(request.options, len(content))
        transfer.last = len(content) // 512 + 1
        epoll.register(ours, select.EPOLLIN)
        # What the driving loop gives a transfer: wait for room to send, or stop waiting.
        transfer.watch_write = lambda sock, waiting: epoll.modify(
            sock, select.EPOLLIN | (select.EPOLLOUT if waiting else 0))

        transfer._window(0.0, 0)  # 100 blocks into a 4 KiB buffer: it fills up
        assert transfer.want_write and 1 < transfer.next <= 100
        assert epoll.poll(0) == []  # not writable while nobody reads
        received = []
        theirs.setblocking(False)

        def drain() -> None:  # the reader makes room
            try:
                while True:
                    received.append(packet.parse(theirs.recv(600)))
            except BlockingIOError:
                pass

        for _ in range(1000):  # bounded: each round frees room for more blocks
            if transfer.next > transfer.end and not transfer.want_write:
                break
            drain()
            for _fd, mask in epoll.poll(5.0):
                if mask & select.EPOLLOUT:
                    transfer.send_pending()
        drain()
    finally:
        ours.close()
        theirs.close()
        epoll.close()
    assert [d.block for d in received] == list(range(1, 101))  # each block once, in order
    assert b"".join(d.payload for d in received) == content[:512 * 100]
    assert not transfer.want_write
