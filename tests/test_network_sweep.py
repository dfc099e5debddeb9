"""The session-start sweep (tests/conftest.py): a killed test run's namespaces go, a live
run's and anything not named by this project's tests stay."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import require_program, require_root, sweep_test_networks
from pyroute2 import netns

pytestmark = pytest.mark.root


def test_sweep_removes_a_dead_runs_namespaces_and_nothing_else() -> None:
    require_root()
    require_program("ip")
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = f"psrv-s{finished.pid % 100000}sw"  # netlab.veth_pair's name for a run now gone
    live = f"psrv-c{os.getpid() % 100000}sw"  # this run's own
    foreign = f"psrvx-s{finished.pid % 100000}"  # not a name of the tests' helpers
    names = (dead, live, foreign)
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
        removed = sweep_test_networks()
        present = set(netns.listnetns())
        assert dead in removed and dead not in present
        assert live in present and foreign in present
        assert live not in removed and foreign not in removed
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
