"""Real firmware: QEMU's network boot ROM (iPXE) gets its lease and boot script URL from
provisiond, on a tap device inside a namespace the test creates and removes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import require_program, require_root
from dhcp_lab import in_netns, run

from provisiond.dhcp.server import DhcpServer
from provisiond.inventory import load_inventory
from provisiond.lifecycle import Source, State
from provisiond.store import Store

pytestmark = [pytest.mark.root, pytest.mark.qemu]

INVENTORY = """\
site:
  name: lab
  domain: lab.example
  network: 10.213.5.0/24
  gateway: 10.213.5.1
  dns: [10.213.5.1]
  server: 10.213.5.1
nodes:
  - {hostname: vm1, mac: "52:54:00:d5:00:01", role: compute, ip: 10.213.5.11}
"""
MAC = "52:54:00:d5:00:01"


def test_qemu_ipxe_rom_gets_lease_and_script_url(tmp_path: Path) -> None:
    require_root()
    qemu = require_program("qemu-system-x86_64")
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    inventory = load_inventory(tmp_path / "inventory.yaml")
    store = Store.in_state_dir(tmp_path / "state")
    store.sync_nodes({n.hostname: n.mac for n in inventory.nodes})
    store.set_netboot("vm1", True, Source.OPERATOR)
    ns, tap = f"pdhcp-q{os.getpid() % 100000}", "tapq0"
    run("ip", "netns", "add", ns)
    server = DhcpServer(inventory, store, tap)
    proc = None
    try:
        run("ip", "-n", ns, "tuntap", "add", tap, "mode", "tap")
        run("ip", "-n", ns, "addr", "add", "10.213.5.1/24", "dev", tap)
        run("ip", "-n", ns, "link", "set", tap, "up")
        with in_netns(ns):
            server.start()
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, qemu, "-accel", "tcg", "-m", "256", "-smp", "1",
             "-display", "none", "-serial", "null", "-monitor", "none",
             "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
             "-device", f"e1000,netdev=n0,mac={MAC}", "-boot", "n", "-no-reboot"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 90
        while store.node("vm1").state is not State.PXE and time.monotonic() < deadline:
            assert proc.poll() is None, "QEMU exited"
            time.sleep(0.5)
    finally:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)
        server.stop()
        run("ip", "netns", "del", ns, check=False)
    lease = store.lease_for(MAC)
    assert lease is not None and lease.ip == "10.213.5.11"
    pxe = [e for e in store.events(hostname="vm1") if e.kind == "state:pxe"]
    assert pxe and pxe[0].detail["boot_file"] == f"http://10.213.5.1:8080/boot/{MAC}.ipxe"
