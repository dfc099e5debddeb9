"""`provisiond power`, `provision` and `vbmc` end to end against virtual BMCs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML, require_program
from power_farm import (
    PASSWORD,
    Farm,
    VbmcProcess,
    black_holes,
    dead_port,
    fresh_udp_ports,
    running_farm,
)

from provisiond.lifecycle import State
from provisiond.store import Store

HASH = "$6$NTD9RTgBuEBLAtYO$fViymCfiMzQAshwklT09UqAbc4NjMjHujAJtk4W9c4G7UPpRurGuIJtNxbGZyfSOcCQ2LaHgpmn8x1uF1WM0t/"
SITE = LAB_SITE_YAML + f"""\
  ntp: [10.213.0.1]
  timezone: UTC
  root_password_hash: {HASH}
  ssh_authorized_keys: []
nodes:
"""


def node_yaml(i: int, port: int, role: str = "compute", firmware: str = "bios",
              password: str = "password_file: bmc.pass") -> str:
    return (
        f"  - {{hostname: node{i:03d}, mac: '52:54:00:20:{i // 256:02x}:{i % 256:02x}', role: {role}, "
        f"ip: 10.213.0.{10 + i}, firmware: {firmware}, disk: {{device: sda, size: 250G}}, "
        f"bmc: {{address: 127.0.0.1, port: {port}, username: admin, {password}}}}}\n"
    )


def provisiond(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
               timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "provisiond", "--inventory", str(tmp_path / "inventory.yaml"),
         "--state-dir", str(tmp_path / "state"), *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    with running_farm(tmp_path) as running:
        yield running


def write_inventory(tmp_path: Path, lines: list[str]) -> None:
    (tmp_path / "inventory.yaml").write_text(SITE + "".join(lines))


def test_power_all_status_over_200_virtual_bmcs(farm: Farm, tmp_path: Path) -> None:
    ports = [port for port, _ in farm.start(200, per_process=100)]
    write_inventory(tmp_path, [node_yaml(i, port) for i, port in enumerate(ports)])
    out = provisiond(tmp_path, "power", "--all", "status")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("│ node")]
    assert len(rows) == 200
    assert all("│ ok " in row and "│ off " in row for row in rows)
    assert "200 of 200 node(s) succeeded" in out.stdout


def test_provision_marks_nodes_sets_one_time_pxe_and_powers_on(farm: Farm, tmp_path: Path) -> None:
    bmcs = farm.start(3)
    ports = [port for port, _ in bmcs]
    proc = bmcs[0][1]
    lines = [
        node_yaml(0, ports[0], role="controller"),
        node_yaml(1, ports[1], firmware="uefi"),
        node_yaml(2, ports[2], password="password_env: WRONG_BMC_PW"),  # wrong password
        node_yaml(3, dead_port()),  # nobody answers
    ]
    write_inventory(tmp_path, lines)
    (tmp_path / "bmc.pass").write_text(PASSWORD + "\n")
    env = {"WRONG_BMC_PW": "wrong-pw-value"}
    # node001 is on already: provision must power-cycle it into PXE.
    assert provisiond(tmp_path, "power", "node001", "on", env=env).returncode == 0
    # The bound only has to cover a real power cycle on a loaded machine: the dead node is refused
    # at once (nothing listens), the wrong password is rejected at once.
    out = provisiond(tmp_path, "provision", "--all", "--timeout", "30", env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "2 of 4 node(s) succeeded" in out.stdout, out.stdout
    assert "authentication failed" in out.stdout
    assert "unreachable" in out.stdout
    assert PASSWORD not in out.stdout + out.stderr
    assert "wrong-pw-value" not in out.stdout + out.stderr
    assert proc.wait_for(f"127.0.0.1:{ports[0]} boots from network (one-time, bios)")
    assert proc.wait_for(f"127.0.0.1:{ports[1]} power off")  # the cycle
    assert proc.wait_for(f"127.0.0.1:{ports[1]} boots from network (one-time, uefi)")
    assert f"127.0.0.1:{ports[2]} power on" not in proc.output()

    store = Store.in_state_dir(tmp_path / "state")
    nodes = {n.hostname: n for n in store.nodes()}
    for ok in ("node000", "node001"):
        assert nodes[ok].state is State.POWERING_ON
        assert nodes[ok].netboot
        assert store.verify_token(ok, store.current_token(ok))
    for bad in ("node002", "node003"):
        assert nodes[bad].state is State.FAILED
        assert nodes[bad].reason.startswith("power: ")
    events = [(e.hostname, e.kind, e.detail) for e in store.events()]
    assert ("node001", "power:pxe-boot") in [(h, k) for h, k, _ in events]
    pxe = next(d for h, k, d in events if h == "node001" and k == "power:pxe-boot")
    assert pxe["done"] == "one-time PXE (uefi), power cycled"
    assert not any("wrong-pw-value" in str(d) or PASSWORD in str(d) for _, _, d in events)


def test_power_status_of_a_silent_bmc_fails_within_the_timeout(farm: Farm, tmp_path: Path) -> None:
    [(port, _)] = farm.start(1)
    with black_holes(1) as [silent]:
        write_inventory(tmp_path, [node_yaml(0, port), node_yaml(1, silent)])
        (tmp_path / "bmc.pass").write_text(PASSWORD + "\n")
        out = provisiond(tmp_path, "power", "--all", "status", "--timeout", "2")
    assert out.returncode == 1, out.stdout + out.stderr
    rows = {line.split("│")[1].strip(): line for line in out.stdout.splitlines() if "│ node" in line}
    assert "│ ok " in rows["node000"]
    assert "unreachable" in rows["node001"]
    assert f"no IPMI answer from 127.0.0.1:{silent} within 2 s" in out.stdout
    assert "1 of 2 node(s) succeeded" in out.stdout


def test_power_by_name_on_off_and_selection_errors(farm: Farm, tmp_path: Path) -> None:
    ports = [port for port, _ in farm.start(2)]
    write_inventory(tmp_path, [node_yaml(i, port) for i, port in enumerate(ports)])
    (tmp_path / "bmc.pass").write_text(PASSWORD + "\n")
    out = provisiond(tmp_path, "power", "node000", "node001", "on")
    assert out.returncode == 0, out.stdout + out.stderr
    out = provisiond(tmp_path, "power", "--role", "compute", "off")
    assert out.returncode == 0 and out.stdout.count("│ off ") == 2, out.stdout
    events = Store.in_state_dir(tmp_path / "state").events(hostname="node000")
    assert [e.kind for e in events] == ["power:on", "power:off"]
    assert events[1].source == "ipmi" and events[1].detail["power"] == "off"
    out = provisiond(tmp_path, "power", "status")
    assert out.returncode == 1 and "no nodes selected" in out.stderr
    out = provisiond(tmp_path, "power", "nosuchnode", "status")
    assert out.returncode == 1 and "'nosuchnode' is not in" in out.stderr
    out = provisiond(tmp_path, "power", "--all", "status", "--timeout", "0")
    assert out.returncode == 1 and "bad power option" in out.stderr


def test_vbmc_command_serves_ipmi_and_prints_power_changes(tmp_path: Path) -> None:
    tool = require_program("ipmitool")
    password_file = tmp_path / "bmc.pass"
    password_file.write_text(PASSWORD + "\n")
    port = fresh_udp_ports(1)
    proc = VbmcProcess(
        [sys.executable, "-m", "provisiond", "vbmc", "--address", "127.0.0.1", "--port", str(port),
         "--username", "admin", "--password-file", str(password_file)],
        "listening on",
    )
    try:
        out = subprocess.run(
            [tool, "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", "admin",
             "-f", str(password_file), "chassis", "power", "on"],
            capture_output=True, text=True, timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert proc.wait_for(f"127.0.0.1:{port} power on")
        assert proc.wait_for(f"127.0.0.1:{port} boots from disk (no boot override)")
    finally:
        proc.stop()
    assert proc.proc.returncode == 0  # SIGTERM is a clean stop
    assert "vbmc: stopped" in proc.output()
    assert PASSWORD not in proc.output()


def test_vbmc_command_refuses_a_missing_password_file(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "provisiond", "vbmc", "--port", "16230",
         "--password-file", str(tmp_path / "absent")],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert "cannot read the password file" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "provisiond", "vbmc", "--port", "16230", "--password", "x"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2  # no password on the command line: argparse refuses it
    password_file = tmp_path / "bmc.pass"
    password_file.write_text(PASSWORD + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "provisiond", "vbmc", "--port", "16230", "--count", "600",
         "--password-file", str(password_file)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert "--count 600 is out of range" in out.stderr


def test_nodes_without_bmc_or_password_fail_with_the_reason(tmp_path: Path) -> None:
    lines = [
        node_yaml(0, 623, password="password_env: UNSET_BMC_PASSWORD_VAR"),
        node_yaml(1, 623).replace(", bmc: {address: 127.0.0.1, port: 623, username: admin, "
                                  "password_file: bmc.pass}", ""),
    ]
    write_inventory(tmp_path, lines)
    (tmp_path / "bmc.pass").write_text(PASSWORD + "\n")
    env = {k: v for k, v in os.environ.items() if k != "UNSET_BMC_PASSWORD_VAR"}
    out = subprocess.run(
        [sys.executable, "-m", "provisiond", "--inventory", str(tmp_path / "inventory.yaml"),
         "--state-dir", str(tmp_path / "state"), "provision", "--all"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "no password" in out.stdout and "UNSET_BMC_PASSWORD_VAR is not set" in out.stdout
    assert "no BMC" in out.stdout and "has no bmc: section" in out.stdout
    assert "0 of 2 node(s) succeeded" in out.stdout
    store = Store.in_state_dir(tmp_path / "state")
    assert {n.state for n in store.nodes()} == {State.NEW}  # nothing marked without a way to boot it
