"""The container harness the controller test stands on: it boots, has no uplink, can hold the
`nova-volumes` VG on a loop device, and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import require_program, require_root
from netlab import veth_pair
from nspawn import LoopDevice, Timings, _remove_tree, base_root, booted, make_volume_group

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]


def mounts_below(path: Path) -> list[str]:
    return [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(path))]


def test_container_boots_isolated_holds_a_vg_and_is_removed_cleanly(tmp_path: Path) -> None:
    require_root()
    for program in ("systemd-nspawn", "debootstrap", "nsenter", "losetup"):
        require_program(program)
    timings = Timings()
    with timings.phase("base root (debootstrap, cached)"):
        base = base_root()
    name = f"pdh{os.getpid()}"
    workdir = tmp_path / "container"
    loop = LoopDevice(tmp_path / "volumes.img", size="64M")
    with veth_pair("pdh", "h", ["10.214.0.1/24"], ["10.214.0.10/24"]) as net:
        try:
            loop.attach()
            with booted(name, [base], workdir, net.client_ns, timings) as container:
                assert container.run("systemctl", "is-system-running").stdout.strip() in ("running", "degraded")
                # The container's network is the test's veth only: no default route, no uplink.
                assert container.run("ip", "-4", "route", "show", "default").stdout.strip() == ""
                links = container.run("ip", "-o", "link", "show").stdout.splitlines()
                assert sorted(line.split(":")[1].strip().split("@")[0] for line in links) == sorted(["lo", net.client_if])
                with timings.phase("vgcreate nova-volumes on a loop device"):
                    make_volume_group(container, loop, "nova-volumes")
                vgs = container.run("vgs", "--noheadings", "-o", "vg_name", "nova-volumes").stdout.split()
                assert vgs == ["nova-volumes"]
                # Writes go to the run's overlay, never into the cached base.
                container.run("sh", "-c", "echo run > /root/written-by-test")
                assert not (base / "root/written-by-test").exists()
                init_pid = container.init_pid
            assert not Path(f"/proc/{init_pid}").exists()
        finally:
            loop.detach()
    assert mounts_below(workdir) == []
    assert not Path(f"/run/systemd/nspawn/propagate/{name}").exists()
    assert not workdir.joinpath("upper").exists()
    _remove_tree(workdir)
    print("\ncontainer harness phases:\n" + timings.report())
