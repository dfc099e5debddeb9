"""`provisiond lab` on the command line: bad options are refused before anything is built."""

from __future__ import annotations

import subprocess
import sys


def provisiond(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provisiond", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_help_says_what_the_lab_does() -> None:
    result = provisiond("lab", "--help")
    assert result.returncode == 0
    assert "no uplink" in result.stdout and "provision" in result.stdout


def test_bad_firmware_is_refused_and_nothing_is_built() -> None:
    result = provisiond("lab", "--firmware", "compute7=uefi", "--down-after")
    assert result.returncode == 1
    assert "no lab node 'compute7'" in result.stderr
    assert "lab network" not in result.stdout


def test_bad_compute_count_is_refused() -> None:
    result = provisiond("lab", "--computes", "-1", "--down-after")
    assert result.returncode == 1 and "--computes -1" in result.stderr


def test_lab_ssh_names_what_is_missing(tmp_path) -> None:
    result = provisiond("lab", "--workdir", str(tmp_path), "ssh", "compute1", "--", "findmnt", "-n")
    assert result.returncode == 1 and f"--workdir {tmp_path}: no lab runs there" in result.stderr
    result = provisiond("lab", "up", "compute1")
    assert result.returncode == 1 and "only `lab ssh HOST` takes more" in result.stderr
