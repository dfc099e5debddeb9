"""proxyDHCP beside the site's dnsmasq on the same host never takes dnsmasq's unicast traffic.

Both servers listen on UDP port 67 of one interface and one address. A broadcast reaches every
socket bound to the port, but a unicast datagram goes to one socket only, and which one the
kernel picks among equal wildcard bindings (the last one bound, or the one last used on this
CPU) must not matter. So in both start orders, with loopback up and down, a client's unicast
renewal must be answered by dnsmasq from the first datagram: the broadcast retry that would
hide a lost unicast is dropped by nftables in the server's namespace until dnsmasq has answered,
and provisiond's port 67 socket must not have seen a datagram meanwhile. PXE clients still get
provisiond's boot offer. (Before provisiond bound its proxy socket to the broadcast address,
the dnsmasq-first cases failed: the last-bound wildcard socket, provisiond's, took the renewal.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import require_program, stop_process
from dhcp_lab import Lab, in_netns, offers_to, pxe_discover, start_dnsmasq, veth_lab
from netlab import run

from provisiond.dhcp.options import Opt
from provisiond.dhcp.server import DhcpServer
from provisiond.inventory import load_inventory
from provisiond.lifecycle import Source
from provisiond.store import Store

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

# One address for both: the usual single-host set-up (dnsmasq and provisiond answer as 10.213.1.1).
INVENTORY = """\
site:
  name: lab
  domain: lab.example
  network: 10.213.1.0/24
  gateway: 10.213.1.1
  server: 10.213.1.1
nodes:
  - {hostname: pxe1, mac: "52:54:00:d3:00:01", role: compute, ip: 10.213.1.11}
