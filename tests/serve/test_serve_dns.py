"""End to end: the real `provisiond serve` publishes a node's name once its installer reports
install-finished over HTTP; BIND runs in the server's namespace, `dig` checks the records."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bindlab import running_bind
from conftest import LAB_SITE_YAML
from serve_lab import Served, netns_pair

from provisiond.store import Store

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

SERVER, MAC, IP = "10.213.0.1", "52:54:00:15:00:11", "10.213.0.11"


def test_serve_publishes_the_name_of_a_node_that_finished_its_install(tmp_path: Path) -> None:
    (tmp_path / "tftp").mkdir()
    (tmp_path / "provisiond.toml").write_text("")
    with netns_pair("dns", f"{SERVER}/24", [f"{IP}/24"]) as ns, running_bind(tmp_path, netns=ns.server_ns) as bind:
        (tmp_path / "inventory.yaml").write_text(
            LAB_SITE_YAML + f"  dns_update: {{server: 127.0.0.1, port: {bind.port}, key_file: {bind.key_file}}}\n"
            f"nodes:\n  - {{hostname: node1, mac: '{MAC}', role: compute, ip: {IP}}}\n")
        served = Served(ns, tmp_path, tmp_path / "inventory.yaml", tmp_path / "state", tmp_path / "provisiond.toml",
                        tmp_path / "tftp", SERVER)
        served.start()
        try:
            assert served.cli("netboot", "node1", "on").returncode == 0
            store = Store.in_state_dir(served.state_dir)
            token = store.current_token("node1")
            assert served.post_event(IP, "node1", "install-started", token) == 200
            assert bind.dig("node1.lab.example", "A") == []  # installing: not yet
            assert served.post_event(IP, "node1", "install-finished", token) == 200
            deadline = time.monotonic() + 30  # the publisher follows the events every 2 s
            while bind.dig("node1.lab.example", "A") != [IP]:
                assert time.monotonic() < deadline, served.log()
                time.sleep(0.5)
            assert bind.dig("11.0.213.10.in-addr.arpa", "PTR") == ["node1.lab.example."]
            assert [e.kind for e in store.events(hostname="node1") if e.kind.startswith("dns:")] == ["dns:add"] * 2
            assert bind.key_file.read_text().split('secret "')[1].split('"')[0] not in served.log()
        finally:
            served.stop()
