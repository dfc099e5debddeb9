"""Virtual BMCs whose machines are QEMU VMs: IPMI power on starts the VM, off stops it, a
one-time PXE boot makes the next start boot from the network.

`QemuBackend` is the MachineBackend of provisiond.lab.vbmc for a QemuMachine. `python -m
provisiond.lab.qemu_bmc PLAN.json` runs one BMC per machine of a plan in one process and prints
every power change and boot; the VMs are its children and die with it (even by SIGKILL), so
stopping that one process by PID removes every VM and BMC of a lab. `BmcProcess` starts and
stops such a process (the lab and tests use it).

Plan (JSON):
    {"address": "127.0.0.1", "username": "admin", "password_file": "/path/bmc.pass",
     "machines": [{"port": 16230, "workdir": "/var/tmp/lab/node1", "name": "node1",
                   "mac": "52:54:00:..", "tap": "pt123n0", "netns": "plab-123",
                   "firmware": "bios", "memory_mib": 1024, "cpus": 1, "disk_gib": 20}]}
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from provisiond.errors import UserError
from provisiond.lab.ipmi_proto import BootDevice
from provisiond.lab.machine import (
    MachineError,
    MachineSpec,
    QemuMachine,
    accelerator,
    die_with_parent,
)
from provisiond.lab.vbmc import MachineBusy, PowerAction, VirtualBmc, read_password, serve

READY = "qemu-bmc: serving"


class QemuBackend:
    """MachineBackend for a QemuMachine. A boot override set over IPMI is used at the next
    power on (or reset, which then restarts QEMU so the firmware sees the new order)."""

    def __init__(self, machine: QemuMachine, on_change: Callable[[str], None] | None = None) -> None:
        self.machine = machine
        self.boot = BootDevice()
        self._lock = threading.Lock()
        self._on_change = on_change

    def _notify(self, message: str) -> None:
        if self._on_change is not None:
            self._on_change(f"{self.machine.spec.name} {message}")

    def _power_on(self) -> None:
        used = self.boot
        network = used.device == "network"
        if not used.persistent:
            self.boot = BootDevice()
        try:
            self.machine.start(network_boot=network, persistent=used.persistent)
        except MachineError as exc:
            self._notify(f"cannot start: {exc}")
            raise MachineBusy(str(exc)) from exc
        self._notify(f"boots from {used.describe() if used.device != 'default' else 'disk (no override)'}")

    def get_power(self) -> bool:
        return self.machine.running()

    def set_power(self, action: PowerAction) -> None:
        with self._lock:
            running = self.machine.running()
            if action == "on" and not running:
                self._notify("power on")
                self._power_on()
            elif action == "off" and running:
                self._notify("power off")
                self.machine.stop()
            elif action == "soft" and running:
                self._notify("power off (ACPI shutdown)")
                self.machine.powerdown()
            elif action == "reset" and running:
                self._notify("reset")
                if self.boot.device != "default":
                    self.machine.stop()
                    self._power_on()
                else:
                    self.machine.reset()

    def get_boot_device(self) -> BootDevice:
        with self._lock:
            return self.boot

    def set_boot_device(self, boot: BootDevice) -> None:
        with self._lock:
            self.boot = boot
            self._notify(f"boot device set to {boot.describe()}")

    def stop(self) -> None:
        self.machine.stop()


def load_plan(path: Path) -> dict:
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the BMC plan {path}: {exc}") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("machines"), list):
        raise UserError(f"the BMC plan {path} needs a 'machines' list")
    return plan


def machine_from_plan(entry: dict) -> QemuMachine:
    fields = {key: entry[key] for key in ("name", "mac", "tap", "firmware", "memory_mib", "cpus",
                                           "disk_gib", "netns") if key in entry}
    return QemuMachine(MachineSpec(**fields), Path(entry["workdir"]))


def run(plan_path: Path) -> int:
    """Serve one BMC per machine until SIGTERM/SIGINT; then stop every VM."""
    plan = load_plan(plan_path)
    password = read_password(Path(plan["password_file"]), None)
    address = plan.get("address", "127.0.0.1")
    lock = threading.Lock()

    def show(message: str) -> None:
        with lock:
            print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    show(f"qemu-bmc: QEMU accelerator {accelerator()}")  # the KVM trial, before any IPMI call
    backends: list[QemuBackend] = []
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        bmcs = []
        for entry in plan["machines"]:
            machine = machine_from_plan(entry)
            machine.prepare()
            backend = QemuBackend(machine, on_change=show)
            backends.append(backend)
            try:
                bmcs.append(VirtualBmc(backend, username=plan.get("username", "admin"),
                                       password=password, address=address, port=int(entry["port"])))
            except OSError as exc:
                raise UserError(f"cannot listen on {address} UDP port {entry['port']}: "
                                f"{exc.strerror}") from None
            show(f"{machine.spec.name}: BMC on {address}:{entry['port']} "
                 f"({machine.spec.firmware}, {machine.spec.mac})")
        show(f"{READY} {len(bmcs)} BMC(s)")
        serve(stop)
    finally:
        for backend in backends:
            try:
                backend.stop()
            except Exception as exc:  # stop the others anyway
                show(f"{backend.machine.spec.name}: stopping the VM failed: {exc}")
        show("qemu-bmc: stopped")
    return 0


class BmcProcess:
    """`python -m provisiond.lab.qemu_bmc PLAN` as a child: started, read, stopped by PID."""

    def __init__(self, plan: dict, plan_path: Path, log_path: Path, timeout: float = 60.0) -> None:
        plan_path.write_text(json.dumps(plan, indent=1), encoding="utf-8")
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "provisiond.lab.qemu_bmc", str(plan_path)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent)
        try:
            deadline = time.monotonic() + timeout
            while READY not in self.output():
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise UserError(f"the virtual BMCs did not start:\n{self.output()[-2000:]}")
                time.sleep(0.1)
        except BaseException:  # also an interrupt while waiting: no BMC process is left behind
            self.stop()
            raise

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the process stops its VMs), then SIGKILL (its VMs die with it)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()

    def __enter__(self) -> BmcProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provisiond.lab.qemu_bmc",
                                     description="virtual BMCs driving QEMU VMs")
    parser.add_argument("plan", type=Path, help="JSON plan: BMC address/user/password file, machines")
    args = parser.parse_args(argv)
    try:
        return run(args.plan)
    except UserError as exc:
        print(f"qemu-bmc: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