"""
PXE_MAC, PLAIN_MAC = "52:54:00:d3:00:01", "52:54:00:d3:00:02"
RENEW_LIMIT = 15.0  # seconds: a bound; dnsmasq answers a renewal it receives at once


class Udhcpc:
    """busybox udhcpc running in the client namespace; its script records each event and
    puts the bound address on the interface (so it renews by unicast from it)."""

    def __init__(self, lab: Lab, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        script = workdir / "script"
        script.write_text(
            "#!/bin/sh\n"
            'case "$1" in bound) ip addr replace "$ip/$subnet" dev "$interface";; esac\n'
            f'env > "{workdir}/$1.env.tmp" && mv "{workdir}/$1.env.tmp" "{workdir}/$1.env"\n'
            "exit 0\n")
        script.chmod(0o755)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.client_ns, require_program("busybox"), "udhcpc", "-f", "-v",
             "-i", lab.client_if, "-T", "2", "-t", "5", "-A", "1", "-s", str(script)],
            stdout=(workdir / "udhcpc.log").open("wb"), stderr=subprocess.STDOUT)

    def event(self, name: str, limit: float) -> dict[str, str] | None:
        path = self.workdir / f"{name}.env"
        deadline = time.monotonic() + limit
        while not path.exists() and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.1)
        if not path.exists():
            return None
        return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)

    def renew(self) -> None:
        (self.workdir / "renew.env").unlink(missing_ok=True)
        os.kill(self.proc.pid, signal.SIGUSR1)  # busybox: renew now, by unicast to the server

    def stop(self) -> None:
        stop_process(self.proc, grace=5)


def drop_broadcast_dhcp(lab: Lab, table: str, drop: bool) -> None:
    """nftables in the server namespace: drop (or stop dropping) broadcasts to port 67."""
    nft = require_program("nft")
    if drop:
        run("ip", "netns", "exec", lab.server_ns, nft, "-f", "-", input=(
            f"table inet {table} {{\n chain input {{\n  type filter hook input priority 0;\n"
            "  ip daddr 255.255.255.255 udp dport 67 drop\n }\n}\n"))
    else:
        run("ip", "netns", "exec", lab.server_ns, nft, "delete", "table", "inet", table)


@pytest.fixture(params=["dnsmasq-first", "provisiond-first"])
def start_order(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("loopback", ["up", "down"])
def test_unicast_renewal_reaches_dnsmasq_and_pxe_gets_the_boot_offer(
    start_order: str, loopback: str, tmp_path: Path,
) -> None:
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    inventory = load_inventory(tmp_path / "inventory.yaml")
    store = Store.in_state_dir(tmp_path / "state")
    store.sync_nodes({n.hostname: n.mac for n in inventory.nodes})
    store.set_netboot("pxe1", True, Source.OPERATOR)
    order = ["dnsmasq", "provisiond"] if start_order == "dnsmasq-first" else ["provisiond", "dnsmasq"]
    tag = f"{'d' if start_order == 'dnsmasq-first' else 'p'}{loopback[0]}"
    with veth_lab(tag, ("10.213.1.1/24",)) as lab:
        run("ip", "-n", lab.server_ns, "link", "set", "lo", loopback)
        server = DhcpServer(inventory, store, lab.server_if, proxy=True)
        started: list[subprocess.Popen[bytes]] = []
        client: Udhcpc | None = None
        try:
            for which in order:
                if which == "dnsmasq":
                    started.append(start_dnsmasq(lab, tmp_path))
                else:
                    with in_netns(lab.server_ns):
                        server.start()
            lab.set_client_mac(PLAIN_MAC)
            client = Udhcpc(lab, tmp_path / "udhcpc")
            bound = client.event("bound", RENEW_LIMIT)
            assert bound is not None, (tmp_path / "dnsmasq.log").read_text()
            assert bound["serverid"] == "10.213.1.1" and bound["ip"].startswith("10.213.1.1")

            # The renewal: one unicast to 10.213.1.1:67, while broadcasts to port 67 are dropped,
            # so a REQUEST dnsmasq logs now can only be that unicast.
            received = server.stats["received"]
            dnsmasq_log = tmp_path / "dnsmasq.log"
            acks = dnsmasq_log.read_text().count("DHCPACK(")
            drop_broadcast_dhcp(lab, f"renew{os.getpid()}", drop=True)
            try:
                client.renew()
                deadline = time.monotonic() + RENEW_LIMIT
                while dnsmasq_log.read_text().count("DHCPACK(") == acks and time.monotonic() < deadline:
                    time.sleep(0.1)
            finally:
                drop_broadcast_dhcp(lab, f"renew{os.getpid()}", drop=False)
            log = dnsmasq_log.read_text()
            udhcpc_log = (tmp_path / "udhcpc" / "udhcpc.log").read_text()
            assert log.count("DHCPACK(") > acks, f"dnsmasq did not answer the unicast renewal\n{log}\n{udhcpc_log}"
            renewal_ack = [line for line in log.splitlines() if "DHCPACK(" in line][acks]
            assert f"{bound['ip']} {PLAIN_MAC}" in renewal_ack
            assert "sending renew to server 10.213.1.1" in udhcpc_log  # it was a unicast
            assert server.stats["received"] == received  # provisiond never saw it
            # The client keeps its lease (busybox may miss an ACK that beats the close of its
            # sending socket, then its broadcast retry, now let through, gets the answer).
            renewed = client.event("renew", RENEW_LIMIT)
            assert renewed is not None and renewed["ip"] == bound["ip"], udhcpc_log
            client.stop()

            # A PXE client gets dnsmasq's address offer and provisiond's boot offer.
            lab.set_client_mac(PXE_MAC)
            offers = offers_to(lab, pxe_discover(PXE_MAC))
            boot = [offer for offer in offers if offer.file]
            address = [offer for offer in offers if offer.yiaddr != offer.siaddr and not offer.file]
            assert len(boot) == 1 and boot[0].file == b"undionly.kpxe", offers
            assert str(boot[0].yiaddr) == "0.0.0.0" and boot[0].options[Opt.VENDOR_CLASS] == b"PXEClient"
            assert address and str(address[0].yiaddr).startswith("10.213.1.1"), offers
        finally:
            if client is not None:
                client.stop()
            server.stop()
            for proc in started:
                stop_process(proc, grace=5)
