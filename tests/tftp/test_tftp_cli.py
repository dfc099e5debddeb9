"""`provisiond tftp`: the server on its own, as an operator starts it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from conftest import require_program


def test_tftp_command_serves_a_directory_until_sigterm(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_bytes(b"hello over tftp\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisiond", "tftp", "--root", str(tmp_path), "--address",
         "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"serving .* on 127\.0\.0\.1:(\d+)", line)
        assert match, line + (proc.stderr.read() if proc.poll() is not None else "")
        out = tmp_path / "got"
        result = subprocess.run([require_program("tftp"), "127.0.0.1", match.group(1), "-m",
                                 "binary", "-c", "get", "hello.txt", str(out)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert out.read_bytes() == b"hello over tftp\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tftp_command_bad_root_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "provisiond", "tftp", "--root", str(tmp_path / "missing"),
         "--address", "127.0.0.1", "--port", "0"], capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1
    assert "TFTP root" in result.stderr and "is not a directory" in result.stderr
    assert "Traceback" not in result.stderr
