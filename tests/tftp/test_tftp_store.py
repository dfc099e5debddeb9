"""Transfer statistics reach the store the way `provisiond serve` wires them."""

from __future__ import annotations

from pathlib import Path

from tftp_helpers import RawClient, wait_until

from provisiond.store import Store
from provisiond.tftp import TftpServer, TransferStats, packet


def test_on_transfer_records_into_the_store(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "undionly.kpxe").write_bytes(b"k" * 1000)
    store = Store.in_state_dir(tmp_path / "state")

    recorded: list[str] = []

    def record(stats: TransferStats) -> None:
        recorded.append(stats.filename)
        store.record_transfer(stats.peer, stats.filename, stats.bytes, stats.duration,
                              stats.retransmits, stats.options, stats.outcome)

    server = TftpServer(root, "127.0.0.1", 0, on_transfer=record)
    server.start()
    try:
        with RawClient(server.port) as client:
            client.rrq("undionly.kpxe", options={"blksize": "1468", "tsize": "0"})
            assert client.recv() == packet.OAck({"blksize": "1468", "tsize": "1000"})
            client.ack(0)
            assert client.recv() == packet.Data(1, b"k" * 1000)
            client.ack(1)
            client.rrq("../etc/shadow")
            assert client.recv().code == packet.ErrorCode.ACCESS_VIOLATION
        wait_until(lambda: len(recorded) == 2, what="both transfers recorded")
    finally:
        server.stop()
    rows = {row["filename"]: row for row in store.transfers()}
    assert rows["undionly.kpxe"]["outcome"] == "ok" and rows["undionly.kpxe"]["bytes"] == 1000
    assert rows["undionly.kpxe"]["options"] == {"blksize": 1468, "tsize": 1000}
    assert rows["undionly.kpxe"]["peer"].startswith("127.0.0.1:")
    assert rows["../etc/shadow"]["bytes"] == 0
    assert rows["../etc/shadow"]["outcome"] == "error: access violation: '..' in filename"
