"""Names published to a real BIND by RFC 2136 updates with TSIG (acceptance of issue 16)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from bindlab import (  # noqa: F401  (the `bind` fixture)
    KEY_NAME,
    RELAYED_REVERSE,
    ZONE,
    Bind,
    bind_fixture,
    dns_site_yaml,
)

from provisiond import nodes
from provisiond.dns import publish
from provisiond.inventory import load_inventory

pytestmark = pytest.mark.timeout(120)

NODE = "  - {{hostname: {name}, mac: '52:54:00:10:00:{octet:02x}', role: compute, ip: 10.213.0.{octet}}}\n"


def write_inventory(path: Path, server: Bind, hosts: dict[str, int], key_file: Path | None = None) -> Path:
    text = dns_site_yaml(server, key_file)
    text += "".join(NODE.format(name=name, octet=octet) for name, octet in hosts.items())
    path.write_text(text)
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "provisiond", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_provisioned_node_gets_a_and_ptr_then_loses_them_when_removed(bind, tmp_path):
    inventory_file = write_inventory(tmp_path / "inventory.yaml", bind, {"node1": 11, "node2": 12})
    inventory = load_inventory(inventory_file)
    store = nodes.open_store(tmp_path / "state", inventory)
    publisher = publish.NamePublisher(store, inventory)
    assert publisher.step() == []  # nothing happened yet: nothing published

    # node1 goes through its install; the lifecycle's state events publish it, not node2
    nodes.provision(store, "node1")
    nodes.installer_callback(store, "node1", "install-started", "10.213.0.11")
    nodes.installer_callback(store, "node1", "install-finished", "10.213.0.11")
    sent = publisher.step()
    assert {o.change.describe() for o in sent} == {
        "add node1.lab.example A 10.213.0.11", "add 11.0.213.10.in-addr.arpa PTR node1.lab.example."}
    assert all(o.error is None for o in sent)
    assert bind.dig("node1.lab.example", "A") == ["10.213.0.11"]
    assert bind.dig("11.0.213.10.in-addr.arpa", "PTR") == ["node1.lab.example."]
    assert bind.dig("node2.lab.example", "A") == []
    kinds = [e.kind for e in store.events(hostname="node1")]
    assert kinds.count("dns:add") == 2

    # node1 leaves the inventory: the store's "removed" event withdraws its names
    smaller = load_inventory(write_inventory(inventory_file, bind, {"node2": 12}))
    publisher.inventory = smaller
    nodes.sync(store, smaller)
    removed = publisher.step()
    assert {o.change.describe() for o in removed} == {
        "remove node1.lab.example A 10.213.0.11", "remove 11.0.213.10.in-addr.arpa PTR node1.lab.example."}
    assert bind.dig("node1.lab.example", "A") == []
    assert bind.dig("11.0.213.10.in-addr.arpa", "PTR") == []
    assert bind.dig("node1.lab.example", "TXT") == []  # the ownership marker went with them
    assert bind.dig("ns1.lab.example", "A") == ["10.213.0.1"]  # the zone's own names untouched


def test_dns_sync_reconciles_and_a_second_sync_changes_nothing(bind, tmp_path):
    inventory_file = write_inventory(tmp_path / "inventory.yaml", bind, {"node1": 11, "node2": 12})
    state = ["--state-dir", str(tmp_path / "state"), "--inventory", str(inventory_file)]

    dry = cli(*state, "dns", "sync", "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] is True and len(planned["changes"]) == 4
    assert bind.dig("node1.lab.example", "A") == []  # a dry run changes nothing

    first = cli(*state, "dns", "sync", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "add node2.lab.example A 10.213.0.12" in first.stdout
    assert bind.dig("node2.lab.example", "A") == ["10.213.0.12"]
    assert bind.dig("12.0.213.10.in-addr.arpa", "PTR") == ["node2.lab.example."]

    again = cli(*state, "dns", "sync", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changes"] == []

    # node2 moves to another address, node1 leaves the inventory
    write_inventory(inventory_file, bind, {"node2": 22})
    moved = cli(*state, "dns", "sync", "--json", cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    actions = {(c["action"], c["name"], c["type"]) for c in json.loads(moved.stdout)["changes"]}
    assert actions == {("update", "node2.lab.example", "A"), ("add", "22.0.213.10.in-addr.arpa", "PTR"),
                       ("remove", "12.0.213.10.in-addr.arpa", "PTR"), ("remove", "node1.lab.example", "A"),
                       ("remove", "11.0.213.10.in-addr.arpa", "PTR")}
    assert bind.dig("node2.lab.example", "A") == ["10.213.0.22"]
    assert bind.dig("node1.lab.example", "A") == []
    assert bind.dig("12.0.213.10.in-addr.arpa", "PTR") == []


def test_a_name_someone_else_holds_is_left_alone(bind, tmp_path):
    bind.nsupdate(f"zone {ZONE}\nupdate add node1.{ZONE}. 300 A 10.213.0.99")
    inventory = load_inventory(write_inventory(tmp_path / "inventory.yaml", bind, {"node1": 11}))
    report = publish.sync(inventory)
    assert any("node1.lab.example exists without provisiond's marker" in c for c in report.plan.conflicts)
    assert bind.dig("node1.lab.example", "A") == ["10.213.0.99"]
    assert publish.sync(inventory).plan.changes == ()  # the PTR went in; the A stays someone else's


def test_a_wrong_key_is_reported_clearly_and_never_shown(bind, tmp_path):
    wrong = tmp_path / "wrong.key"
    secret = "c2VjcmV0LXRoYXQtYmluZC1kb2VzLW5vdC1rbm93LTMyYnl0ZXM="
    wrong.write_text(f'key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{secret}"; }};\n')
    inventory_file = write_inventory(tmp_path / "inventory.yaml", bind, {"node1": 11}, key_file=wrong)
    state = ["--state-dir", str(tmp_path / "state"), "--inventory", str(inventory_file)]
    result = cli(*state, "dns", "sync", cwd=tmp_path)
    assert result.returncode == 1
    assert "BADSIG" in result.stderr and KEY_NAME in result.stderr
    assert "secret or algorithm differs" in result.stderr
    assert secret not in result.stdout + result.stderr

    unknown = tmp_path / "unknown.key"
    unknown.write_text(f'key "not-{KEY_NAME}" {{ algorithm hmac-sha256; secret "{secret}"; }};\n')
    write_inventory(inventory_file, bind, {"node1": 11}, key_file=unknown)
    result = cli(*state, "dns", "sync", cwd=tmp_path)
    assert result.returncode == 1 and "BADKEY" in result.stderr
    assert "does not know key" in result.stderr
    assert bind.dig("node1.lab.example", "A") == []


@pytest.mark.parametrize("bind", [False], indirect=True)
def test_a_refused_update_is_an_event_not_a_crash(bind, tmp_path):
    """The key may transfer the reverse zone but not update it: the A goes in, the PTR is refused."""
    inventory = load_inventory(write_inventory(tmp_path / "inventory.yaml", bind, {"node1": 11}))
    store = nodes.open_store(tmp_path / "state", inventory)
    report = publish.sync(inventory, store=store)
    failed = [o for o in report.outcomes if o.error]
    assert not report.ok and len(failed) == 1 and failed[0].change.rtype == "PTR"
    assert "REFUSED" in failed[0].error
    events = [e for e in store.events(hostname="node1") if e.kind == "dns:failed"]
    assert len(events) == 1 and "REFUSED" in events[0].detail["error"]
    assert bind.dig("node1.lab.example", "A") == ["10.213.0.11"]


def test_dns_sync_names_the_nodes_of_relayed_networks(bind, tmp_path):
    """Every network of the site gets its names: a relayed network's node gets its A record
    in the site's zone (its network has no domain of its own) and its PTR in that network's
    reverse zone; a relayed network with a domain of its own that BIND does not serve is
    reported, never a crash."""
    inventory_file = write_inventory(tmp_path / "inventory.yaml", bind, {"node1": 11})
    text = inventory_file.read_text().replace(
        "  dns_update:", "  networks:\n    - {network: 10.214.0.0/24, gateway: 10.214.0.1}\n  dns_update:")
    text += "  - {hostname: rack2n1, mac: '52:54:00:10:01:15', role: compute, ip: 10.214.0.21}\n"
    inventory_file.write_text(text)
    state = ["--state-dir", str(tmp_path / "state"), "--inventory", str(inventory_file)]
    first = cli(*state, "dns", "sync", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert bind.dig("rack2n1.lab.example", "A") == ["10.214.0.21"]
    assert bind.dig("21.0.214.10.in-addr.arpa", "PTR") == ["rack2n1.lab.example."]
    assert bind.dig("11.0.213.10.in-addr.arpa", "PTR") == ["node1.lab.example."]
    again = cli(*state, "dns", "sync", "--json", cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)["changes"] == [], again.stderr

    inventory_file.write_text(text.replace("gateway: 10.214.0.1}", "gateway: 10.214.0.1, domain: rack2.example}"))
    other = cli(*state, "dns", "sync", cwd=tmp_path)
    assert other.returncode != 0
    assert "rack2.example" in other.stdout + other.stderr and "Traceback" not in other.stderr


def test_a_relayed_nodes_names_in_its_networks_domain_come_and_go_with_it(bind, tmp_path):
    """serve's publisher, for a node of a relayed network with a domain of its own (inside the
    site's zone): published when installed, withdrawn (A, PTR, marker) when it leaves."""
    inventory_file = write_inventory(tmp_path / "inventory.yaml", bind, {"node1": 11})
    base = inventory_file.read_text().replace(
        "  dns_update:", "  networks:\n    - {network: 10.214.0.0/24, gateway: 10.214.0.1, "
        "domain: rack2.lab.example}\n  dns_update:")
    inventory_file.write_text(base + "  - {hostname: r2n1, mac: '52:54:00:10:01:15', role: compute, "
                              "ip: 10.214.0.21}\n")
    inventory = load_inventory(inventory_file)
    store = nodes.open_store(tmp_path / "state", inventory)
    publisher = publish.NamePublisher(store, inventory)
    nodes.provision(store, "r2n1")
    nodes.installer_callback(store, "r2n1", "install-started", "10.214.0.21")
    nodes.installer_callback(store, "r2n1", "install-finished", "10.214.0.21")
    assert all(o.error is None for o in publisher.step())
    assert bind.dig("r2n1.rack2.lab.example", "A") == ["10.214.0.21"]
    assert bind.dig("21.0.214.10.in-addr.arpa", "PTR") == ["r2n1.rack2.lab.example."]

    inventory_file.write_text(base)
    smaller = load_inventory(inventory_file)
    publisher.inventory = smaller
    nodes.sync(store, smaller)
    assert {o.change.describe() for o in publisher.step()} == {
        "remove r2n1.rack2.lab.example A 10.214.0.21",
        "remove 21.0.214.10.in-addr.arpa PTR r2n1.rack2.lab.example."}
    assert bind.dig("r2n1.rack2.lab.example", "A") == []
    assert bind.dig("r2n1.rack2.lab.example", "TXT") == []
    assert bind.dig("21.0.214.10.in-addr.arpa", "PTR") == []


