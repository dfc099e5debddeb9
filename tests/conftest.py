"""Shared test fixtures."""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.tftp import native

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The OpenStack controller test (~15-28 min) runs only when asked for by name (`-m openstack`,
    `make test-openstack`): a `-m` given on the command line replaces the `not openstack` of
    pyproject's addopts, and `-m "not qemu"` must not start it."""
    if "openstack" in (config.option.markexpr or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("openstack")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("openstack")]


# The network namespaces the tests' own helpers create, each name carrying the creating
# pytest's PID (mod 100000): netlab.veth_pair (`<prefix>-s|c<pid><tag>`), relaylab.relay_lab,
# serve/firmware_lab, dhcp/test_dhcp_qemu and agent/gluster_lab. Their bridges, veths and taps
# live inside them and go with them. The lab's (`plab-<pid>`, host taps `pt<pid>n<i>`) are
# provisiond.lab.network's to sweep. A name that matches none of these is never touched.
TEST_NAMESPACE = re.compile(
    r"(?:(?:pdhcp|psrv|pdoc|pdh|pos)-[sc]|prl-[src]|pdhcp-q|pfw-|agsrv|ag)(\d+)(?:[a-z]+|n\d+)?")


def _live_pid_tails() -> set[int]:
    """Every live PID mod 100000 (what the test names embed)."""
    return {int(entry.name) % 100000 for entry in Path("/proc").iterdir() if entry.name.isdigit()}


def sweep_test_networks() -> list[str]:
    """Remove the namespaces (with what is in them) that test runs killed before their cleanup
    left behind: only this project's test names, and only when no live process has the PID in
    the name (a parallel run's are its own). Returns what was removed."""
    from pyroute2 import netns

    from provisiond.lab.network import sweep as sweep_labs

    live = _live_pid_tails()
    removed = []
    for name in netns.listnetns():
        match = TEST_NAMESPACE.fullmatch(name)
        if match and int(match.group(1)) not in live:
            try:
                netns.remove(name)
            except OSError:  # gone meanwhile (another run's sweep)
                continue
            removed.append(name)
    return removed + sweep_labs()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Leftovers of killed runs would collide with this run's names (same PID later) and
    accumulate; they go first (root only: nothing to sweep without it)."""
    if os.geteuid() == 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for name in sweep_test_networks():
            if reporter is not None:
                reporter.write_line(f"swept {name} (left by a test run that is gone)")


@pytest.fixture(autouse=True)
def no_bmc_claim_left_behind() -> Iterator[None]:
    """A test must not leave a BMC claimed in this process (an IpmiDriver neither closed nor
    dropped): the claim is keyed by address and port, so a later test's BMC on that port would
    answer "an earlier operation on this BMC is still running". The leak fails the test that
    leaked it. A call abandoned at its deadline keeps its claim until pyghmi gives up (a few
    seconds, its BMC may be gone by now): waited for, bounded."""
    yield
    claim = sys.modules.get("provisiond.power.claim")
    if claim is None or not claim.claimed():
        return
    gc.collect()  # a dropped driver kept alive by a reference cycle (an exception's frames)
    deadline = time.monotonic() + 30
    while (left := claim.claimed()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"BMC claims left behind by this test: {left} (close every power driver)"


def require_root() -> None:
    """Skip (with the reason) where the capability is truly absent: not root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces / bridges / privileged ports)")


def require_program(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        pytest.skip(f"{name} is not installed (make test installs it from deps/apt/)")
    return path


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a process this test started, by its PID: SIGTERM, `grace` seconds to exit, then
    SIGKILL (bounded: a process that ignores both is left to the kernel after 5 s more)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# The smallest site block of the lab network (10.213.0.0/24, provisiond at .1).
LAB_SITE_YAML = """\
site:
  name: lab
  domain: lab.example
  network: 10.213.0.0/24
  gateway: 10.213.0.1
  server: 10.213.0.1
  dns: [10.213.0.1]
  os: debian12
"""

PAPER_COMPUTE_DISK = 250_059_350_016  # WD2502ABYS (Table 2): 488,397,168 sectors
PAPER_CONTROLLER_DISK = 80_000_000_000  # an 80 GB disk (Table 3)

SITE_YAML = """\
site:
  name: lab
  domain: lab.example
  network: 10.213.0.0/24
  gateway: 10.213.0.1
  dns: [10.213.0.1]
  server: 10.213.0.1
  os: debian12
  ntp: [10.213.0.1, ntp.lab.example]
  root_password_hash: $6$NTD9RTgBuEBLAtYO$fViymCfiMzQAshwklT09UqAbc4NjMjHujAJtk4W9c4G7UPpRurGuIJtNxbGZyfSOcCQ2LaHgpmn8x1uF1WM0t/
  ssh_authorized_keys:
    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5mQ2w1b3Z6c2R0dGVzdGtleXByb3Zpc2lvbmQx operator@lab
"""

NODES_YAML = """\
nodes:
  - hostname: controller
    mac: 52:54:00:10:00:10
    role: controller
    ip: 10.213.0.10
    disk: {device: sda, size: 80G}
    bmc: {address: 127.0.0.1, port: 6230, username: admin, password_file: bmc.pass}
  - hostname: compute1
    mac: 52:54:00:10:00:11
    role: compute
    ip: 10.213.0.11
    disk: {device: sda, size: 488397168s}
    bmc: {address: 127.0.0.1, port: 6231, username: admin, password_file: bmc.pass}
  - hostname: compute2
    mac: 52:54:00:10:00:12
    role: compute
    ip: 10.213.0.12
    os: rocky9
    disk: {device: sda, size: 250G}
    bmc: {address: 127.0.0.1, port: 6232, username: admin, password_file: bmc.pass}
"""


@pytest.fixture
def write_inventory(tmp_path: Path):
    """Write an inventory (YAML text) next to a BMC password file; return its path."""

    def write(text: str = SITE_YAML + NODES_YAML, name: str = "inventory.yaml") -> Path:
        (tmp_path / "bmc.pass").write_text("secret-bmc-password\n")
        (tmp_path / "bmc.pass").chmod(0o600)
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def inventory(write_inventory):
    from provisiond.inventory import load_inventory

    return load_inventory(write_inventory())


@pytest.fixture(params=["native", "python"])
def engine(request: pytest.FixtureRequest) -> str:
    """Where TFTP transfers run: the native sender (the default), or the Python loop (the
    fallback when it is not built). Tests that take this fixture run with both."""
    if request.param == "native" and native.load() is None:
        pytest.fail(f"the native TFTP sender {native.LIBRARY} is not built: install the "
                    "project with a C compiler present (make deps does)")
    return request.param
