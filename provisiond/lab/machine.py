"""A QEMU virtual machine driven like hardware: power on/off/reset, a one-time network boot.

Power on starts a QEMU process, power off ends it (QMP `quit`, then SIGKILL), a soft power
off is an ACPI power-button press (QMP `system_powerdown`; the guest's shutdown ends QEMU),
reset is QMP `system_reset`. Each VM gets a qcow2 disk, a serial console appended to a file
(kept across power cycles), `virtio-rng-pci` (mkfs would otherwise wait for entropy) and one NIC
on a tap of the lab network.

Firmware:
- bios: SeaBIOS and the iPXE ROM QEMU ships for its e1000 NIC;
- uefi: `-machine q35`, OVMF_CODE_4M read-only plus a private copy of OVMF_VARS_4M, and a
  virtio-net NIC with `romfile=` empty, so EDK2's own PXE client boots from the network.

Boot order is QEMU's `bootindex`: disk first by default, as a server boots. A one-time network
boot starts QEMU paused with the NIC first, then (over QMP, before the CPU runs) puts the disk
first again: QEMU rebuilds the firmware's boot order at each reset, so the guest's own reboot
after installing comes up from disk, as a real BMC's one-time boot override behaves.

Acceleration: TCG (`-accel tcg,thread=multi`) unless a trial boot proves KVM runs firmware
here (a /dev/kvm that exists is not enough: a paravirtual one starts QEMU but runs no BIOS).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from provisiond.errors import UserError

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
FIRMWARES = ("bios", "uefi")
PR_SET_PDEATHSIG = 1  # linux/prctl.h

# bootindex values: network first for a network boot, disk first otherwise. Distinct numbers,
# so switching from one order to the other is one qom-set (QEMU refuses duplicate indexes).
NET_FIRST = {"net0": 0, "disk0": 1}
DISK_FIRST = {"disk0": 1, "net0": 2}


class MachineError(Exception):
    """QEMU could not be started or driven; the message says what and where to look."""


@dataclass(frozen=True)
class MachineSpec:
    """What a VM is: its name, NIC, firmware, size. `tap` is opened inside `netns` (if set)."""

    name: str
    mac: str
    tap: str
    firmware: str = "bios"
    memory_mib: int = 1024
    cpus: int = 1
    disk_gib: int = 20
    netns: str | None = None

    def __post_init__(self) -> None:
        if self.firmware not in FIRMWARES:
            raise UserError(f"machine {self.name}: firmware {self.firmware!r} is not one of "
                            f"{', '.join(FIRMWARES)}")


def die_with_parent() -> None:
    """In a lab child (QEMU, the BMC process, serve): get SIGKILL if the process that started
    it dies (even by SIGKILL), so nothing outlives its lab."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setsid()  # a Ctrl-C to the lab's terminal reaches the lab, which stops VMs in order


_accel_lock = threading.Lock()
_accel: str | None = None


