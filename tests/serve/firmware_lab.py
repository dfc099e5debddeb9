"""Real firmware against `provisiond serve`: QEMU (TCG) VMs on a bridge the test creates.

A namespace holds a bridge (10.213.0.1/24, no uplink) with one tap per VM, `provisiond serve`
on that bridge, and the VMs: SeaBIOS with QEMU's iPXE ROM (e1000), or OVMF with EDK2's own
PXE client (virtio-net with `romfile=` empty). Each VM has a small local disk that says on
the serial console that it booted (a BIOS boot sector, or an EFI system partition whose
BOOTX64.EFI is a GRUB that echoes), so "boots local" is seen, not assumed. Everything is
removed afterwards, also on failure; processes are stopped by PID.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from conftest import require_program, require_root
from netlab import stop_process
from serve_lab import PROVISIOND, run

LOCAL_MARKER = "PROVISIOND-LOCAL-DISK"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
IPXE_ROM = Path("/usr/lib/ipxe/qemu/pxe-e1000.rom")
DI = Path("/usr/lib/debian-installer/images/12/amd64/text")
CACHE = Path(os.environ.get("PROVISIOND_TEST_CACHE", "/var/cache/provisiond/test-firmware"))


def bios_disk(directory: Path) -> Path:
    """A 1 MiB disk whose boot sector writes LOCAL_MARKER to COM1 and halts."""
    message = (LOCAL_MARKER + "\r\n").encode() + b"\0"
    code = bytes([
        0xFA,              # cli
        0x31, 0xC0,        # xor ax, ax
        0x8E, 0xD8,        # mov ds, ax
        0xBE, 0x1C, 0x7C,  # mov si, 0x7c1c (the message)
        0xBA, 0xF8, 0x03,  # mov dx, 0x3f8 (COM1)
        0xAC,              # lodsb
        0x84, 0xC0,        # test al, al
        0x74, 0x03,        # jz halt
        0xEE,              # out dx, al
        0xEB, 0xF8,        # jmp lodsb
        0xF4,              # halt: hlt
        0xEB, 0xFD,        # jmp halt
    ])
    sector = code.ljust(0x1C, b"\x90") + message
    sector = sector.ljust(510, b"\0") + b"\x55\xaa"
    path = directory / "bios-disk.img"
    path.write_bytes(sector.ljust(1 << 20, b"\0"))
    return path


def efi_system_partition(directory: Path) -> Path:
    """A directory QEMU presents as a FAT disk (vvfat): EFI/BOOT/BOOTX64.EFI is a standalone
    GRUB that prints LOCAL_MARKER. Built once per content, cached under CACHE."""
    grub_mkstandalone = require_program("grub-mkstandalone")
    config = f"echo {LOCAL_MARKER}\nsleep 3600\n"
    key = hashlib.sha256((config + Path(grub_mkstandalone).read_bytes().hex()[:64]).encode()).hexdigest()[:16]
    cached = CACHE / f"bootx64-{key}.efi"
    if not cached.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        (directory / "grub.cfg").write_text(config)
        partial = cached.with_suffix(".partial")
        run(grub_mkstandalone, "-O", "x86_64-efi", "-o", str(partial),
            "--modules=echo sleep", "--locales=", "--fonts=", "--themes=",
            f"boot/grub/grub.cfg={directory / 'grub.cfg'}", timeout=120)
        partial.rename(cached)
    esp = directory / "esp"
    (esp / "EFI" / "BOOT").mkdir(parents=True)
    shutil.copy(cached, esp / "EFI" / "BOOT" / "BOOTX64.EFI")
    return esp


@dataclass
class Vm:
    """One QEMU machine, its serial console in a file."""

    name: str
    mac: str
    uefi: bool
    tap: str
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    boots: int = 0

    @property
    def serial(self) -> Path:
        return self.workdir / f"{self.name}-serial-{self.boots}.log"

    def console(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def command(self, qemu: str) -> list[str]:
        base = [qemu, "-accel", "tcg,thread=multi", "-m", "1024", "-smp", "1",
                "-display", "none", "-monitor", "none", "-serial", f"file:{self.serial}",
                "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no", "-no-reboot"]
        if not self.uefi:
            disk = self.workdir / "bios-disk.img"
            return [*base, "-device", f"e1000,netdev=n0,mac={self.mac},bootindex=1",
                    "-drive", f"if=none,id=d0,format=raw,file={disk}",
                    "-device", "virtio-blk-pci,drive=d0,bootindex=2"]
        vars_copy = self.workdir / f"{self.name}-vars.fd"
        if not vars_copy.exists():
            shutil.copy(OVMF_VARS, vars_copy)
        esp = self.workdir / "esp"
        return [*base, "-machine", "q35",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
                # romfile= empty: EDK2's own PXE client, not iPXE, does DHCP and TFTP.
                "-device", f"virtio-net-pci,netdev=n0,mac={self.mac},romfile=,bootindex=1",
                "-drive", f"if=none,id=d0,format=raw,readonly=on,file=fat:{esp}",
                "-device", "virtio-blk-pci,drive=d0,bootindex=2"]


@dataclass
class FirmwareLab:
    """A bridge in a namespace, `provisiond serve` on it, and VMs on taps of the bridge."""

    ns: str
    workdir: Path
    globals: list[str]
    serve: subprocess.Popen[bytes] | None = None
    vms: list[Vm] = field(default_factory=list)

    @property
    def serve_log(self) -> Path:
        return self.workdir / "serve.log"

    def log(self) -> str:
        return self.serve_log.read_text(errors="replace") if self.serve_log.exists() else ""

    def start_serve(self, timeout: float = 60) -> None:
        with self.serve_log.open("wb") as log:
            self.serve = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *PROVISIOND, *self.globals, "serve",
                 "--interface", "br0", "--tftp-root", str(self.workdir / "tftp")],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while b"event=serving" not in self.serve_log.read_bytes():
            assert self.serve.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.2)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(*PROVISIOND, *self.globals, *args, check=False, timeout=60)

    def curl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.ns, "curl", "-sS", "--max-time", "10", *args,
                   check=False, timeout=30)

    def add_vm(self, name: str, mac: str, uefi: bool) -> Vm:
        tap = f"tap{len(self.vms)}"
        for command in (["tuntap", "add", tap, "mode", "tap"], ["link", "set", tap, "master", "br0"],
                        ["link", "set", tap, "up"]):
            run("ip", "-n", self.ns, *command)
        vm = Vm(name, mac, uefi, tap, self.workdir)
        self.vms.append(vm)
        return vm

    def boot(self, vm: Vm) -> None:
        """Power the VM on (again): a fresh QEMU process on the same disk and NVRAM."""
        qemu = require_program("qemu-system-x86_64")
        self.power_off(vm)
        vm.boots += 1
        errors = (self.workdir / f"{vm.name}-qemu-{vm.boots}.err").open("wb")
        vm.process = subprocess.Popen(["ip", "netns", "exec", self.ns, *vm.command(qemu)],
                                      stdout=subprocess.DEVNULL, stderr=errors)

    def power_off(self, vm: Vm) -> None:
        if vm.process is not None:
            stop_process(vm.process, signal.SIGKILL)
            vm.process = None

    def wait(self, what: str, check, vms: list[Vm], limit: float) -> None:
        """Wait (bounded) until check() holds; on timeout fail with the consoles and the log."""
        deadline = time.monotonic() + limit
        while not check():
            for vm in vms:
                assert "Kernel panic" not in vm.console(), f"{vm.name}: {vm.console()[-2500:]}"
                assert vm.process is None or vm.process.poll() is None, (
                    f"QEMU {vm.name} exited: "
                    f"{(self.workdir / f'{vm.name}-qemu-{vm.boots}.err').read_text()}")
            assert self.serve is not None and self.serve.poll() is None, self.log()
            if time.monotonic() > deadline:
                consoles = "\n".join(f"--- {vm.name} serial:\n{vm.console()[-2500:]}" for vm in vms)
                raise AssertionError(f"{what}: not within {limit:.0f} s\n{consoles}\n"
                                     f"--- serve log:\n{self.log()[-4000:]}")
            time.sleep(1)


@contextmanager
def firmware_lab(workdir: Path, inventory: str, config: str) -> Iterator[FirmwareLab]:
    """The namespace with its bridge, serve running on it; VMs are added by the test."""
    require_root()
    require_program("ip")
    require_program("curl")
    for needed in (IPXE_ROM, OVMF_CODE, DI / "debian-installer/amd64/linux"):
        if not needed.exists():
            import pytest

            pytest.skip(f"{needed} is missing (make deps installs it from deps/apt/)")
    ns = f"pfw-{os.getpid() % 100000}"
    (workdir / "inventory.yaml").write_text(inventory)
    (workdir / "provisiond.toml").write_text(config)
    (workdir / "tftp").mkdir()
    bios_disk(workdir)
    efi_system_partition(workdir)
    lab = FirmwareLab(ns, workdir, ["--inventory", str(workdir / "inventory.yaml"),
                                    "--state-dir", str(workdir / "state"),
                                    "--config", str(workdir / "provisiond.toml")])
    try:
        run("ip", "netns", "add", ns)
        for command in (["link", "set", "lo", "up"], ["link", "add", "br0", "type", "bridge"],
                        ["addr", "add", "10.213.0.1/24", "dev", "br0"], ["link", "set", "br0", "up"]):
            run("ip", "-n", ns, *command)
        lab.start_serve()
        yield lab
    finally:
        for vm in lab.vms:
            lab.power_off(vm)
        if lab.serve is not None:
            stop_process(lab.serve)
        run("ip", "netns", "del", ns, check=False)
