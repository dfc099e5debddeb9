"""Snapshots of a whole lab: every node's disk and UEFI variables, and provisiond's store.

Taken after the install phase, a snapshot lets the agent phase run again without
reinstalling: `restore` powers the nodes off, puts their disks, NVRAM and provisiond's
records (states, tokens, agent credentials) back, and the operator powers them on over IPMI.

Disks are qcow2 internal snapshots: `blockdev-snapshot-internal-sync` over QMP while the VM
is paused (a crash-consistent image, as after a power cut), or `qemu-img snapshot -c` when it
is off; restore uses `qemu-img snapshot -a` on a stopped VM. The store is copied with SQLite's
online backup API, which is safe while `provisiond serve` uses it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

from provisiond.errors import UserError
from provisiond.lab.machine import MachineError, MachineSpec, QemuMachine

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")
STORE_FILE = "provisiond.sqlite3"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UserError(f"snapshot name {name!r}: use letters, digits, '.', '_' or '-' (up to 41)")
    return name


def _machine(machine_dir: Path) -> QemuMachine:
    """A handle on a VM by its directory (the BMC process owns the QEMU process; QMP reaches it)."""
    return QemuMachine(MachineSpec(name=machine_dir.name, mac="", tap=""), machine_dir)


def _qemu_img(*args: str) -> str:
    result = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=300,
                            check=False)
    if result.returncode != 0:
        raise UserError(f"qemu-img {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _qmp_alive(machine: QemuMachine) -> bool:
    if not machine.qmp_socket.exists():
        return False
    try:
        machine.qmp("query-status", timeout=3)
    except MachineError:
        return False
    return True


def disk_snapshots(machine_dir: Path) -> list[str]:
    """Names of the internal snapshots of a VM's disk."""
    out = _qemu_img("snapshot", "-l", "-U", str(machine_dir / "disk.qcow2"))
    names = []
    for line in out.splitlines()[2:]:
        fields = line.split()
        if len(fields) >= 2:
            names.append(fields[1])
    return names


def snapshot_machine(machine_dir: Path, name: str) -> str:
    """Snapshot one VM's disk (and UEFI variables); returns how ("live" or "off")."""
    machine = _machine(machine_dir)
    if name in disk_snapshots(machine_dir):
        raise UserError(f"{machine_dir.name} already has a snapshot {name!r}; restore it, or "
                        "pick another name")
    if machine.vars.exists():
        shutil.copyfile(machine.vars, machine_dir / f"OVMF_VARS.{name}.fd")
    if _qmp_alive(machine):
        machine.qmp("stop")
        try:
            machine.qmp("blockdev-snapshot-internal-sync", timeout=120, device="d0", name=name)
        finally:
            machine.qmp("cont")
        return "live"
    _qemu_img("snapshot", "-c", name, str(machine_dir / "disk.qcow2"))
    return "off"


def restore_machine(machine_dir: Path, name: str) -> None:
    """Power the VM off (QMP quit: its BMC then reports it off) and revert disk and NVRAM."""
    machine = _machine(machine_dir)
    if name not in disk_snapshots(machine_dir):
        raise UserError(f"{machine_dir.name} has no snapshot {name!r} "
                        f"(it has: {', '.join(disk_snapshots(machine_dir)) or 'none'})")
    if _qmp_alive(machine):
        with contextlib.suppress(MachineError):  # QEMU may close the connection first
            machine.qmp("quit")
        _wait_gone(machine)
    _qemu_img("snapshot", "-a", name, str(machine_dir / "disk.qcow2"))
    saved = machine_dir / f"OVMF_VARS.{name}.fd"
    if saved.exists():
        shutil.copyfile(saved, machine.vars)


def _wait_gone(machine: QemuMachine, timeout: float = 30.0) -> None:
    """Wait until QEMU released the disk (its lock), bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(["qemu-img", "info", str(machine.disk)], capture_output=True,
                                text=True, timeout=30, check=False)
        if result.returncode == 0:
            return
        time.sleep(0.3)
    raise UserError(f"{machine.spec.name}: QEMU still holds {machine.disk} after {timeout:.0f} s")


def _backup(source: Path, target: Path) -> None:
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target, timeout=30)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def snapshot_lab(workdir: Path, hostnames: list[str], name: str) -> dict[str, str]:
    """Snapshot every node of a lab and its store; {hostname: how}."""
    check_name(name)
    target = workdir / "snapshots" / name
    if target.exists():
        raise UserError(f"the lab already has a snapshot {name!r} ({target}); pick another name")
    done = {host: snapshot_machine(workdir / "machines" / host, name) for host in hostnames}
    target.mkdir(parents=True)
    _backup(workdir / "state" / STORE_FILE, target / STORE_FILE)
    return done


def restore_lab(workdir: Path, hostnames: list[str], name: str) -> None:
    """Put every node's disk and NVRAM and the store back as they were at the snapshot; the
    nodes are left powered off."""
    check_name(name)
    saved = workdir / "snapshots" / name / STORE_FILE
    if not saved.exists():
        have = sorted(p.name for p in (workdir / "snapshots").glob("*")) if (workdir / "snapshots").exists() else []
        raise UserError(f"the lab has no snapshot {name!r} (it has: {', '.join(have) or 'none'}); "
                        "take one with `provisiond lab snapshot`")
    for host in hostnames:
        restore_machine(workdir / "machines" / host, name)
    _backup(saved, workdir / "state" / STORE_FILE)
