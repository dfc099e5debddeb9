"""Real TFTP clients against the server: tftp-hpa (plain RFC 1350), curl (blksize), atftp
(blksize + windowsize, RFC 7440). Every download is compared by sha256."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import require_program
from tftp_helpers import running_server, sha256

from provisiond.tftp.options import window_cap


def tftp_hpa(port: int, remote: str, local: Path,
             mode: str = "binary") -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_program("tftp"), "127.0.0.1", str(port), "-m", mode, "-c", "get", remote,
         str(local)], capture_output=True, text=True, timeout=120,
    )


def curl(port: int, remote: str, local: Path, blksize: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_program("curl"), "-sS", "--tftp-blksize", str(blksize), "-o", str(local),
         f"tftp://127.0.0.1:{port}/{remote}"], capture_output=True, text=True, timeout=120,
    )


def atftp(port: int, remote: str, local: Path, blksize: int,
          windowsize: int | None) -> subprocess.Popen:
    options = ["--option", f"blksize {blksize}"]
    if windowsize:
        options += ["--option", f"windowsize {windowsize}"]
    return subprocess.Popen(
        [require_program("atftp"), *options, "-g", "-r", remote, "-l", str(local),
         "127.0.0.1", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (root / "images" / "initrd").write_bytes(os.urandom(3 * 2**20 + 123))
    (root / "exact").write_bytes(os.urandom(512 * 40))  # a multiple of the block size
    (root / "empty").write_bytes(b"")
    return root


@pytest.mark.parametrize("name", ["images/initrd", "exact", "empty"])
def test_tftp_hpa_plain_rfc1350(root: Path, tmp_path: Path, name: str, engine: str) -> None:
    out = tmp_path / "out"
    with running_server(root, engine=engine) as (server, recorder):
        result = tftp_hpa(server.port, name, out)
        assert result.returncode == 0, result.stdout + result.stderr
        (stats,) = recorder.wait(1)
    assert sha256(out) == sha256(root / name)
    assert stats.outcome == "ok" and stats.options == {}  # tftp-hpa negotiates nothing
    assert stats.bytes == (root / name).stat().st_size and stats.peer.startswith("127.0.0.1:")


@pytest.mark.parametrize("blksize", [8, 512, 1468, 8192, 65464])
def test_curl_blksize(root: Path, tmp_path: Path, blksize: int, engine: str) -> None:
    out = tmp_path / "out"
    name = "exact" if blksize < 512 else "images/initrd"  # 8-byte blocks: keep it small
    with running_server(root, engine=engine) as (server, recorder):
        result = curl(server.port, name, out, blksize)
        assert result.returncode == 0, result.stderr
        (stats,) = recorder.wait(1)
    assert sha256(out) == sha256(root / name)
    assert stats.options["blksize"] == blksize and stats.outcome == "ok"
    assert stats.options["tsize"] == (root / name).stat().st_size


@pytest.mark.parametrize(("blksize", "windowsize"), [(1468, 16), (512, 64), (65464, 16),
                                                     (1428, 1)])
def test_atftp_windowsize(root: Path, tmp_path: Path, blksize: int, windowsize: int, engine: str) -> None:
    out = tmp_path / "out"
    with running_server(root, engine=engine) as (server, recorder):
        proc = atftp(server.port, "images/initrd", out, blksize, windowsize)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output
        (stats,) = recorder.wait(1)
    assert sha256(out) == sha256(root / "images" / "initrd")
    assert stats.options["windowsize"] == min(windowsize, window_cap(blksize))
    assert stats.outcome == "ok"


def test_atftp_windowsize_without_gso(root: Path, tmp_path: Path, engine: str) -> None:
    """The one-datagram-per-send path (kernels or devices without UDP segmentation)."""
    out = tmp_path / "out"
    with running_server(root, gso=False, engine=engine) as (server, recorder):
        proc = atftp(server.port, "images/initrd", out, 1468, 32)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output
        (stats,) = recorder.wait(1)
    assert sha256(out) == sha256(root / "images" / "initrd")
    assert stats.options["windowsize"] == 32 and stats.outcome == "ok"


def test_netascii_mode(root: Path, tmp_path: Path, engine: str) -> None:
    text = b"DEFAULT install\nLABEL install\n  KERNEL linux\r\n" * 100
    (root / "pxelinux.txt").write_bytes(text)
    out = tmp_path / "out"
    with running_server(root, engine=engine) as (server, recorder):
        result = tftp_hpa(server.port, "pxelinux.txt", out, mode="ascii")
        assert result.returncode == 0, result.stdout + result.stderr
        (stats,) = recorder.wait(1)
    # tftp-hpa turns CR LF back into LF and CR NUL back into CR: the file comes back as it was.
    assert out.read_bytes() == text
    assert stats.bytes == len(text) + text.count(b"\n") + text.count(b"\r")


@pytest.mark.timeout(300)
def test_100_mib_at_512_byte_blocks_rolls_over(tmp_path: Path, engine: str) -> None:
    """204800 blocks: the 16-bit block number wraps three times."""
    root = tmp_path / "root"
    root.mkdir()
    big = root / "big"
    with open(big, "wb") as handle:
        for _ in range(100):
            handle.write(os.urandom(2**20))
    out = tmp_path / "out"
    with running_server(root, engine=engine) as (server, recorder):
        result = tftp_hpa(server.port, "big", out)
        assert result.returncode == 0, result.stdout + result.stderr
        (stats,) = recorder.wait(1)
    assert out.stat().st_size == 100 * 2**20
    assert sha256(out) == sha256(big)
    assert stats.outcome == "ok" and stats.bytes == 100 * 2**20


@pytest.mark.timeout(400)
def test_50_concurrent_clients_32_mib_each(tmp_path: Path, engine: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    big = root / "big"
    with open(big, "wb") as handle:
        for _ in range(32):
            handle.write(os.urandom(2**20))
    want = sha256(big)
    outs = [tmp_path / f"out{i}" for i in range(50)]
    # 50 clients on one address here (loopback); a real rack has one address per box.
    with running_server(root, engine=engine, max_per_client=64) as (server, recorder):
        # Half lock-step, half windowed; each client is a separate atftp process.
        procs = [atftp(server.port, "big", out, 1468, 16 if i % 2 else None)
                 for i, out in enumerate(outs)]
        for proc in procs:
            output, _ = proc.communicate(timeout=350)
            assert proc.returncode == 0, output
        stats = recorder.wait(50)
    assert [s.outcome for s in stats] == ["ok"] * 50
    assert all(sha256(out) == want for out in outs)
