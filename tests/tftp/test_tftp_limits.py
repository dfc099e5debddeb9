"""What one client can hold: transfers per address, how long a silent transfer lives whatever
timeout it asked for, and memory per netascii transfer (bounded, whatever the file)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tftp_helpers import RawClient, running_server, wait_until

from provisiond.tftp import packet
from provisiond.tftp.packet import ErrorCode
from provisiond.tftp.transfer import READ_CHUNK, NetasciiBlocks


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "file").write_bytes(os.urandom(512 * 20 + 100))
    (root / "big").write_bytes(os.urandom(2**20))
    return root


def download(port: int, name: str, source: str) -> bytes:
    """A lock-step download from `source`, packet by packet (bounded by the socket timeout)."""
    with RawClient(port, source=source) as client:
        client.rrq(name)
        data = b""
        while True:
            reply = client.recv()
            assert isinstance(reply, packet.Data), reply
            data += reply.payload
            client.ack(reply.block)
            if len(reply.payload) < 512:
                return data


@pytest.mark.timeout(120)
def test_stalled_requests_from_one_client_do_not_lock_others_out(root: Path, engine: str) -> None:
    """300 RRQs that ask for the longest timeout and never ACK, from one address."""
    with running_server(root, engine=engine) as (server, _):
        stalled = [RawClient(server.port, source="127.0.0.1") for _ in range(300)]
        try:
            for client in stalled:
                client.rrq("big", options={"timeout": "255"})
            refused = 0
            for client in stalled[8:12]:
                reply = client.recv()
                refused += isinstance(reply, packet.Error) and "already has 8 transfers" in reply.message
            assert refused == 4
            wait_until(lambda: server.active_transfers == 8, what="8 transfers from one address")
            assert download(server.port, "file", "127.0.0.2") == (root / "file").read_bytes()
        finally:
            for client in stalled:
                client.close()


@pytest.mark.timeout(120)
def test_a_silent_transfer_lives_at_most_max_silence(root: Path, engine: str) -> None:
    with running_server(root, engine=engine, max_silence=4) as (server, recorder), \
            RawClient(server.port) as greedy, RawClient(server.port) as modest:
        greedy.rrq("big", options={"timeout": "255", "blksize": "1024"})
        oack = greedy.recv()
        assert oack == packet.OAck({"blksize": "1024"})  # 255 s is not acknowledged
        modest.rrq("big", options={"timeout": "2"})
        assert modest.recv() == packet.OAck({"timeout": "2"})
        started = time.monotonic()
        stats = recorder.wait(2, timeout=60)
        assert {s.outcome for s in stats} == {"timeout"}
        # Bounded by max_silence plus scheduling, not by 6 x 255 s.
        assert time.monotonic() - started < 30


@pytest.mark.timeout(120)
def test_a_table_full_of_stalled_transfers_empties_within_max_silence(root: Path,
                                                                     engine: str) -> None:
    """Stalled transfers from many addresses fill the table; with no waiting line a new
    client is refused only until they expire (max_silence), then served."""
    with running_server(root, engine=engine, max_transfers=16, max_silence=3,
                        max_waiting=0) as (server, _):
        stalled = [RawClient(server.port, source=f"127.0.1.{n}") for n in range(1, 17)]
        try:
            for client in stalled:
                client.rrq("big", options={"timeout": "255"})
            wait_until(lambda: server.active_transfers == 16, what="a full table")
            with RawClient(server.port, source="127.0.0.3") as late:
                late.rrq("file")
                reply = late.recv()
                assert isinstance(reply, packet.Error) and "server busy" in reply.message
            wait_until(lambda: server.active_transfers == 0, timeout=30,
                       what="stalled transfers expired")
            assert download(server.port, "file", "127.0.0.3") == (root / "file").read_bytes()
        finally:
            for client in stalled:
                client.close()


def test_netascii_blocks_convert_chunk_by_chunk(tmp_path: Path) -> None:
    """Any block at any offset, forwards, repeated and backwards, equals the whole-file
    conversion; the view never holds much more than two chunks."""
    body = os.urandom(3 * READ_CHUNK + 1234).replace(b"\x00", b"\n")
    body += b"\r\n" * 1000 + b"\r" * 100 + b"\n" * 100
    path = tmp_path / "text"
    path.write_bytes(body)
    expected = packet.to_netascii(body)
    fd = os.open(path, os.O_RDONLY)
    try:
        blocks = NetasciiBlocks(fd, len(body))
        assert blocks.size == len(expected)
        block, want = 1468, 1468 * 16
        offsets = [*range(0, len(expected), block), 5 * block, 0, len(expected) - 10,
                   READ_CHUNK * 2 - 7]
        for offset in offsets:
            if not (blocks.start <= offset and (offset + block <= blocks.end
                                                or blocks.end == blocks.size)):
                blocks.fill(offset, want)
            start = offset - blocks.start
            assert bytes(blocks.view[start:start + block]) == expected[offset:offset + block]
            assert len(blocks.view) <= 2 * (2 * READ_CHUNK) + want
    finally:
        os.close(fd)


SERVER = """
import sys, time
from pathlib import Path
from provisiond.tftp import TftpServer
server = TftpServer(Path(sys.argv[1]), "127.0.0.1", 0, max_per_client=64)
server.start()
print(server.port, flush=True)
sys.stdin.read()
server.stop()
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(180)
def test_stalled_netascii_transfers_hold_little_memory(tmp_path: Path) -> None:
    """64 netascii transfers of an 8 MiB file of line feeds (16 MiB once converted), none
    acknowledged: the server's RSS grows by far less than one converted copy each."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "lines.txt").write_bytes(b"\n" * (8 * 2**20))
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    clients: list[RawClient] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        before = rss_kib(server.pid)
        clients = [RawClient(port, timeout=60) for _ in range(64)]
        for client in clients:
            client.rrq("lines.txt", mode="netascii", options={"timeout": "15"})
        for client in clients:  # every transfer is prepared and sending
            assert client.recv() == packet.OAck({"timeout": "15"})
        grown_mib = (rss_kib(server.pid) - before) / 1024
        assert grown_mib < 128, f"RSS grew by {grown_mib:.0f} MiB for 64 netascii transfers"
        # and the data is right: the first block of one of them
        clients[0].ack(0)
        first = clients[0].recv()
        assert isinstance(first, packet.Data) and first.payload == b"\r\n" * 256
    finally:
        for client in clients:
            client.sock.sendto(packet.build_error(ErrorCode.NOT_DEFINED, "done"),
                               client.tid or client.server)
            client.close()
        server.communicate("", timeout=30)
