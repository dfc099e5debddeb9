"""Stopping a running lab (Ctrl-C, `kill`, or `provisiond lab down` from elsewhere) leaves
nothing behind: no namespace, bridge, tap, QEMU process, BMC or serve process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lab_helpers import qemu_pids, require_qemu

from provisiond.lab.network import lab_namespaces
from provisiond.lab.orchestrator import REGISTRY

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.timeout(300)]


def wait_for(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert process.poll() is None, path.read_text(errors="replace")
        assert time.monotonic() < deadline, path.read_text(errors="replace")
        time.sleep(0.3)


def down_quietly(pid: int) -> None:
    subprocess.run([sys.executable, "-m", "provisiond", "lab", "down", "--pid", str(pid)],
                   capture_output=True, timeout=120, check=False)


def lab_record(pid: int) -> dict:
    return json.loads((REGISTRY / f"{pid}.json").read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "lab down"])
def test_stopping_a_running_lab_leaves_nothing(tmp_path: Path, how: str) -> None:
    require_qemu()
    workdir = tmp_path / "lab"
    log = tmp_path / "lab.out"
    with log.open("wb") as out:
        lab = subprocess.Popen(
            [sys.executable, "-m", "provisiond", "lab", "--computes", "1", "--install", "preseed",
             "--workdir", str(workdir)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(log, "compute1: powering-on", lab, 120)  # VMs on, serve up, BMCs serving
        record = lab_record(lab.pid)
        assert len(qemu_pids(str(workdir))) == 2
        taps = [line.split()[1].rstrip(":") for line in subprocess.run(
            ["ip", "-n", record["netns"], "-o", "link", "show", "type", "tun"],
            capture_output=True, text=True, check=True).stdout.splitlines()]
        assert len(taps) == 2
        if how == "lab down":
            # the lab of this workdir only: parallel test runs have labs of their own
            down = subprocess.run([sys.executable, "-m", "provisiond", "lab", "down", "--workdir",
                                   str(workdir)], capture_output=True, text=True, timeout=120,
                                  check=False)
            assert down.returncode == 0, down.stderr
            assert "1 lab(s) stopped" in down.stdout
        else:
            lab.send_signal(getattr(signal, how))
        assert lab.wait(90) in (130, 0)
    except BaseException:
        down_quietly(lab.pid)  # a failed test leaves no lab either
        raise
    finally:
        if lab.poll() is None:
            lab.kill()
            lab.wait(10)
    assert "provisiond lab: removed" in log.read_text()
    assert "lab report" in log.read_text()  # every stop after power-on: how far each node got
    assert record["netns"] not in [name for name, _ in lab_namespaces()]
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not any(tap in host_links for tap in taps)
    assert qemu_pids(str(workdir)) == []
    assert not alive(record["bmc_pid"]) and not alive(record["serve_pid"])
    assert not (REGISTRY / f"{lab.pid}.json").exists()


def test_a_killed_lab_takes_its_children_and_the_next_lab_down_sweeps_its_network(tmp_path: Path) -> None:
    require_qemu()
    workdir = tmp_path / "lab"
    log = tmp_path / "lab.out"
    with log.open("wb") as out:
        lab = subprocess.Popen(
            [sys.executable, "-m", "provisiond", "lab", "--computes", "0", "--install", "preseed",
             "--workdir", str(workdir)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(log, "controller: powering-on", lab, 120)
        record = lab_record(lab.pid)
    except BaseException:
        lab.kill()
        lab.wait(10)
        down_quietly(lab.pid)
        raise
    lab.kill()  # SIGKILL: no clean-up code runs
    lab.wait(10)
    deadline = time.monotonic() + 30
    while (qemu_pids(str(workdir)) or alive(record["bmc_pid"]) or alive(record["serve_pid"])) \
            and time.monotonic() < deadline:
        time.sleep(0.3)
    assert qemu_pids(str(workdir)) == []
    assert not alive(record["bmc_pid"]) and not alive(record["serve_pid"])
    down = subprocess.run([sys.executable, "-m", "provisiond", "lab", "down", "--pid", str(lab.pid)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 0, down.stderr
    assert record["netns"] not in [name for name, _ in lab_namespaces()]
