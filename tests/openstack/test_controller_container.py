"""The OpenStack controller for real: a Debian 12 container (its own systemd) runs the agent
with the controller manifest from a running `provisiond serve`, installs Debian's Zed packages
without network (downloaded beforehand into a cached layer) and configures everything. Then:
Keystone issues a token, Glance has stored an image as a file under /var/lib/glance/images,
nova-conductor, nova-scheduler, cinder-scheduler and cinder-volume (LVM on `nova-volumes`, a
VG on a loop device) are up; and a second agent run, its journal removed, changes nothing.

GlusterFS and cell discovery need compute nodes (the lab's VMs bring them): an operator
template directory overrides those parts by name with empty ones. Slow (about 15 minutes on
two shared cores): `make test-openstack` runs it, `make test` does not (docs/openstack.md).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML, require_program, require_root
from netlab import veth_pair
from nspawn import LoopDevice, Timings, base_root, booted, make_volume_group, package_layer

from agent.steps.packages import install_command
from provisiond.inventory import load_inventory
from provisiond.lifecycle import State
from provisiond.manifests import ManifestService
from provisiond.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from serve_lab import Served

pytestmark = [pytest.mark.root, pytest.mark.openstack, pytest.mark.timeout(3600)]

SERVER_IP, CONTROLLER_IP = "10.216.0.1", "10.216.0.10"
INVENTORY = LAB_SITE_YAML.replace("10.213.0.", "10.216.0.") + """\
  agent: {layout_check: false}
  openstack: {workers: 1}
nodes:
  - {hostname: controller, mac: "52:54:00:16:00:10", role: controller, ip: 10.216.0.10}
  # Never started here: GlusterFS's plan needs a compute node; its parts are overridden below.
  - {hostname: compute1, mac: "52:54:00:16:00:11", role: compute, ip: 10.216.0.11}
"""
# An operator's template directory: these parts need compute nodes, which this test has not.
EMPTY_PARTS = ("gluster-server", "gluster-volume", "gluster-mount", "openstack/cell-discovery")
AGENT_BOUND = 2700  # seconds for one agent run (install about 5 min, configure about 8 min)
ADMIN = ". /root/admin-openrc && "


def controller_packages(templates: Path, inventory_path: Path) -> list[str]:
    """What the controller manifest's packages steps install (downloaded on the host first)."""
    inventory = load_inventory(inventory_path)
    manifest = ManifestService(inventory, [templates]).manifest(inventory.node("controller"), "http://x")
    return [name for step in manifest["steps"] if step["kind"] == "packages" for name in step["names"]]


def step_durations(store: Store, since: int) -> dict[str, float]:
    """Seconds per group of steps (the id's first part; the packages step alone) from the events."""
    started: dict[str, float] = {}
    groups: dict[str, float] = defaultdict(float)
    for event in store.events(since=since, hostname="controller", limit=100000):
        step = event.detail.get("step")
        if not step or not event.kind.startswith("agent:"):
            continue
        if event.kind == "agent:started":
            started[step] = event.ts
        elif event.kind in ("agent:ok", "agent:changed") and step in started:
            group = step if step == "openstack.packages" else step.split(".")[0]
            groups[group] += event.ts - started.pop(step)
    return {group: round(seconds, 1) for group, seconds in groups.items()}


def test_controller_in_a_container_is_configured_by_the_agent_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    require_root()
    for program in ("systemd-nspawn", "debootstrap", "nsenter", "losetup", "curl"):
        require_program(program)
    timings = Timings()
    workdir = tmp_path / "server"
    (workdir / "tftp").mkdir(parents=True)
    templates = tmp_path / "templates"
    for part in EMPTY_PARTS:
        (templates / f"{part}.yaml.j2").parent.mkdir(parents=True, exist_ok=True)
        (templates / f"{part}.yaml.j2").write_text("{#- needs compute nodes; the lab runs it -#}\n")
    inventory = workdir / "inventory.yaml"
    inventory.write_text(INVENTORY)
    (workdir / "provisiond.toml").write_text(f'[serve]\ntemplates = ["{templates}"]\n')

    packages = controller_packages(templates, inventory)
    # The same apt options as the agent's packages step, so the download has every .deb it needs.
    apt_options = [arg for arg in install_command(["-"], "debian")[2:] if arg != "-"]
    with timings.phase("base root: debootstrap (cached by content)"):
        base = base_root()
    with timings.phase(f"download {len(packages)} packages + deps (cached)"):
        debs = package_layer(base, packages, apt_options)

    name = f"pdos{os.getpid()}"
    hosts = f"127.0.0.1\tlocalhost\n{CONTROLLER_IP}\tcontroller.lab.example\tcontroller\n"
    loop = LoopDevice(tmp_path / "nova-volumes.img", size="4G")
    with veth_pair("pos", "o", [f"{SERVER_IP}/24"], [f"{CONTROLLER_IP}/24"]) as net:
        served = Served(net, workdir, inventory, workdir / "state", workdir / "provisiond.toml", workdir / "tftp",
                        SERVER_IP)
        served.start()
        try:
            loop.attach()
            with booted(name, [debs, base], tmp_path / "container", net.client_ns, timings, hostname="controller",
                        files={"/etc/hostname": "controller\n", "/etc/hosts": hosts}) as container:
                with timings.phase("vgcreate nova-volumes on a loop device"):
                    make_volume_group(container, loop, "nova-volumes")
                with timings.phase("installer's part: callbacks, agent zipapp, credential"):
                    config = install_agent(container, served)
                store = Store.in_state_dir(served.state_dir)
                first_event = max((event.id for event in store.events(limit=100000)), default=0)

                with timings.phase("agent run 1 (install + configure)"):
                    first = container.run("python3", "/usr/local/lib/provisiond/agent.pyz", "--config", config,
                                          check=False, timeout=AGENT_BOUND)
                (tmp_path / "agent-run-1.log").write_text(first.stdout + first.stderr)
                assert first.returncode == 0, f"agent run 1 failed:\n{first.stdout[-6000:]}{first.stderr[-3000:]}"
                assert store.node("controller").state is State.READY
                run1_steps = step_durations(store, first_event)
                second_event = max(event.id for event in store.events(limit=100000))

                check_controller(container)

                # Again from scratch (no journal): every guard holds, nothing changes.
                container.run("rm", "-rf", "/var/lib/provisiond-agent")
                with timings.phase("agent run 2 (journal removed)"):
                    second = container.run("python3", "/usr/local/lib/provisiond/agent.pyz", "--config", config,
                                           check=False, timeout=AGENT_BOUND)
                (tmp_path / "agent-run-2.log").write_text(second.stdout + second.stderr)
                assert second.returncode == 0, f"agent run 2 failed:\n{second.stdout[-6000:]}"
                changed = [line for line in second.stdout.splitlines() if re.match(r"^\[\d+/\d+\] changed ", line)]
                assert changed == [], "a second run changed:\n" + "\n".join(changed)
                kinds = [event.kind for event in store.events(since=second_event, hostname="controller", limit=100000)]
                assert "agent:ok" in kinds and "agent:changed" not in kinds and "agent:failed" not in kinds
        finally:
            loop.detach()
            if served.process is not None:
                served.stop()
    print("\ncontroller container phases:\n" + timings.report())
    print("agent run 1, seconds per part:\n" + "\n".join(f"  {group:<40} {seconds:7.1f} s"
                                                          for group, seconds in run1_steps.items()))


