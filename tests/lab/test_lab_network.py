"""The lab network (pyroute2): a namespace with a bridge and taps, gone after removal."""

from __future__ import annotations

import subprocess

import pytest
from conftest import require_root

from provisiond.lab.network import BRIDGE, LabNetwork, namespace_name, sweep

pytestmark = pytest.mark.root


def links(namespace: str) -> str:
    return subprocess.run(["ip", "-n", namespace, "-d", "link", "show"], capture_output=True,
                          text=True, check=True).stdout


def host_links() -> str:
    return subprocess.run(["ip", "link", "show"], capture_output=True, text=True, check=True).stdout


def test_bridge_and_taps_live_in_the_namespace_and_go_with_it() -> None:
    require_root()
    with LabNetwork(tag="net") as network:
        taps = [network.add_tap(), network.add_tap()]
        shown = links(network.name)
        assert BRIDGE in shown
        for tap in taps:
            assert tap in shown and f"master {BRIDGE}" in shown
            assert tap not in host_links()  # moved out of the host namespace
        addresses = network.run("ip", "-4", "-br", "addr", "show", BRIDGE).stdout
        assert "10.213.0.1/24" in addresses
        # No uplink: the only routes are the bridge's own network.
        routes = network.run("ip", "route").stdout.splitlines()
        assert len(routes) == 1 and routes[0].startswith(f"10.213.0.0/24 dev {BRIDGE} "), routes
    assert not network.exists()
    assert network.name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_removal_after_a_failed_step_and_twice_is_safe() -> None:
    require_root()
    network = LabNetwork(tag="twice").create()
    network.add_tap()
    network.remove()
    network.remove()
    assert not network.exists()


def test_a_second_lab_with_the_same_name_is_refused() -> None:
    require_root()
    from provisiond.errors import UserError

    with LabNetwork(tag="dup"), pytest.raises(UserError, match="already exists"):
        LabNetwork(tag="dup").create()


def test_sweep_removes_what_a_killed_run_left_and_keeps_live_labs() -> None:
    require_root()
    finished = subprocess.Popen(["true"])
    finished.wait()
    orphan = LabNetwork(name=namespace_name(finished.pid, "gone")).create()
    with LabNetwork(tag="live") as live:
        removed = sweep()
        assert orphan.name in removed
        assert not orphan.exists()
        assert live.exists()
