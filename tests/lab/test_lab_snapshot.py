"""Lab snapshots: a running VM's disk and provisiond's store are saved, and restore brings
both back (powering the VM off through QEMU, which its BMC then reports as off)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import require_program
from lab_helpers import ipmitool, vms_behind_bmcs

from provisiond.errors import UserError
from provisiond.lab.snapshot import disk_snapshots, restore_lab, snapshot_lab
from provisiond.store import Store

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.timeout(300)]


def qemu_io(disk: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_program("qemu-io"), "-f", "qcow2", "-c", command, str(disk)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_snapshot_of_a_running_lab_and_restore_bring_disk_nvram_and_store_back(tmp_path: Path) -> None:
    with vms_behind_bmcs(tmp_path, ["uefi"], tag="snap") as (_, bmcs, machines):
        vm = machines[0]
        host = vm["name"]
        machine_dir = Path(vm["workdir"])
        password_file = tmp_path / "bmc.pass"
        store = Store.in_state_dir(tmp_path / "state")
        store.sync_nodes({host: vm["mac"]})
        assert ipmitool(vm["port"], "chassis", "power", "on", password_file=password_file).returncode == 0

        assert snapshot_lab(tmp_path, [host], "installed") == {host: "live"}
        assert "installed" in disk_snapshots(machine_dir)
        assert (machine_dir / "OVMF_VARS.installed.fd").exists()

        # After the snapshot: the disk and the store change, and the VM is running again.
        assert ipmitool(vm["port"], "chassis", "power", "off", password_file=password_file).returncode == 0
        assert qemu_io(machine_dir / "disk.qcow2", "write -P 0xab 0 64k").returncode == 0
        store.sync_nodes({host: vm["mac"], "latecomer": "52:54:00:99:99:99"})
        store.close()
        assert ipmitool(vm["port"], "chassis", "power", "on", password_file=password_file).returncode == 0

        restore_lab(tmp_path, [host], "installed")
        assert "Chassis Power is off" in ipmitool(vm["port"], "chassis", "power", "status",
                                                  password_file=password_file).stdout
        check = qemu_io(machine_dir / "disk.qcow2", "read -P 0 0 64k")
        assert check.returncode == 0 and "Pattern verification failed" not in check.stdout, check.stdout
        assert [node.hostname for node in Store.in_state_dir(tmp_path / "state").nodes()] == [host]
        # The BMC powers the restored VM on again.
        assert ipmitool(vm["port"], "chassis", "power", "on", password_file=password_file).returncode == 0
        assert "Chassis Power is on" in ipmitool(vm["port"], "chassis", "power", "status",
                                                 password_file=password_file).stdout
        assert "power on" in bmcs.output()

        with pytest.raises(UserError, match=r"no snapshot 'nope' \(it has: installed\)"):
            restore_lab(tmp_path, [host], "nope")
        with pytest.raises(UserError, match="already has a snapshot 'installed'"):
            snapshot_lab(tmp_path, [host], "installed")
        with pytest.raises(UserError, match="snapshot name"):
            snapshot_lab(tmp_path, [host], "../etc")