def install_agent(container, served: Served) -> str:
    """What the installer leaves on a node: install callbacks sent with the install token, the
    agent zipapp fetched from provisiond, its settings and its own credential (0600)."""
    operator = (served.state_dir / "operator.token").read_text().strip()
    curl = ["curl", "-sS", "--max-time", "30", "--fail-with-body"]
    preseed = container.run(*curl, "-H", f"Authorization: Bearer {operator}", f"{served.url}/preseed/controller").stdout
    token = re.search(r"Bearer ([0-9a-f]{64})", preseed).group(1)
    credential = re.search(r"echo '?([0-9a-f]{64})'? > /target/etc/provisiond/agent.credential", preseed).group(1)
    for event in ("install-started", "install-finished"):
        container.run(*curl, "-X", "POST", "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
                      "--data", json.dumps({"event": event}), f"{served.url}/api/v1/nodes/controller/events")
    container.run("mkdir", "-p", "/usr/local/lib/provisiond", "/etc/provisiond")
    container.run(*curl, "-o", "/usr/local/lib/provisiond/agent.pyz", f"{served.url}/agent/provisiond-agent.pyz")
    container.run("sh", "-c", "umask 077 && cat > /etc/provisiond/agent.credential", input=credential + "\n")
    container.run("sh", "-c", "cat > /etc/provisiond/agent.conf",
                  input=f"server_url={served.url}\nhostname=controller\ncredential_file=/etc/provisiond/agent.credential\n")
    return "/etc/provisiond/agent.conf"


def check_controller(container) -> None:
    """The acceptance checks, from inside the controller (independent of the agent's verify steps)."""
    def admin(command: str, retries: int = 1) -> str:
        for attempt in range(retries):
            result = container.run("sh", "-c", ADMIN + command, check=False, timeout=120)
            if result.returncode == 0:
                return result.stdout
            time.sleep(3 if attempt + 1 < retries else 0)
        raise AssertionError(f"{command}: {result.stderr[-2000:]}")

    assert re.fullmatch(r"[A-Za-z0-9_-]{20,}\n", admin("openstack token issue -f value -c id"))
    image = admin("openstack image show provisiond-verify -f value -c id -c status -c size").split()
    image_id = next(word for word in image if re.fullmatch(r"[0-9a-f-]{36}", word))
    assert "active" in image and "1048576" in image, image
    stored = container.run("stat", "-c", "%s %U", f"/var/lib/glance/images/{image_id}").stdout.split()
    assert stored == ["1048576", "glance"], stored
    services = admin("openstack compute service list -f value -c Binary -c State", retries=20).splitlines()
    assert {"nova-conductor up", "nova-scheduler up"} <= set(services), services
    volumes = admin("openstack volume service list -f value -c Binary -c Host -c State", retries=20).splitlines()
    assert "cinder-scheduler controller up" in volumes and "cinder-volume controller@lvm up" in volumes, volumes
    cinder = container.run("sh", "-c", "sed -n '/^\\[lvm\\]/,/^\\[/p' /etc/cinder/cinder.conf").stdout
    assert "volume_group = nova-volumes" in cinder and "volume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver" in cinder
    assert container.run("vgs", "--noheadings", "-o", "vg_name", "nova-volumes").stdout.split() == ["nova-volumes"]
    glance = container.run("grep", "-E", "^filesystem_store_datadir", "/etc/glance/glance-api.conf").stdout
    assert glance.split("=")[1].strip() == "/var/lib/glance/images"
    # Services the Debian postinsts leave disabled are enabled (they come back after a reboot).
    enabled = container.run("systemctl", "is-enabled", *shlex.split(
        "placement-api neutron-api neutron-rpc-server cinder-api cinder-scheduler cinder-volume")).stdout.split()
    assert enabled == ["enabled"] * 6, enabled
