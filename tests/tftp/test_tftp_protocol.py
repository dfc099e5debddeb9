"""Protocol behaviour a well-behaved client never shows: lost and duplicated ACKs, partial
windows, stalled and vanished clients, junk, write requests, a full server, stop()."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import require_program
from tftp_helpers import RawClient, running_server, sha256, wait_until

from provisiond.errors import UserError
from provisiond.tftp import TftpServer, packet
from provisiond.tftp import server as tftp_server
from provisiond.tftp.packet import ErrorCode


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "file").write_bytes(os.urandom(512 * 20 + 100))  # 21 blocks at 512
    (root / "big").write_bytes(os.urandom(4 * 2**20))
    return root


def test_oack_lists_only_understood_options(root: Path, engine: str) -> None:
    with running_server(root, engine=engine) as (server, _), RawClient(server.port) as client:
        client.rrq("file", options={"blksize": "1024", "tsize": "0", "timeout": "2",
                                    "windowsize": "8", "multicast": "", "foo": "bar"})
        assert client.recv() == packet.OAck({"blksize": "1024", "timeout": "2",
                                             "tsize": str(512 * 20 + 100), "windowsize": "8"})
        client.sock.sendto(packet.build_error(ErrorCode.OPTION_REFUSED, "no thanks"), client.tid)


def test_duplicate_acks_never_double_the_traffic(root: Path, engine: str) -> None:
    """Sorcerer's apprentice: every ACK sent twice, yet every block arrives exactly once."""
    content = (root / "file").read_bytes()
    with running_server(root, engine=engine) as (server, recorder), RawClient(server.port) as client:
        client.rrq("file")
        received = b""
        while True:
            data = client.recv()
            assert isinstance(data, packet.Data)
            received += data.payload
            client.ack(data.block)
            client.ack(data.block)
            if len(data.payload) < 512:
                break
        extra = client.drain()
        (stats,) = recorder.wait(1)
    assert received == content
    assert extra == []
    assert len(client.received) == 21
    assert stats.retransmits == 0 and stats.outcome == "ok"


def test_lost_ack_is_repaired_by_retransmission(root: Path, engine: str) -> None:
    content = (root / "file").read_bytes()
    with running_server(root, engine=engine) as (server, recorder), RawClient(server.port) as client:
        client.rrq("file", options={"timeout": "1"})
        assert isinstance(client.recv(), packet.OAck)
        client.ack(0)
        received: dict[int, bytes] = {}
        dropped = False
        while True:
            data = client.recv()
            assert isinstance(data, packet.Data)
            received[data.block] = data.payload
            if data.block == 3 and not dropped:
                dropped = True  # "lose" this ACK: the server must send block 3 again
                continue
            client.ack(data.block)
            if len(data.payload) < 512:
                break
        (stats,) = recorder.wait(1)
    assert b"".join(received[n] for n in sorted(received)) == content
    assert [packet.parse(p).block for p in client.received[1:]].count(3) == 2
    assert stats.retransmits == 1 and stats.outcome == "ok"


def test_partial_window_ack_goes_back(root: Path, engine: str) -> None:
    """RFC 7440: an ACK inside the window means the rest was lost; resend from there."""
    with running_server(root, engine=engine) as (server, recorder), RawClient(server.port) as client:
        client.rrq("file", options={"windowsize": "4"})
        assert client.recv() == packet.OAck({"windowsize": "4"})
        client.ack(0)
        assert [client.recv().block for _ in range(4)] == [1, 2, 3, 4]
        client.ack(2)  # blocks 3 and 4 "lost"
        assert [client.recv().block for _ in range(4)] == [3, 4, 5, 6]
        client.sock.sendto(packet.build_error(0, "enough"), client.tid)
        (stats,) = recorder.wait(1)
    assert stats.retransmits == 2
    assert stats.outcome == "error: client aborted: enough"


def test_block_numbers_wrap_in_windowed_mode(tmp_path: Path, engine: str) -> None:
    """65536+ blocks at blksize 8 with a window: the 16-bit counter wraps to 0 and goes on."""
    root = tmp_path / "root"
    root.mkdir()
    content = os.urandom(8 * 70000)
    (root / "f").write_bytes(content)
    with running_server(root, engine=engine) as (server, recorder), RawClient(server.port) as client:
        client.rrq("f", options={"blksize": "8", "windowsize": "100"})
        assert isinstance(client.recv(), packet.OAck)
        client.ack(0)
        chunks = []
        expected = 1
        while True:
            data = client.recv()
            assert data.block == expected & 0xFFFF
            chunks.append(data.payload)
            if len(data.payload) < 8 or expected % 100 == 0:
                client.ack(data.block)
            if len(data.payload) < 8:
                break
            expected += 1
        (stats,) = recorder.wait(1)
    assert b"".join(chunks) == content and stats.outcome == "ok"


