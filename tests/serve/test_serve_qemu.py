"""Real firmware: a QEMU VM (TCG, e1000 with Debian's iPXE ROM) PXE-boots from
`provisiond serve` on a bridge without uplink that the test creates (inside its own network
namespace) and removes: DHCP, iPXE, the HTTP boot script, the Debian installer's kernel and
initrd over HTTP, until the installer fetches the node's preseed. The store must show `pxe`
then `installing`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML, require_program, require_root
from serve_lab import PROVISIOND, run

from provisiond.lifecycle import State
from provisiond.store import Store

pytestmark = [pytest.mark.root, pytest.mark.qemu]

MAC = "52:54:00:15:00:11"
INVENTORY = LAB_SITE_YAML + """\
nodes:
  - {hostname: vm1, mac: '52:54:00:15:00:11', role: compute, ip: 10.213.0.11, disk: {device: vda, size: 40GiB}}
"""
CONFIG = """\
[os.debian12]
cmdline = "console=ttyS0,115200n8"
"""
BOOT_LIMIT = 360  # seconds; TCG on shared cores, measured ~1-2 min to the preseed fetch


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def bridge_ns() -> Iterator[str]:
    """A namespace holding a bridge (10.213.0.1/24) and a tap for the VM; no uplink."""
    require_root()
    require_program("ip")
    ns = f"pqemu-{os.getpid() % 100000}"
    try:
        run("ip", "netns", "add", ns)
        for command in (["link", "set", "lo", "up"],
                        ["link", "add", "br0", "type", "bridge"],
                        ["addr", "add", "10.213.0.1/24", "dev", "br0"],
                        ["tuntap", "add", "tap0", "mode", "tap"],
                        ["link", "set", "tap0", "master", "br0"],
                        ["link", "set", "tap0", "up"],
                        ["link", "set", "br0", "up"]):
            run("ip", "-n", ns, *command)
        yield ns
    finally:
        run("ip", "netns", "del", ns, check=False)


def test_qemu_pxe_boots_debian_installer_to_its_preseed(bridge_ns: str, tmp_path: Path) -> None:
    qemu = require_program("qemu-system-x86_64")
    if not Path("/usr/lib/ipxe/qemu/pxe-e1000.rom").exists():
        pytest.skip("Debian's ipxe-qemu ROMs are not installed (make test installs them)")
    kernel = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux")
    if not kernel.exists():
        pytest.skip("debian-installer-12-netboot-amd64 is not installed (make test installs it)")
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    (tmp_path / "provisiond.toml").write_text(CONFIG)
    (tmp_path / "tftp").mkdir()
    globals_ = ["--inventory", str(tmp_path / "inventory.yaml"), "--state-dir", str(tmp_path / "state"),
                "--config", str(tmp_path / "provisiond.toml")]
    serve_log = tmp_path / "serve.log"
    serial = tmp_path / "serial.log"
    with serve_log.open("wb") as log:
        serve = subprocess.Popen(
            ["ip", "netns", "exec", bridge_ns, *PROVISIOND, *globals_, "serve",
             "--interface", "br0", "--tftp-root", str(tmp_path / "tftp")],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    vm: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 40
        while b"event=serving" not in serve_log.read_bytes():
            assert serve.poll() is None and time.monotonic() < deadline, serve_log.read_text()
            time.sleep(0.2)
        assert run(*PROVISIOND, *globals_, "netboot", "vm1", "on").returncode == 0
        store = Store.in_state_dir(tmp_path / "state")

        vm = subprocess.Popen(
            ["ip", "netns", "exec", bridge_ns, qemu, "-accel", "tcg,thread=multi", "-m", "1024",
             "-smp", "1", "-display", "none", "-serial", f"file:{serial}", "-monitor", "none",
             "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
             "-device", f"e1000,netdev=n0,mac={MAC}", "-boot", "n", "-no-reboot"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "qemu.err").open("wb"))
        deadline = time.monotonic() + BOOT_LIMIT
        while store.node("vm1").state is not State.INSTALLING:
            assert vm.poll() is None, f"QEMU exited: {(tmp_path / 'qemu.err').read_text()}"
            assert serve.poll() is None, serve_log.read_text()
            if time.monotonic() > deadline:
                tail = serial.read_text(errors="replace")[-3000:] if serial.exists() else ""
                pytest.fail(f"no preseed fetch within {BOOT_LIMIT} s; serial console:\n{tail}\n"
                            f"serve log:\n{serve_log.read_text()[-3000:]}")
            time.sleep(1)

        states = [(e.kind, e.source) for e in store.events(hostname="vm1") if e.kind.startswith("state:")]
        assert states == [("state:pxe", "dhcp"), ("state:installing", "http")]
        fetched = next(e for e in store.events(hostname="vm1") if e.kind == "state:installing")
        assert fetched.detail["fetched"] == "preseed" and fetched.detail["peer"] == "10.213.0.11"
        log_text = serve_log.read_text()
        assert f"path=/boot/{MAC}.ipxe status=200" in log_text
        assert "path=/boot/debian12/linux status=200" in log_text
        assert "path=/boot/debian12/initrd.gz status=200" in log_text
        assert "Linux version" in serial.read_text(errors="replace")
    finally:
        if vm is not None:
            _stop(vm, signal.SIGKILL)
        _stop(serve)