def test_a_sync_sends_its_updates_over_one_connection_and_reconnects_when_closed(bind, tmp_path,
                                                                                 monkeypatch):
    """Six changes, one TCP connection (the AXFRs have their own). When the connection is
    closed between two updates (as a server does to an idle client), the next update goes
    over a new connection and nothing is lost."""
    from provisiond.dns import client as dns_client

    opened = []
    real_connect = dns_client.socket.create_connection

    def counting(*args, **kwargs):
        opened.append(real_connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(dns_client.socket, "create_connection", counting)
    inventory = load_inventory(write_inventory(tmp_path / "inventory.yaml", bind,
                                               {"node1": 11, "node2": 12, "node3": 13}))
    report = publish.sync(inventory)
    assert report.ok and len(report.outcomes) == 6 and len(opened) == 1
    assert bind.dig("node3.lab.example", "A") == ["10.213.0.13"]

    zones = publish.site_zones(inventory.site)
    client = publish.client_for(zones)
    bigger = load_inventory(write_inventory(tmp_path / "inventory.yaml", bind,
                                            {"node1": 11, "node2": 12, "node3": 13, "node4": 14, "node5": 15}))
    changes = publish.make_plan(bigger, zones, publish.read_zones(client, zones)).changes
    assert len(changes) == 4
    with client.connection():
        client.update(publish.update_message(changes[0], zones.site, 300, client.signing_key), "first")
        opened[-1].shutdown(socket.SHUT_WR)  # the server sees the connection end
        for change in changes[1:]:
            client.update(publish.update_message(change, zones.site, 300, client.signing_key), "next")
    assert len(opened) == 3
    assert bind.dig("node5.lab.example", "A") == ["10.213.0.15"]
    assert bind.dig("14.0.213.10.in-addr.arpa", "PTR") == ["node4.lab.example."]
    assert publish.sync(bigger).plan.changes == ()


@pytest.fixture(autouse=True)
def _dig_present():
    if shutil.which("dig") is None:
        pytest.skip("dig is not installed (deps/apt/dns.txt)")


def test_doctor_checks_the_server_and_the_key(bind, tmp_path):
    from provisiond.config import Config
    from provisiond.doctor.run import DoctorOptions, run_doctor

    inventory_file = write_inventory(tmp_path / "inventory.yaml", bind, {"node1": 11})
    config = Config(inventory=inventory_file, state_dir=tmp_path / "state")
    only_dns = DoctorOptions(skip=frozenset({"port", "assets", "answers", "bmc"}))
    results = [r for r in run_doctor(config, only_dns).results if r.check == "dns"]
    assert [(r.subject, r.status.value) for r in results] == [(ZONE, "ok"), ("0.213.10.in-addr.arpa", "ok")]

    # A relayed network: its reverse zone is checked too.
    relayed = inventory_file.read_text().replace(
        "  dns_update:", "  networks:\n    - {network: 10.214.0.0/24, gateway: 10.214.0.1}\n  dns_update:")
    inventory_file.write_text(relayed)
    results = [r for r in run_doctor(config, only_dns).results if r.check == "dns"]
    assert [(r.subject, r.status.value) for r in results] == [
        (ZONE, "ok"), ("0.213.10.in-addr.arpa", "ok"), (RELAYED_REVERSE, "ok")]

    wrong = tmp_path / "wrong.key"
    wrong.write_text(f'key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "c2VjcmV0LXRoYXQtYmluZC1kb2VzLW5vdC1rbm93"; }};\n')
    write_inventory(inventory_file, bind, {"node1": 11}, key_file=wrong)
    report = run_doctor(config, only_dns)
    failed = [r for r in report.results if r.check == "dns" and r.status.value == "fail"]
    assert len(failed) == 2 and all("BADSIG" in r.message for r in failed)
    assert report.exit_code == 1


def test_dns_sync_without_dns_update_says_what_to_add(tmp_path):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(dns_site_yaml(None) + NODE.format(name="node1", octet=11))
    result = cli("--inventory", str(inventory), "--state-dir", str(tmp_path / "state"), "dns", "sync", cwd=tmp_path)
    assert result.returncode == 1
    assert "no dns_update section" in result.stderr and "docs/dns.md" in result.stderr
