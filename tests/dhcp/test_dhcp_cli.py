"""`provisiond dhcp` as an operator runs it: a process in the server namespace, stopped by
SIGTERM, serving a real client in between."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dhcp_lab import udhcpc, veth_lab

from provisiond.store import Store

INVENTORY = """\
site:
  name: lab
  domain: lab.example
  network: 10.213.2.0/24
  gateway: 10.213.2.1
  dns: [10.213.2.1]
  server: 10.213.2.1
nodes:
  - {hostname: cli1, mac: "52:54:00:d3:00:01", role: compute, ip: 10.213.2.11}
"""


@pytest.mark.root
def test_dhcp_command_serves_until_sigterm(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    state = tmp_path / "state"
    with veth_lab("c", ("10.213.2.1/24",)) as lab:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.server_ns, sys.executable, "-m", "provisiond",
             "--inventory", str(tmp_path / "inventory.yaml"), "--state-dir", str(state),
             "dhcp", "--interface", lab.server_if],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # printed once the server is bound
            assert f"DHCP on {lab.server_if} for 1 nodes" in first, first
            lab.set_client_mac("52:54:00:d3:00:01")
            env = udhcpc(lab, tmp_path / "client")
            assert env is not None and env["ip"] == "10.213.2.11" and env["hostname"] == "cli1"
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            output, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, output
    assert "DHCP stopped (ack 1, offer 1" in output
    lease = Store.in_state_dir(state).lease_for("52:54:00:d3:00:01")
    assert lease is not None and lease.ip == "10.213.2.11" and lease.expires > time.time()


@pytest.mark.root
def test_dhcp_command_refuses_a_wrong_interface(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    with veth_lab("w", ("192.168.77.1/24",)) as lab:
        result = subprocess.run(
            ["ip", "netns", "exec", lab.server_ns, sys.executable, "-m", "provisiond",
             "--inventory", str(tmp_path / "inventory.yaml"), "--state-dir", str(tmp_path / "s"),
             "dhcp", "--interface", lab.server_if],
            capture_output=True, text=True, timeout=30,
        )
    assert result.returncode == 1
    assert "is not on the site network 10.213.2.0/24 (it has 192.168.77.1/24)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--pool", "10.0.0.9"], "dynamic pool '10.0.0.9' is not a range: write FIRST-LAST"),
        (["--pool", "10.0.0.9-10.0.0.1"], "the last address is before the first"),
        (["--lease-time", "5"], "--lease-time 5 is too short"),
    ],
)
def test_dhcp_command_rejects_bad_options(tmp_path: Path, arguments: list[str], message: str) -> None:
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    result = subprocess.run(
        [sys.executable, "-m", "provisiond", "--inventory", str(tmp_path / "inventory.yaml"),
         "--state-dir", str(tmp_path / "s"), "dhcp", "--interface", "lo", *arguments],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode in (1, 2)
    assert message in result.stderr and "Traceback" not in result.stderr