def test_abandoned_transfer_is_cleaned_up(root: Path, engine: str) -> None:
    with running_server(root, retries=1, engine=engine) as (server, recorder), RawClient(server.port) as client:
        fds_before = len(os.listdir("/proc/self/fd"))
        client.rrq("big", options={"timeout": "1"})
        assert isinstance(client.recv(), packet.OAck)
        client.ack(0)
        assert client.recv().block == 1
        # ... and the client says nothing more.
        (stats,) = recorder.wait(1, timeout=20)
        assert stats.outcome == "timeout" and stats.retransmits == 1
        assert server.active_transfers == 0
        # the transfer's socket and the file are closed
        assert len(os.listdir("/proc/self/fd")) <= fds_before


def test_slow_client_does_not_hold_others_back(root: Path, tmp_path: Path, engine: str) -> None:
    with running_server(root, engine=engine) as (server, recorder), RawClient(server.port) as stalled:
        stalled.rrq("big", options={"timeout": "15"})
        assert isinstance(stalled.recv(), packet.OAck)
        stalled.ack(0)
        assert stalled.recv().block == 1  # and never acknowledged
        out = tmp_path / "out"
        result = subprocess.run([require_program("tftp"), "127.0.0.1", str(server.port), "-m",
                                 "binary", "-c", "get", "big", str(out)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        (done,) = recorder.wait(1)
        assert done.outcome == "ok" and sha256(out) == sha256(root / "big")
        assert server.active_transfers == 1  # the stalled one is still waiting


def test_junk_gets_an_error_and_the_server_keeps_serving(root: Path) -> None:
    junk = [b"", b"\x00", b"\x00\x09hello", b"\x00\x01file", b"\x00\x01\xff\x00octet\x00",
            b"\x00\x01" + b"x" * 5000, b"\x00\x03\x00\x01data", b"\x00\x04\x00\x01"]
    with running_server(root) as (server, recorder), RawClient(server.port) as client:
        for raw in junk:
            client.send_raw(raw)
            reply = client.recv()
            assert isinstance(reply, packet.Error) and reply.code in (
                ErrorCode.ILLEGAL_OPERATION, ErrorCode.UNKNOWN_TID), (raw, reply)
        client.send_raw(packet.build_error(0, "an error is never answered"))
        client.rrq("file", mode="mail")
        reply = client.recv()
        assert reply.code == ErrorCode.ILLEGAL_OPERATION and "use octet" in reply.message
        assert client.drain() == []
        client.rrq("file")
        assert client.recv() == packet.Data(1, (root / "file").read_bytes()[:512])
        client.sock.sendto(packet.build_error(0, "done"), client.tid)
        recorder.wait(2)


def test_write_requests_are_refused(root: Path, tmp_path: Path) -> None:
    local = tmp_path / "upload"
    local.write_bytes(b"payload")
    with running_server(root) as (server, recorder):
        result = subprocess.run([require_program("tftp"), "127.0.0.1", str(server.port), "-m",
                                 "binary", "-c", "put", str(local), "upload"],
                                capture_output=True, text=True, timeout=30)
        assert "write requests are refused" in result.stdout + result.stderr
        (stats,) = recorder.wait(1)
    assert stats.outcome == "error: write request refused"
    assert not (root / "upload").exists()


def test_missing_file(root: Path) -> None:
    with running_server(root) as (server, recorder), RawClient(server.port) as client:
        client.rrq("nope/pxelinux.0")
        assert client.recv() == packet.Error(ErrorCode.FILE_NOT_FOUND,
                                             "file not found: nope/pxelinux.0")
        assert recorder.wait(1)[0].outcome == "error: file not found: nope/pxelinux.0"


def test_busy_server_with_a_full_line_says_so(root: Path, engine: str) -> None:
    with running_server(root, max_transfers=1, max_waiting=0, engine=engine) as (server, _), RawClient(
            server.port) as first, RawClient(server.port) as second:
        first.rrq("big")
        assert first.recv().block == 1
        second.rrq("file")
        reply = second.recv()
        assert isinstance(reply, packet.Error) and "server busy" in reply.message
        first.sock.sendto(packet.build_error(0, "done"), first.tid)


def test_requests_beyond_the_table_wait_in_line_then_are_served(root: Path,
                                                                engine: str) -> None:
    """A boot storm: past max_transfers a request gets no ERROR (firmware would give up its
    boot) but waits, and its client's repeated RRQs keep it in line; it starts when a slot
    frees, first come first served."""
    with running_server(root, max_transfers=1, engine=engine) as (server, recorder), RawClient(
            server.port) as first, RawClient(server.port) as second, RawClient(
            server.port) as third:
        first.rrq("big")
        assert first.recv().block == 1
        second.rrq("file")
        wait_until(lambda: server.waiting_requests == 1, what="the second request waiting")
        third.rrq("file")
        second.rrq("file")  # the firmware repeats its unanswered RRQ: still one in line
        wait_until(lambda: server.waiting_requests == 2, what="the third request waiting")
        assert second.drain() == [] and third.drain() == []
        first.sock.sendto(packet.build_error(0, "done"), first.tid)
        data = second.recv()
        assert isinstance(data, packet.Data) and data.block == 1
        assert third.drain() == []  # still waiting: one transfer at a time
        assert server.active_transfers == 1 and server.waiting_requests == 1
        second.sock.sendto(packet.build_error(0, "done"), second.tid)
        data = third.recv()
        assert isinstance(data, packet.Data) and data.block == 1
        third.sock.sendto(packet.build_error(0, "done"), third.tid)
        outcomes = [s.outcome for s in recorder.wait(3)]
        assert all(o.startswith("error: client aborted") for o in outcomes), outcomes


def test_a_waiting_request_whose_client_stopped_asking_is_dropped(
        root: Path, engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tftp_server, "WAIT_FRESH", 0.2)
    with running_server(root, max_transfers=1, engine=engine) as (server, _), RawClient(
            server.port) as first, RawClient(server.port) as gone:
        first.rrq("big")
        assert first.recv().block == 1
        gone.rrq("file")
        wait_until(lambda: server.waiting_requests == 1, what="the request waiting")
        time.sleep(0.5)  # longer than WAIT_FRESH without a repeated RRQ: its client gave up
        first.sock.sendto(packet.build_error(0, "done"), first.tid)
        wait_until(lambda: server.waiting_requests == 0 and server.active_transfers == 0,
                   what="the stale request dropped, nothing started")
        assert gone.drain() == []


def test_repeated_rrq_starts_one_transfer(root: Path, engine: str) -> None:
    with running_server(root, engine=engine) as (server, recorder), RawClient(server.port) as client:
        client.rrq("file")
        client.rrq("file")
        assert client.recv().block == 1
        assert client.drain() == []  # no second DATA 1 from a second transfer
        assert server.active_transfers == 1
        client.sock.sendto(packet.build_error(0, "done"), client.tid)
        assert len(recorder.wait(1)) == 1


def test_stop_ends_running_transfers(root: Path, engine: str) -> None:
    recorded = []
    server = TftpServer(root, "127.0.0.1", 0, on_transfer=recorded.append,
                        native_sender=engine == "native")
    server.start()
    clients = [RawClient(server.port) for _ in range(3)]
    try:
        for client in clients:
            client.rrq("big", options={"timeout": "15"})
            assert isinstance(client.recv(), packet.OAck)
        wait_until(lambda: server.active_transfers == 3, what="3 transfers")
        server.stop()
    finally:
        for client in clients:
            client.close()
    assert server.active_transfers == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("tftp-")]
    assert sorted(s.outcome for s in recorded) == ["error: server stopped"] * 3


def test_port_in_use_is_a_clear_error(root: Path) -> None:
    with running_server(root) as (server, _):
        other = TftpServer(root, "127.0.0.1", server.port)
        with pytest.raises(UserError, match=r"cannot listen for TFTP on 127\.0\.0\.1:\d+: "
                                            r"Address already in use; stop the other"):
            other.start()


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a directory"):
        TftpServer(tmp_path / "nope", "127.0.0.1", 0).start()


def test_large_window_for_clients_with_large_buffers(root: Path, engine: str) -> None:
    """`client_rcvbuf` raises the window cap: 300 blocks of 8 KiB (2.4 MiB) per window, sent
    in GSO batches of 7 blocks, arrive complete and in order."""
    content = (root / "big").read_bytes()
    with running_server(root, client_rcvbuf=8 * 2**20, engine=engine) as (server, recorder), RawClient(
            server.port) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        client.rrq("big", options={"blksize": "8192", "windowsize": "300"})
        assert client.recv() == packet.OAck({"blksize": "8192", "windowsize": "300"})
        client.ack(0)
        chunks: dict[int, bytes] = {}
        expected = 1
        while True:
            data = client.recv()
            assert isinstance(data, packet.Data)
            if data.block != expected & 0xFFFF:
                continue  # a resent block we already have
            chunks[expected] = data.payload
            final = len(data.payload) < 8192
            if final or expected % 300 == 0:
                client.ack(data.block)
            if final:
                break
            expected += 1
        (stats,) = recorder.wait(1)
    assert b"".join(chunks[n] for n in sorted(chunks)) == content
    assert stats.outcome == "ok"
