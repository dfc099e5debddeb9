"""QEMU VMs behind virtual BMCs: ipmitool and provisiond's power driver switch real VMs on
and off, and a one-time PXE boot is used by the firmware once (the guest's next reset boots
from disk first)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from lab_helpers import PASSWORD, USER, ipmitool, qemu_pids, vms_behind_bmcs, wait_for_file_text

from provisiond.lab.machine import MachineSpec, QemuMachine
from provisiond.power.base import BmcTarget
from provisiond.power.ipmi import IpmiDriver

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.timeout(900)]


def test_ipmitool_and_the_driver_power_a_bios_vm_and_pxe_is_one_time(tmp_path: Path) -> None:
    with vms_behind_bmcs(tmp_path, ["bios"], tag="bmc") as (_, bmcs, machines):
        vm = machines[0]
        serial = Path(vm["workdir"]) / "serial.log"
        password_file = tmp_path / "bmc.pass"
        port = vm["port"]
        assert "Chassis Power is off" in ipmitool(port, "chassis", "power", "status",
                                                  password_file=password_file).stdout
        assert ipmitool(port, "chassis", "bootdev", "pxe", password_file=password_file).returncode == 0
        on = ipmitool(port, "chassis", "power", "on", password_file=password_file)
        assert on.returncode == 0, on.stderr
        assert len(qemu_pids(vm["workdir"])) == 1
        # QMP agrees: a handle on the VM's directory reaches the QEMU its BMC started.
        handle = QemuMachine(MachineSpec(vm["name"], vm["mac"], vm["tap"]), Path(vm["workdir"]))
        assert handle.status() == "running"
        driver = IpmiDriver(BmcTarget("vm", "127.0.0.1", port, USER, PASSWORD), timeout=10)
        try:
            assert driver.status() == "on"
            # SeaBIOS (mirrored to the serial port) runs the NIC's iPXE ROM first ...
            assert wait_for_file_text(serial, "Booting from Hard Disk", 300), serial.read_text(errors="replace")
            first = serial.read_text(errors="replace")
            assert first.index("iPXE") < first.index("Booting from Hard Disk")
            # ... once: after a reset the disk comes first again.
            size = serial.stat().st_size
            driver.reset()
            deadline = time.monotonic() + 300
            while "Booting from" not in serial.read_bytes()[size:].decode(errors="replace"):
                assert time.monotonic() < deadline, serial.read_text(errors="replace")[-2000:]
                time.sleep(0.5)
            after = serial.read_bytes()[size:].decode(errors="replace")
            assert after.index("Booting from") == after.find("Booting from Hard Disk")
            driver.off()
            assert driver.status() == "off"
            assert qemu_pids(vm["workdir"]) == []
        finally:
            driver.close()
        assert "boots from network (one-time, bios)" in bmcs.output()
        assert "power off" in bmcs.output()


def test_killing_the_bmc_process_takes_its_vms_with_it(tmp_path: Path) -> None:
    with vms_behind_bmcs(tmp_path, ["uefi"], tag="kill") as (_, bmcs, machines):
        vm = machines[0]
        password_file = tmp_path / "bmc.pass"
        assert ipmitool(vm["port"], "chassis", "power", "on", password_file=password_file).returncode == 0
        assert len(qemu_pids(vm["workdir"])) == 1
        assert Path(vm["workdir"], "OVMF_VARS.fd").stat().st_size > 0  # a private NVRAM copy
        os.kill(bmcs.pid, signal.SIGKILL)
        bmcs.process.wait(10)
        deadline = time.monotonic() + 20
        while qemu_pids(vm["workdir"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert qemu_pids(vm["workdir"]) == []