def kvm_runs_firmware(timeout: float = 20.0) -> bool:
    """Boot SeaBIOS and the NIC's iPXE ROM under KVM: True only if iPXE gets as far as
    opening its network device. (A paravirtual /dev/kvm here prints SeaBIOS's banner, then
    fails in iPXE with "KVM internal error": the trial has to go that far.) The NIC sits on a
    QEMU hub port with nothing else on it: no traffic leaves the VM.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or shutil.which(QEMU) is None:
        return False
    with tempfile.TemporaryDirectory(prefix="provisiond-kvm-") as tmp:
        serial = Path(tmp) / "serial.log"
        sercon = Path(tmp) / "sercon-port"
        sercon.write_bytes((0x3F8).to_bytes(2, "little"))
        process = subprocess.Popen(
            [QEMU, "-accel", "kvm", "-nodefaults", "-display", "none", "-m", "256",
             "-fw_cfg", f"name=etc/sercon-port,file={sercon}", "-serial", f"file:{serial}",
             "-netdev", "hubport,id=n0,hubid=0", "-device", "e1000,netdev=n0", "-boot", "n"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and process.poll() is None:
                if serial.exists() and b"net0: " in serial.read_bytes():
                    return True
                time.sleep(0.2)
            return False
        finally:
            process.kill()
            process.wait(10)


TRIAL_DIR = Path("/run/provisiond")


def _trial_record() -> Path:
    """Where this boot's KVM trial result is kept (/run is emptied at reboot), keyed by the
    kernel and QEMU, which decide the answer."""
    qemu = shutil.which(QEMU) or QEMU
    try:
        qemu_id = f"{os.stat(qemu).st_mtime_ns}"
    except OSError:
        qemu_id = "none"
    return TRIAL_DIR / f"kvm-trial-{os.uname().release}-{qemu_id}"


def accelerator() -> str:
    """`kvm` if a trial boot proves it runs firmware, else `tcg,thread=multi`. Decided once
    per machine boot (recorded under /run/provisiond); PROVISIOND_LAB_ACCEL=tcg|kvm skips the
    trial."""
    global _accel
    with _accel_lock:
        if _accel is None:
            forced = os.environ.get("PROVISIOND_LAB_ACCEL", "")
            record = _trial_record()
            if forced in ("tcg", "kvm"):
                kvm = forced == "kvm"
            elif record.exists():
                kvm = record.read_text().strip() == "kvm"
            else:
                kvm = kvm_runs_firmware()
                try:
                    TRIAL_DIR.mkdir(parents=True, exist_ok=True)
                    record.write_text("kvm\n" if kvm else "tcg\n")
                except OSError:
                    pass  # not root: decide again next time
            _accel = "kvm" if kvm else "tcg,thread=multi"
            log.info("QEMU accelerator: %s", _accel)
        return _accel


class QemuMachine:
    """One VM: its files live in `workdir` (disk, OVMF variables, serial log, QMP socket)."""

    def __init__(self, spec: MachineSpec, workdir: Path) -> None:
        self.spec = spec
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self.boots: list[str] = []  # "network" / "disk", one per start, for tests and reports

    # -- files ---------------------------------------------------------------------------

    @property
    def disk(self) -> Path:
        return self.workdir / "disk.qcow2"

    @property
    def vars(self) -> Path:
        return self.workdir / "OVMF_VARS.fd"

    @property
    def sercon(self) -> Path:
        return self.workdir / "sercon-port"

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def qemu_log(self) -> Path:
        return self.workdir / "qemu.log"

    @property
    def qmp_socket(self) -> Path:
        return self.workdir / "qmp.sock"

    def prepare(self) -> None:
        """Create the disk and the private OVMF variable store once (kept across power
        cycles, like a real machine's disk and NVRAM)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.disk.exists():
            result = subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(self.disk), f"{self.spec.disk_gib}G"],
                capture_output=True, text=True, timeout=60, check=False)
            if result.returncode != 0:
                raise MachineError(f"{self.spec.name}: qemu-img create {self.disk} failed: "
                                   f"{result.stderr.strip()}")
        if self.spec.firmware == "uefi" and not self.vars.exists():
            for path in (OVMF_CODE, OVMF_VARS):
                if not path.exists():
                    raise MachineError(f"{path} is missing: install Debian's ovmf package")
            shutil.copyfile(OVMF_VARS, self.vars)
        if self.spec.firmware == "bios":
            self.sercon.write_bytes((0x3F8).to_bytes(2, "little"))  # COM1

    def serial_tail(self, chars: int = 3000) -> str:
        if not self.serial_log.exists():
            return "(no serial output)"
        return self.serial_log.read_bytes()[-chars:].decode(errors="replace")

    # -- the command line ----------------------------------------------------------------

    def command(self, network_first: bool) -> list[str]:
        spec = self.spec
        order = NET_FIRST if network_first else DISK_FIRST
        prefix = ["ip", "netns", "exec", spec.netns] if spec.netns else []
        if spec.firmware == "uefi":
            machine = ["-machine", "q35",
                       "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                       "-drive", f"if=pflash,format=raw,unit=1,file={self.vars}"]
            nic = f"virtio-net-pci,netdev=n0,mac={spec.mac},romfile=,id=net0"
        else:
            # SeaBIOS mirrors its screen (and iPXE's, which prints through the BIOS) to the
            # serial port named by this fw_cfg file: the console log shows the PXE steps.
            machine = ["-machine", "pc", "-fw_cfg", f"name=etc/sercon-port,file={self.sercon}"]
            nic = f"e1000,netdev=n0,mac={spec.mac},id=net0"
        return [
            *prefix, QEMU, "-name", f"{spec.name},process=provisiond-lab-{spec.name}",
            "-accel", accelerator(), *machine, "-m", str(spec.memory_mib), "-smp", str(spec.cpus),
            "-nodefaults", "-display", "none", "-S",
            "-chardev", f"file,id=serial0,path={self.serial_log},append=on",
            "-serial", "chardev:serial0",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            "-drive", f"if=none,id=d0,format=qcow2,file={self.disk},cache=unsafe,discard=unmap",
            "-device", f"virtio-blk-pci,drive=d0,id=disk0,bootindex={order['disk0']}",
            "-netdev", f"tap,id=n0,ifname={spec.tap},script=no,downscript=no",
            "-device", f"{nic},bootindex={order['net0']}",
            "-device", "virtio-rng-pci",
        ]

    # -- QMP -----------------------------------------------------------------------------

    def qmp(self, command: str, timeout: float = 10.0, **arguments: object) -> object:
        """One QMP command on a fresh connection (QEMU serves one QMP client at a time)."""
        from qemu.qmp.legacy import QEMUMonitorProtocol  # not for the CLI's start-up (lab plans)

        monitor = QEMUMonitorProtocol(str(self.qmp_socket))
        try:
            monitor.connect()
            monitor.settimeout(timeout)
            return monitor.cmd(command, **arguments)
        except Exception as exc:
            raise MachineError(f"{self.spec.name}: QMP {command} failed: {exc}") from exc
        finally:
            # The peer may be gone (after `quit`, or QEMU died): nothing left to close then.
            with contextlib.suppress(Exception):
                monitor.close()

    def _wait_for_qmp(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise MachineError(
                    f"{self.spec.name}: QEMU exited with {self.process.returncode} while "
                    f"starting: {self.qemu_log.read_text(errors='replace').strip()[-1500:]}")
            if self.qmp_socket.exists():
                try:
                    self.qmp("query-status", timeout=2)
                    return
                except MachineError:
                    pass
            time.sleep(0.1)
        raise MachineError(f"{self.spec.name}: QEMU's QMP socket did not answer within "
                           f"{timeout:.0f} s (see {self.qemu_log})")

    # -- power ---------------------------------------------------------------------------

    def running(self) -> bool:
        with self._lock:
            return self.process is not None and self.process.poll() is None

    def start(self, network_boot: bool = False, persistent: bool = False,
              timeout: float = 30.0) -> None:
        """Power on. network_boot: boot from the network this time (and every time if
        persistent); otherwise from disk (the firmware tries the network after a blank disk).
        """
        with self._lock:
            if self.running():
                return
            self.prepare()
            self.qmp_socket.unlink(missing_ok=True)
            command = self.command(network_first=network_boot)
            log.info("%s: starting QEMU (%s boot)", self.spec.name, "network" if network_boot else "disk")
            with self.qemu_log.open("ab") as qemu_log:
                self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                                stdout=qemu_log, stderr=qemu_log,
                                                preexec_fn=die_with_parent)
            try:
                self._wait_for_qmp(timeout)
                if network_boot and not persistent:
                    # The firmware's boot order was taken at start-up; from the next reset on,
                    # the disk comes first again.
                    self.qmp("qom-set", path="/machine/peripheral/net0", property="bootindex",
                             value=DISK_FIRST["net0"])
                self.qmp("cont")
            except BaseException:
                self._kill()
                raise
            self.boots.append("network" if network_boot else "disk")

    def stop(self, timeout: float = 10.0) -> None:
        """Hard power off: QMP quit, then SIGKILL if QEMU does not end in time."""
        with self._lock:
            if self.process is None:
                return
            if self.process.poll() is None:
                with contextlib.suppress(MachineError):
                    self.qmp("quit", timeout=timeout)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout)
            self._kill()

    def _kill(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            self.process = None
        self.qmp_socket.unlink(missing_ok=True)

    def powerdown(self) -> None:
        """ACPI power button: the guest shuts down, and QEMU exits with it."""
        with self._lock:
            if self.running():
                self.qmp("system_powerdown")

    def reset(self) -> None:
        """Warm reset: the firmware starts again with the current boot order."""
        with self._lock:
            if self.running():
                self.qmp("system_reset")

    def status(self) -> str:
        """`off`, or QEMU's run state over QMP (`running`, `paused`, ...). Also works on a
        handle for a VM that another process (its BMC) started."""
        with self._lock:
            if self.process is not None and self.process.poll() is not None:
                return "off"
            if not self.qmp_socket.exists():
                return "off"
            try:
                answer = self.qmp("query-status", timeout=3)
            except MachineError:
                return "unresponsive" if self.running() else "off"
            return str(answer.get("status", "unknown")) if isinstance(answer, dict) else "unknown"
