"""The pieces of the image-install VM tests, the lab's own: a lab network (namespace + bridge
without uplink, provisiond.lab.network), QEMU VMs behind virtual BMCs (provisiond.lab.qemu_bmc:
IPMI power on starts the VM, a one-time PXE boot is used once), `provisiond serve` on the
bridge, and the artifacts of `provisiond image build` (cached on disk by content).

Nothing here starts QEMU itself: `provisiond provision HOST` powers the VM on over IPMI, as it
does a real server; the guest's own reboot after the deploy comes up from its disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import LAB_SITE_YAML, require_program, require_root
from netlab import run, stop_process

from provisiond.lab.network import LabNetwork
from provisiond.lab.plan import ssh_argv
from provisiond.lab.ports import free_udp_ports
from provisiond.lab.qemu_bmc import BmcProcess
from provisiond.lifecycle import State
from provisiond.store import Store

PROVISIOND = [sys.executable, "-m", "provisiond"]
# The persistent cache CI reruns reuse (content-keyed: a changed recipe builds anew).
IMAGE_CACHE = Path(os.environ.get("PROVISIOND_TEST_IMAGE_CACHE", "/var/cache/provisiond/images"))
BUILD_LIMIT = 1500  # seconds for cold builds (ramdisk + root image; ~3 min measured here)
BMC_USER = "admin"
# A hash of a discarded random password (as in tests/conftest.py): no usable root password.
ROOT_PASSWORD_HASH = ("$6$NTD9RTgBuEBLAtYO$fViymCfiMzQAshwklT09UqAbc4NjMjHujAJtk4W9c4G7UPpRurGuIJtNxbGZyfSOcCQ2LaHgpmn8x1"
                      "uF1WM0t/")
DISK_GIB = 30  # sparse qcow2; the compute layout needs 25598 MiB, the controller's about as much


def build_images(role: str) -> str:
    """`provisiond image build` for the role (reused from the cache when unchanged); its output."""
    result = subprocess.run([*PROVISIOND, "image", "build", "--role", role, "--cache-dir", str(IMAGE_CACHE)],
                            capture_output=True, text=True, timeout=BUILD_LIMIT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@dataclass(frozen=True)
class Node:
    """One image node of the test site: its inventory entry and its VM."""

    hostname: str
    role: str
    firmware: str
    mac: str
    ip: str
    memory_mib: int = 1536  # the ramdisk holds the image in RAM (compute: 189 MB of tar.zst)


@dataclass
class Vm:
    """A handle on a VM its BMC started: the serial console and QEMU's state over QMP."""

    node: Node
    workdir: Path
    tap: str

    @property
    def serial(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def disk(self) -> Path:
        return self.workdir / "disk.qcow2"

    def serial_tail(self, chars: int = 4000) -> str:
        return self.serial.read_text(errors="replace")[-chars:] if self.serial.exists() else ""

    def running(self) -> bool:
        """A QEMU process of this VM exists (by its directory on the command line). Not QMP: on
        a loaded machine a QMP answer can take longer than its timeout, which reads as "off"."""
        marker = str(self.workdir).encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"qemu-system" in cmdline and marker in cmdline:
                    return True
        return False


@dataclass
class ImageSite:
    """A site directory (inventory, provisiond.toml, state), its lab network, the VMs behind
    their BMCs and `serve` on the bridge. Use as a context manager: everything goes at exit."""

    workdir: Path
    nodes: list[Node]
    cache_dir: Path = IMAGE_CACHE
    ssh_key: Path | None = None
    tag: str = "img"
    network: LabNetwork | None = None
    bmcs: BmcProcess | None = None
    serve: subprocess.Popen | None = None
    store: Store | None = None
    vms: dict[str, Vm] = field(default_factory=dict)

    def globals(self) -> list[str]:
        return ["--inventory", str(self.workdir / "inventory.yaml"), "--state-dir", str(self.workdir / "state"),
                "--config", str(self.workdir / "provisiond.toml")]

    def inventory(self, password_file: Path, base_port: int) -> str:
        lines = [LAB_SITE_YAML.rstrip("\n"), "  install: image", f"  root_password_hash: {ROOT_PASSWORD_HASH}"]
        if self.ssh_key is not None:
            public = self.ssh_key.with_suffix(".pub").read_text().strip()
            lines.append(f"  ssh_authorized_keys: ['{public}']")
        lines.append("nodes:")
        for index, node in enumerate(self.nodes):
            lines += [f"  - {{hostname: {node.hostname}, mac: '{node.mac}', role: {node.role}, ip: {node.ip}, "
                      f"firmware: {node.firmware}, disk: {{device: vda, size: {DISK_GIB}GiB}},",
                      f"     bmc: {{address: 127.0.0.1, port: {base_port + index}, username: {BMC_USER}, "
                      f"password_file: {password_file}}}}}"]
        return "\n".join(lines) + "\n"

    def __enter__(self) -> ImageSite:
        require_root()
        for program in ("qemu-system-x86_64", "qemu-img", "ipmitool"):
            require_program(program)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start(self) -> None:
        password_file = self.workdir / "bmc.pass"
        password_file.write_text(os.urandom(8).hex() + "\n")
        password_file.chmod(0o600)
        base_port = free_udp_ports(len(self.nodes))
        (self.workdir / "inventory.yaml").write_text(self.inventory(password_file, base_port))
        (self.workdir / "provisiond.toml").write_text(
            f'[os.debian12]\ncmdline = "console=ttyS0,115200n8"\n\n[images]\ncache_dir = "{self.cache_dir}"\n')
        (self.workdir / "tftp").mkdir(exist_ok=True)
        self.network = LabNetwork(tag=self.tag).create()
        machines = []
        for index, node in enumerate(self.nodes):
            vm = Vm(node, self.workdir / "machines" / node.hostname, self.network.add_tap())
            self.vms[node.hostname] = vm
            machines.append({"name": node.hostname, "mac": node.mac, "tap": vm.tap, "netns": self.network.name,
                             "firmware": node.firmware, "memory_mib": node.memory_mib, "cpus": 2,
                             "disk_gib": DISK_GIB, "port": base_port + index, "workdir": str(vm.workdir)})
        plan = {"address": "127.0.0.1", "username": BMC_USER, "password_file": str(password_file),
                "machines": machines}
        self.bmcs = BmcProcess(plan, self.workdir / "bmc-plan.json", self.workdir / "bmc.log")
        log = (self.workdir / "serve.log").open("wb")
        self.serve = subprocess.Popen(
            [*self.network.exec_prefix(), *PROVISIOND, *self.globals(), "serve", "--interface",
             self.network.bridge, "--tftp-root", str(self.workdir / "tftp")],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + 240  # a loaded machine took over 60 s
        while b"event=serving" not in (self.workdir / "serve.log").read_bytes():
            assert self.serve.poll() is None and time.monotonic() < deadline, self.serve_log()
            time.sleep(0.2)
        self.store = Store.in_state_dir(self.workdir / "state")

    def stop(self) -> None:
        if self.bmcs is not None:  # stops every VM it started
            self.bmcs.stop()
        if self.serve is not None:
            stop_process(self.serve)
        if self.network is not None:
            self.network.remove()

    def serve_log(self) -> str:
        return (self.workdir / "serve.log").read_text(errors="replace")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run(*PROVISIOND, *self.globals(), *args, check=False, timeout=timeout, cwd=self.workdir)

    def provision(self, host: str) -> None:
        """`provisiond provision HOST`: netboot on, one-time PXE and power on, over IPMI."""
        result = self.cli("provision", host)
        assert result.returncode == 0, result.stdout + result.stderr
        assert self.bmcs is not None and f"{host} boots from network (one-time" in self.bmcs.output()

    def ssh(self, host: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`command` on the node as root over SSH (the site's key), from inside the lab network."""
        assert self.ssh_key is not None and self.network is not None
        node = next(node for node in self.nodes if node.hostname == host)
        return subprocess.run([*self.network.exec_prefix(), *ssh_argv(str(self.ssh_key), node.ip, [command])],
                              capture_output=True, text=True, timeout=timeout)

    def failure_context(self, host: str) -> str:
        vm = self.vms[host]
        bmc = self.bmcs.output()[-1500:] if self.bmcs else ""
        return f"serial:\n{vm.serial_tail()}\nserve log:\n{self.serve_log()[-3000:]}\nBMC log:\n{bmc}"

    def check_alive(self, host: str) -> None:
        """The VM and the servers are still up (a dead one fails the wait at once)."""
        assert self.serve is not None and self.serve.poll() is None, self.serve_log()[-3000:]
        assert self.bmcs is not None and self.bmcs.alive(), self.bmcs.output()[-3000:] if self.bmcs else ""
        assert self.vms[host].running(), f"{host}'s QEMU is gone\n{self.failure_context(host)}"

    def wait_state(self, host: str, states: set[State], limit: float) -> State:
        assert self.store is not None
        deadline = time.monotonic() + limit
        checked = time.monotonic()
        while True:
            state = self.store.node(host).state
            if state in states:
                return state
            if time.monotonic() - checked > 15:
                self.check_alive(host)
                checked = time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(f"{host} is {state}, not {sorted(states)}, after {limit} s\n"
                                     f"{self.failure_context(host)}")
            time.sleep(1)

    def wait_event(self, host: str, kind: str, limit: float):
        """The first event of `kind` for the host, waiting up to `limit` seconds."""
        assert self.store is not None
        deadline = time.monotonic() + limit
        checked = time.monotonic()
        while True:
            found = [event for event in self.store.events(hostname=host) if event.kind == kind]
            if found:
                return found[0]
            if time.monotonic() - checked > 15:
                self.check_alive(host)
                checked = time.monotonic()
            if time.monotonic() > deadline:
                kinds = [event.kind for event in self.store.events(hostname=host)]
                raise AssertionError(f"no {kind} event after {limit} s (events: {kinds})\n"
                                     f"{self.failure_context(host)}")
            time.sleep(2)


def make_ssh_key(tmp_path: Path) -> Path:
    """A throwaway ed25519 key pair for root on the test nodes."""
    require_program("ssh-keygen")
    require_program("ssh")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "provisiond-image-test", "-f", str(key)],
                   check=True, timeout=30)
    return key


def disk_untouched(disk: Path) -> bool:
    """True when the guest never wrote to its qcow2 disk (no cluster holds data)."""
    result = subprocess.run(["qemu-img", "map", "--output=json", "-U", str(disk)], capture_output=True,
                            text=True, timeout=60, check=True)
    return not any(extent.get("data") for extent in json.loads(result.stdout))
