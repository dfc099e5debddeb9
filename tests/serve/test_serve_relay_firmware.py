"""A SeaBIOS + iPXE VM behind a router with a real DHCP relay (ISC dhcrelay) network-boots from
`provisiond serve` on the server's segment: DHCP through the relay, then its iPXE script, the
installer's kernel and initrd and its preseed over HTTP across the router, all at the server
address of the VM's own network, with its network's gateway in the installer's command line.

Topology in tests/relaylab.py: no proxy ARP, no host routes; the server namespace has only the
route to the client subnet via the router (a site's server has it from its network config).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import require_program
from firmware_lab import DI, IPXE_ROM, FirmwareLab, bios_disk
from relaylab import relay_lab
from serve_lab import PROVISIOND

from provisiond.lifecycle import State
from provisiond.store import Store

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.timeout(720)]

INSTALL_LIMIT = 420  # seconds, a bound (TCG on shared cores: 80-150 s to the preseed measured)
MAC = "52:54:00:19:00:11"
INVENTORY = f"""\
site:
  name: lab
  domain: lab.example
  network: 10.213.0.0/24
  gateway: 10.213.0.254
  server: 10.213.0.1
  dns: [10.213.0.1]
  networks:
    - {{network: 10.214.0.0/24, gateway: 10.214.0.1}}
nodes:
  - {{hostname: rackvm, mac: '{MAC}', role: compute, ip: 10.214.0.11, disk: {{device: vda, size: 40GiB}}}}
"""
CMDLINE = '[os.debian12]\ncmdline = "console=ttyS0,115200n8 no_timer_check"\n'


def test_seabios_ipxe_vm_boots_the_installer_through_a_relay(tmp_path: Path) -> None:
    for needed in (IPXE_ROM, DI / "debian-installer/amd64/linux"):
        if not needed.exists():
            pytest.skip(f"{needed} is missing (make deps installs it from deps/apt/)")
    require_program("qemu-system-x86_64")
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    (tmp_path / "provisiond.toml").write_text(CMDLINE)
    (tmp_path / "tftp").mkdir()
    bios_disk(tmp_path)
    globals_ = ["--inventory", str(tmp_path / "inventory.yaml"), "--state-dir", str(tmp_path / "state"),
                "--config", str(tmp_path / "provisiond.toml")]
    with relay_lab(tmp_path / "lab") as lab:
        # The VM sits on the router's client-side bridge (br0), like the client namespace.
        firmware = FirmwareLab(lab.router_ns, tmp_path, globals_)
        with firmware.serve_log.open("wb") as log:
            firmware.serve = subprocess.Popen(
                ["ip", "netns", "exec", lab.server_ns, *PROVISIOND, *globals_, "serve",
                 "--interface", lab.server_if, "--tftp-root", str(tmp_path / "tftp")],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        vm = None
        try:
            deadline = time.monotonic() + 60
            while b"event=serving" not in firmware.serve_log.read_bytes():
                assert firmware.serve.poll() is None and time.monotonic() < deadline, firmware.log()
                time.sleep(0.2)
            lab.start_relay("dhcrelay")
            assert firmware.cli("netboot", "rackvm", "on").returncode == 0
            vm = firmware.add_vm("rackvm", MAC, uefi=False)
            firmware.boot(vm)
            store = Store.in_state_dir(tmp_path / "state")
            firmware.wait("the installer fetches its preseed through the router",
                          lambda: store.node("rackvm").state is State.INSTALLING, [vm], INSTALL_LIMIT)
            console, log = vm.console(), firmware.log()
            events = list(store.events(hostname="rackvm"))
        finally:
            if vm is not None:
                firmware.power_off(vm)
            lab.stop_relay()
            if firmware.serve is not None and firmware.serve.poll() is None:
                firmware.serve.terminate()
                try:
                    firmware.serve.wait(20)
                except subprocess.TimeoutExpired:
                    firmware.serve.kill()
                    firmware.serve.wait(10)
    states = [(e.kind, e.source) for e in events if e.kind.startswith("state:")]
    assert states == [("state:pxe", "dhcp"), ("state:installing", "http")], states
    fetched = next(e for e in events if e.kind == "state:installing")
    assert fetched.detail["fetched"] == "preseed" and fetched.detail["peer"] == "10.214.0.11"
    # iPXE got its script URL on the server (via the relay), then everything over HTTP.
    assert f"path=/boot/{MAC}.ipxe status=200" in log
    assert "path=/boot/debian12/linux status=200" in log and "path=/boot/debian12/initrd.gz status=200" in log
    assert "peer=10.214.0.11" in log
    assert "Linux version" in console
    # The installer's command line (the kernel prints it): the VM's own network's gateway,
    # and the answer file on the server address of that network.
    assert "netcfg/get_gateway=10.214.0.1" in console and "netcfg/get_ipaddress=10.214.0.11" in console
    assert "url=http://10.213.0.1:8080/" in console
