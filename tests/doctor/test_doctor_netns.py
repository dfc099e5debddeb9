"""Doctor on a real segment: two namespaces joined by a veth pair (no uplink).

provisiond's side has 10.213.0.1 (site.server); the other side has 10.213.0.2, where a real
dnsmasq may answer DHCP and a virtual BMC (IPMI over UDP) answers for node1. node2's BMC
(10.213.0.3) does not exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML, require_program, stop_process
from netlab import VethPair, veth_pair

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

PASSWORD = "doctor-bmc-pw"
RELAYED = "  networks:\n    - {network: 10.214.0.0/24, gateway: 10.214.0.1}\n"  # served at site.server
NODES = """\
nodes:
  - hostname: node1
    mac: '52:54:00:10:00:11'
    role: compute
    ip: 10.213.0.11
    bmc: {address: 10.213.0.2, port: 623, username: admin, password_file: bmc.pass}
  - hostname: node2
    mac: '52:54:00:10:00:12'
    role: compute
    ip: 10.213.0.12
    bmc: {address: 10.213.0.3, port: 623, username: admin, password_file: bmc.pass}
"""


def _wait_for(path: Path, text: str, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while text not in path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{proc.args[4:6]} did not start: {path.read_text()[-1500:]}")
        time.sleep(0.1)


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[tuple[VethPair, Path]]:
    """The segment, the inventory, and node1's virtual BMC on the far side."""
    (tmp_path / "bmc.pass").write_text(PASSWORD + "\n")
    (tmp_path / "inventory.yaml").write_text(LAB_SITE_YAML + RELAYED + NODES)
    with veth_pair("pdoc", "a", ["10.213.0.1/24"], ["10.213.0.2/24"]) as pair:
        log = tmp_path / "vbmc.log"
        with log.open("w") as out:
            bmc = subprocess.Popen(["ip", "netns", "exec", pair.client_ns, sys.executable, "-m", "provisiond",
                                    "vbmc", "--address", "10.213.0.2", "--port", "623", "--username", "admin",
                                    "--password-file", str(tmp_path / "bmc.pass")],
                                   stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for(log, "listening on", bmc)
            yield pair, tmp_path
        finally:
            stop_process(bmc)


def doctor(pair: VethPair, directory: Path, *extra: str) -> tuple[int, dict]:
    result = subprocess.run(
        ["ip", "netns", "exec", pair.server_ns, sys.executable, "-m", "provisiond",
         "--inventory", str(directory / "inventory.yaml"), "--state-dir", str(directory / "state"),
         "doctor", "--interface", pair.server_if, "--json", "--probe-seconds", "3", "--bmc-timeout", "2",
         "--skip", "dns", *extra],
        capture_output=True, text=True, timeout=180)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def by_check(report: dict, check: str) -> dict[str, dict]:
    return {r["subject"]: r for r in report["results"] if r["check"] == check}


def test_doctor_finds_the_rogue_dhcp_server_and_the_dead_bmc(segment):
    pair, directory = segment
    dnsmasq = require_program("dnsmasq")

    code, report = doctor(pair, directory)
    rogue = by_check(report, "rogue-dhcp")[pair.server_if]
    assert rogue["status"] == "ok" and "no other DHCP server answered" in rogue["message"]
    assert by_check(report, "interface")[pair.server_if]["status"] == "ok"
    assert by_check(report, "relay")["10.214.0.0/24"]["status"] == "ok"
    bmcs = by_check(report, "bmc")
    assert bmcs["node1"]["status"] == "ok"  # the live BMC is not held up by the dead one
    assert bmcs["node2"]["status"] == "fail" and "10.213.0.3" in bmcs["node2"]["message"]
    assert PASSWORD not in json.dumps(report)
    assert code == 1  # the dead BMC fails the preflight

    code, report = doctor(pair, directory, "--skip", "bmc")
    assert code == 0, [r for r in report["results"] if r["status"] == "fail"]

    log = (directory / "dnsmasq.log").open("w")
    rogue_server = subprocess.Popen(
        ["ip", "netns", "exec", pair.client_ns, dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null",
         "--port=0", f"--interface={pair.client_if}", "--bind-interfaces", "--no-ping", "--log-dhcp",
         "--log-facility=-", "--dhcp-range=10.213.0.100,10.213.0.150,255.255.255.0,1h",
         f"--dhcp-leasefile={directory / 'dnsmasq.leases'}", f"--pid-file={directory / 'dnsmasq.pid'}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(directory / "dnsmasq.log", "DHCP, IP range", rogue_server)
        code, report = doctor(pair, directory, "--skip", "bmc")
    finally:
        stop_process(rogue_server)
        log.close()
    rogue = by_check(report, "rogue-dhcp")[pair.server_if]
    assert rogue["status"] == "fail", rogue
    assert "another DHCP server answers" in rogue["message"] and "10.213.0.2 (offered 10.213.0." in rogue["message"]
    assert "dhcp_proxy" in rogue["fix"]
    assert code == 1
