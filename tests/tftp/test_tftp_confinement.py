"""Nothing outside the TFTP root is ever sent, and generated files come from the responder.

Each escape attempt is made on the wire; the test keeps every datagram the server sends and
shows that none carries a byte of the secret file next to the root (no DATA at all: the
transfer never starts), that the refusal is an access violation, and that it is logged.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest
from conftest import require_program
from tftp_helpers import RawClient, running_server

from provisiond.tftp import packet
from provisiond.tftp.packet import ErrorCode

SECRET_MARK = b"TOP-SECRET-OUTSIDE-THE-ROOT"


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes((SECRET_MARK + os.urandom(64)) * 40)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "inside").write_bytes(b"inside the root\n")
    (root / "out-link").symlink_to(secret)
    (root / "out-dir").symlink_to(outside)
    (root / "dev-zero").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo")
    return root, secret


ESCAPES = [
    "../outside/secret",
    "sub/../../outside/secret",
    "..\\outside\\secret",
    "/../outside/secret",
    "/etc/passwd",
    "out-link",
    "out-dir/secret",
    "dev-zero",
    "fifo",
    "sub",
    "a" * 300,
    "x/" * 600,
    "ctl\x01name",
]


@pytest.mark.parametrize("name", ESCAPES)
def test_escape_is_refused_and_nothing_is_sent(tree: tuple[Path, Path], name: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    root, _ = tree
    calls: list[str] = []

    def responder(path: str, peer: tuple[str, int]) -> bytes | None:
        calls.append(path)
        return None

    caplog.set_level(logging.WARNING, logger="provisiond.tftp")
    with running_server(root, responder=responder) as (server, recorder), RawClient(
            server.port) as client:
        client.rrq(name)
        reply = client.recv()
        assert isinstance(reply, packet.Error), reply
        assert reply.code == ErrorCode.ACCESS_VIOLATION and "access violation" in reply.message
        client.drain()
        (stats,) = recorder.wait(1)
    assert stats.bytes == 0 and stats.outcome.startswith("error: access violation")
    assert not any(p[:2] == b"\x00\x03" for p in client.received)  # no DATA ever
    assert not any(SECRET_MARK in p for p in client.received)
    assert "access violation" in caplog.text
    assert all(".." not in path.split("/") for path in calls)


def test_absolute_path_to_the_secret_itself(tree: tuple[Path, Path]) -> None:
    root, secret = tree
    with running_server(root) as (server, _), RawClient(server.port) as client:
        client.rrq(str(secret))
        reply = client.recv()
        assert reply.code == ErrorCode.ACCESS_VIOLATION
        client.drain()
    assert not any(SECRET_MARK in p for p in client.received)


def test_nul_injection_on_the_wire(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with running_server(root) as (server, _), RawClient(server.port) as client:
        client.send_raw(b"\x00\x01out-link\x00.cfg\x00octet\x00")
        reply = client.recv()
        assert isinstance(reply, packet.Error) and reply.code == ErrorCode.ILLEGAL_OPERATION
        client.drain()
    assert not any(p[:2] == b"\x00\x03" for p in client.received)


def test_tftp_hpa_cannot_escape(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = tree
    out = tmp_path / "got"
    with running_server(root) as (server, _):
        result = subprocess.run([require_program("tftp"), "127.0.0.1", str(server.port), "-m",
                                 "binary", "-c", "get", "../outside/secret", str(out)],
                                capture_output=True, text=True, timeout=30)
    assert "access violation" in (result.stdout + result.stderr).lower()
    assert not out.exists() or SECRET_MARK not in out.read_bytes()


def test_leading_slash_inside_the_root_is_served(tree: tuple[Path, Path]) -> None:
    """GRUB asks for "/grub/..." paths: a leading slash means the root, not the disk."""
    root, _ = tree
    with running_server(root) as (server, _), RawClient(server.port) as client:
        client.rrq("/sub//inside")
        assert client.recv() == packet.Data(1, b"inside the root\n")
        client.ack(1)


MAC_CFG = "pxelinux.cfg/01-52-54-00-12-34-56"


def test_generated_files_are_rendered_per_request_and_never_written(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "pxelinux.0").write_bytes(b"loader")
    state = {"netboot": True}
    calls: list[tuple[str, tuple[str, int]]] = []

    def responder(path: str, peer: tuple[str, int]) -> bytes | None:
        calls.append((path, peer))
        if path != MAC_CFG:
            return None
        return b"DEFAULT install\n" if state["netboot"] else b"DEFAULT local\n"

    def fetch(port: int, name: str) -> bytes:
        with RawClient(port) as client:
            client.rrq(name)
            data = client.recv()
            assert isinstance(data, packet.Data), data
            client.ack(data.block)
            return data.payload

    with running_server(root, responder=responder) as (server, recorder):
        assert fetch(server.port, "\\pxelinux.cfg\\01-52-54-00-12-34-56") == b"DEFAULT install\n"
        state["netboot"] = False  # the store changed: the next request sees it at once
        assert fetch(server.port, "/pxelinux.cfg//01-52-54-00-12-34-56") == b"DEFAULT local\n"
        assert fetch(server.port, "pxelinux.0") == b"loader"  # falls through to the root
        stats = recorder.wait(3)
    assert [path for path, _ in calls] == [MAC_CFG, MAC_CFG, "pxelinux.0"]
    assert all(peer[0] == "127.0.0.1" and peer[1] > 0 for _, peer in calls)
    assert sorted(p.name for p in root.rglob("*")) == ["pxelinux.0"]  # nothing written
    assert [s.outcome for s in stats] == ["ok"] * 3


def test_failing_responder_gives_an_error_and_serving_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok").write_bytes(b"fine")

    def responder(path: str, peer: tuple[str, int]) -> bytes | None:
        if path == "boom":
            raise RuntimeError("template error")
        return None

    with running_server(root, responder=responder) as (server, _), RawClient(
            server.port) as client:
        client.rrq("boom")
        reply = client.recv()
        assert reply == packet.Error(ErrorCode.NOT_DEFINED,
                                     "could not generate boom: see the server log")
        client.rrq("ok")
        assert client.recv() == packet.Data(1, b"fine")
        client.ack(1)


def test_responder_can_name_a_file_outside_the_root(tmp_path: Path, engine: str) -> None:
    """A packaged boot loader (/usr/lib/ipxe/ipxe.efi, say) is served from where it lies,
    streamed like any file; a named file that is missing is an error, and serving goes on."""
    root, elsewhere = tmp_path / "root", tmp_path / "usr-lib-ipxe"
    root.mkdir()
    elsewhere.mkdir()
    loader = elsewhere / "ipxe.efi"
    loader.write_bytes(os.urandom(3 * 2**20 + 7))
    names = {"ipxe.efi": loader, "gone.efi": elsewhere / "gone.efi", "dir.efi": elsewhere}

    def responder(path: str, peer: tuple[str, int]) -> Path | None:
        return names.get(path)

    out = tmp_path / "out"
    with running_server(root, responder=responder, engine=engine) as (server, recorder):
        result = subprocess.run([require_program("curl"), "-sS", "--tftp-blksize", "1468", "-o", str(out),
                                 f"tftp://127.0.0.1:{server.port}/ipxe.efi"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == loader.read_bytes()
        for name in ("gone.efi", "dir.efi"):
            with RawClient(server.port) as client:
                client.rrq(name)
                assert client.recv() == packet.Error(ErrorCode.FILE_NOT_FOUND,
                                                     f"{name} is not available: see the server log")
        stats = recorder.wait(3)
    assert sorted(s.outcome.split(":")[0] for s in stats) == ["error", "error", "ok"]
