"""Helpers for the lab tests: QEMU VMs behind virtual BMCs on a lab network, all removed after.

Every VM runs as a child of one BMC process (provisiond.lab.qemu_bmc), which the test stops by
PID; the lab network is a namespace named after the test process's PID.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import require_program, require_root

from provisiond.lab.network import LabNetwork
from provisiond.lab.ports import free_udp_ports
from provisiond.lab.qemu_bmc import BmcProcess

PASSWORD = "lab-bmc-pw"
USER = "admin"


def require_qemu() -> None:
    require_root()
    require_program("qemu-system-x86_64")
    require_program("qemu-img")
    if not Path("/usr/share/OVMF/OVMF_CODE_4M.fd").exists():
        import pytest
        pytest.skip("Debian's ovmf package is not installed (make test installs it)")


def qemu_pids(marker: str) -> list[int]:
    """PIDs of QEMU processes whose command line contains `marker`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmdline and marker in cmdline:
            pids.append(int(entry.name))
    return pids


def ipmitool(port: int, *args: str, password_file: Path) -> subprocess.CompletedProcess[str]:
    """Up to 3 tries of 5 s: power on starts QEMU before the BMC answers, which took over the
    1 s ipmitool waited by default on a loaded machine (load 15: "Unable to set Chassis Power")."""
    tool = require_program("ipmitool")
    return subprocess.run(
        [tool, "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", USER,
         "-f", str(password_file), "-R", "3", "-N", "5", *args],
        capture_output=True, text=True, timeout=60)


def wait_for_file_text(path: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text.encode() in path.read_bytes():
            return True
        time.sleep(0.5)
    return False


@contextmanager
def vms_behind_bmcs(tmp_path: Path, firmwares: list[str], tag: str = "t") -> Iterator[tuple[LabNetwork, BmcProcess, list[dict]]]:
    """A lab network and one QEMU machine per firmware, each behind a virtual BMC (powered off)."""
    require_qemu()
    password_file = tmp_path / "bmc.pass"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    base = free_udp_ports(len(firmwares))
    with LabNetwork(tag=tag) as network:
        machines = []
        for index, firmware in enumerate(firmwares):
            name = f"vm{index}-{os.getpid()}"
            machines.append({
                "name": name, "mac": f"52:54:00:13:{index // 256:02x}:{index % 256:02x}",
                "tap": network.add_tap(), "netns": network.name, "firmware": firmware,
                "memory_mib": 512 if firmware == "bios" else 1024, "cpus": 1, "disk_gib": 2,
                "port": base + index, "workdir": str(tmp_path / "machines" / name),
            })
        plan = {"address": "127.0.0.1", "username": USER, "password_file": str(password_file),
                "machines": machines}
        with BmcProcess(plan, tmp_path / "bmc-plan.json", tmp_path / "bmc.log") as bmcs:
            yield network, bmcs, machines
