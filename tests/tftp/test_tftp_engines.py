"""Transfers end cleanly however the client behaves, in both engines: the native sender
(sender.c, one thread per transfer) and the Python loop it falls back to."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from tftp_helpers import RawClient, running_server

from provisiond.tftp import packet
from provisiond.tftp.server import SHRANK


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "big").write_bytes(os.urandom(4 * 2**20))
    return root


@pytest.mark.parametrize("options", [{}, {"windowsize": "8"}], ids=["lock-step", "windowed"])
def test_native_sender_is_built_and_runs_each_transfer_in_a_thread(root: Path,
                                                                   options: dict[str, str]) -> None:
    with running_server(root) as (server, recorder), RawClient(server.port) as client:
        assert server.native
        client.rrq("big", options=options)
        if options:
            assert isinstance(client.recv(), packet.OAck)
            client.ack(0)
        assert client.recv().block == 1
        port = client.sock.getsockname()[1]
        assert f"tftp-127.0.0.1:{port}" in [thread.name for thread in threading.enumerate()]
        client.sock.sendto(packet.build_error(0, "done"), client.tid)
        (stats,) = recorder.wait(1)
    assert stats.outcome == "error: client aborted: done"


def test_client_error_mid_transfer(root: Path, engine: str) -> None:
    with running_server(root, engine=engine) as (server, recorder), RawClient(
            server.port) as client:
        client.rrq("big", options={"blksize": "1024"})
        assert isinstance(client.recv(), packet.OAck)
        client.ack(0)
        for block in (1, 2, 3):
            assert client.recv().block == block
            client.ack(block)
        assert client.recv().block == 4
        client.sock.sendto(packet.build_error(3, "disk full"), client.tid)
        (stats,) = recorder.wait(1)
        assert client.drain() == []
    assert stats.outcome == "error: client aborted: disk full"
    assert stats.bytes == 3 * 1024 and stats.retransmits == 0


def test_client_that_goes_away_ends_the_transfer(root: Path, engine: str) -> None:
    """The client closes its port: the next resend draws an ICMP port unreachable."""
    with running_server(root, engine=engine) as (server, recorder):
        client = RawClient(server.port)
        client.rrq("big", options={"timeout": "1"})
        assert isinstance(client.recv(), packet.OAck)
        client.ack(0)
        assert client.recv().block == 1
        client.close()
        (stats,) = recorder.wait(1, timeout=20)
    assert stats.outcome == "error: client went away (port unreachable)"
    assert server.active_transfers == 0


def test_junk_from_the_client_does_not_keep_a_transfer_alive(root: Path, engine: str) -> None:
    """Packets that do not move the transfer forward never postpone its timeout."""
    with running_server(root, engine=engine, retries=1) as (server, recorder), RawClient(
            server.port) as client:
        client.rrq("big", options={"timeout": "1"})
        assert isinstance(client.recv(), packet.OAck)
        client.ack(0)
        assert client.recv().block == 1
        done = threading.Event()

        def pester() -> None:
            while not done.wait(0.2):  # every 0.2 s until the transfer is reported
                client.sock.sendto(b"\x00\x04\x00\x00", client.tid)  # stale ACK 0
                client.sock.sendto(b"junk", client.tid)

        pesterer = threading.Thread(target=pester)
        pesterer.start()
        try:
            (stats,) = recorder.wait(1, timeout=15)
        finally:
            done.set()
            pesterer.join(5)
    assert stats.outcome == "timeout" and stats.retransmits == 1


def test_file_that_shrinks_during_the_transfer_is_an_error(root: Path, engine: str) -> None:
    with running_server(root, engine=engine) as (server, recorder), RawClient(
            server.port) as client:
        client.rrq("big", options={"blksize": "1024"})
        assert isinstance(client.recv(), packet.OAck)
        os.truncate(root / "big", 1000)  # the server opened it at 4 MiB; read-ahead not done
        client.ack(0)
        received = client.drain(quiet=1.5)
        (stats,) = recorder.wait(1, timeout=20)
    assert stats.outcome == f"error: {SHRANK}"
    assert received == []  # not one short block that a client would take for the end


def test_go_back_on_every_window_crosses_read_ahead_boundaries(root: Path, engine: str) -> None:
    """The client acknowledges only half of each window: every next window starts inside the
    last one, and windows straddle the sender's read-ahead buffers; the file still arrives
    whole and in order."""
    content = (root / "big").read_bytes()
    window, size = 16, 1468
    with running_server(root, engine=engine) as (server, recorder), RawClient(
            server.port) as client:
        client.rrq("big", options={"blksize": str(size), "windowsize": str(window)})
        assert isinstance(client.recv(), packet.OAck)
        client.ack(0)
        received = bytearray()
        expected = 1  # next block wanted, counted without wrap
        done = False
        while not done:
            # the whole window (the server sends it at once), or what is left of the file
            burst = [client.recv() for _ in range(min(window, len(content) // size + 2 - expected))]
            take = burst[: max(1, len(burst) // 2)]  # keep half, "lose" the rest
            for data in take:
                assert isinstance(data, packet.Data) and data.block == expected & 0xFFFF
                received += data.payload
                expected += 1
                done = len(data.payload) < size
            client.ack((expected - 1) & 0xFFFF)
        (stats,) = recorder.wait(1)
    assert bytes(received) == content
    assert stats.outcome == "ok" and stats.retransmits > 0
