"""The pieces of the image-install VM tests: a bridge without uplink in its own namespace,
`provisiond serve` on it, the artifacts built by `provisiond image build` (cached on disk),
and a QEMU VM (TCG) on a tap of that bridge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from conftest import require_program, require_root
from netlab import run

from provisiond.lifecycle import State
from provisiond.store import Store

PROVISIOND = [sys.executable, "-m", "provisiond"]
SERVER_URL = "http://10.213.0.1:8080"
# The persistent cache CI reruns reuse (content-keyed: a changed recipe builds anew).
IMAGE_CACHE = Path(os.environ.get("PROVISIOND_TEST_IMAGE_CACHE", "/var/cache/provisiond/images"))
BUILD_LIMIT = 1500  # seconds for cold builds (ramdisk + root image; ~3 min measured here)
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


@contextmanager
def bridge_namespace(tag: str) -> Iterator[str]:
    """A namespace holding br0 (10.213.0.1/24) and tap0 for the VM; no uplink; removed after."""
    require_root()
    require_program("ip")
    ns = f"pimg{tag}-{os.getpid() % 100000}"
    try:
        run("ip", "netns", "add", ns)
        for command in (["link", "set", "lo", "up"], ["link", "add", "br0", "type", "bridge"],
                        ["addr", "add", "10.213.0.1/24", "dev", "br0"],
                        ["tuntap", "add", "tap0", "mode", "tap"], ["link", "set", "tap0", "master", "br0"],
                        ["link", "set", "tap0", "up"], ["link", "set", "br0", "up"]):
            run("ip", "-n", ns, *command)
        yield ns
    finally:
        run("ip", "netns", "del", ns, check=False)


def build_images(role: str) -> str:
    """`provisiond image build` for the role (reused from the cache when unchanged); its output."""
    result = subprocess.run([*PROVISIOND, "image", "build", "--role", role, "--cache-dir", str(IMAGE_CACHE)],
                            capture_output=True, text=True, timeout=BUILD_LIMIT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class Site:
    """A site directory (inventory, provisiond.toml, state) and its `serve` in the namespace."""

    workdir: Path
    ns: str
    inventory: str
    cache_dir: Path = IMAGE_CACHE
    serve: subprocess.Popen | None = None
    store: Store | None = None
    started: float = field(default_factory=time.monotonic)

    def globals(self) -> list[str]:
        return ["--inventory", str(self.workdir / "inventory.yaml"), "--state-dir", str(self.workdir / "state"),
                "--config", str(self.workdir / "provisiond.toml")]

    def start(self) -> None:
        (self.workdir / "inventory.yaml").write_text(self.inventory)
        (self.workdir / "provisiond.toml").write_text(
            f'[os.debian12]\ncmdline = "console=ttyS0,115200n8"\n\n[images]\ncache_dir = "{self.cache_dir}"\n')
        (self.workdir / "tftp").mkdir(exist_ok=True)
        log = (self.workdir / "serve.log").open("wb")
        self.serve = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *PROVISIOND, *self.globals(), "serve", "--interface", "br0",
             "--tftp-root", str(self.workdir / "tftp")], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + 40
        while b"event=serving" not in (self.workdir / "serve.log").read_bytes():
            assert self.serve.poll() is None and time.monotonic() < deadline, self.serve_log()
            time.sleep(0.2)
        self.store = Store.in_state_dir(self.workdir / "state")

    def serve_log(self) -> str:
        return (self.workdir / "serve.log").read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(*PROVISIOND, *self.globals(), *args, check=False, timeout=120, cwd=self.workdir)

    def stop(self) -> None:
        if self.serve is not None:
            stop_process(self.serve)

    def wait_state(self, host: str, states: set[State], limit: float, vm: Vm | None = None) -> State:
        assert self.store is not None
        deadline = time.monotonic() + limit
        while True:
            state = self.store.node(host).state
            if state in states:
                return state
            assert self.serve is not None and self.serve.poll() is None, self.serve_log()[-3000:]
            if vm is not None and vm.process is not None and vm.process.poll() is not None:
                raise AssertionError(f"QEMU exited ({vm.process.returncode}); serial:\n{vm.serial_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{host} is {state}, not {sorted(states)}, after {limit} s; serial:\n"
                                     f"{vm.serial_tail() if vm else ''}\nserve log:\n{self.serve_log()[-3000:]}")
            time.sleep(1)


@dataclass
class Vm:
    """One QEMU VM (TCG) on the namespace's tap: e1000 with iPXE, a virtio disk, virtio-rng."""

    workdir: Path
    ns: str
    mac: str
    disk_gib: int
    firmware: str = "bios"
    memory_mib: int = 1536
    process: subprocess.Popen | None = None

    @property
    def disk(self) -> Path:
        return self.workdir / "disk.raw"

    @property
    def serial(self) -> Path:
        return self.workdir / "serial.log"

    def prepare(self) -> None:
        with self.disk.open("wb") as handle:  # sparse: nothing is written until the guest does
            handle.truncate(self.disk_gib * 1024**3)
        if self.firmware == "uefi":
            (self.workdir / "OVMF_VARS.fd").write_bytes(OVMF_VARS.read_bytes())

    def command(self) -> list[str]:
        qemu = require_program("qemu-system-x86_64")
        command = [qemu, "-accel", "tcg,thread=multi", "-m", str(self.memory_mib), "-smp", "2",
                   "-display", "none", "-serial", f"file:{self.serial}", "-monitor", "none",
                   "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
                   "-device", f"e1000,netdev=n0,mac={self.mac}",
                   "-drive", f"file={self.disk},format=raw,if=virtio,cache=unsafe",
                   "-device", "virtio-rng-pci", "-boot", "order=n"]
        if self.firmware == "uefi":
            command += ["-machine", "q35",
                        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                        "-drive", f"if=pflash,format=raw,unit=1,file={self.workdir / 'OVMF_VARS.fd'}"]
        return command

    def start(self) -> None:
        self.process = subprocess.Popen(["ip", "netns", "exec", self.ns, *self.command()],
                                        stdout=subprocess.DEVNULL,
                                        stderr=(self.workdir / "qemu.err").open("wb"))

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGKILL)

    def serial_tail(self, chars: int = 4000) -> str:
        return self.serial.read_text(errors="replace")[-chars:] if self.serial.exists() else ""

    def wait_serial(self, text: str, limit: float) -> float:
        """Seconds until `text` appears on the serial console."""
        started = time.monotonic()
        while text not in (self.serial.read_text(errors="replace") if self.serial.exists() else ""):
            assert self.process is not None and self.process.poll() is None, \
                f"QEMU exited; serial:\n{self.serial_tail()}"
            if time.monotonic() - started > limit:
                raise AssertionError(f"{text!r} not on the serial console after {limit} s:\n{self.serial_tail()}")
            time.sleep(1)
        return time.monotonic() - started
