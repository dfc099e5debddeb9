"""GlusterFS for real: three isolated nodes (namespaces, XFS bricks on loop devices, Debian's
glusterfs-server), each running the agent zipapp fetched from a running `provisiond serve`, with
its own credential, driven by the manifests provisiond generates. No controller: the first
compute node builds the volume.

1. One agent is killed (-9) while it waits at its barrier; after a restart every node finishes:
   a started replica-3 `vm-instances` mounted at /var/lib/nova/instances on all three, a file
   written on one node read on another, and the killed node's done steps say "done earlier".
2. One node's glusterd cannot start: that node fails with the reason, and the builder's barrier
   fails at once naming it (the barrier timeout is far beyond the test's own bound).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML
from gluster_lab import SERVER_IP, GlusterLab, Served, dump
from netlab import VethPair

from provisiond.lifecycle import State
from provisiond.store import Store

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]

NAMES = ["c1", "c2", "c3"]
INVENTORY = LAB_SITE_YAML + """\
  gluster: {volume: vm-instances, ping_timeout: 5}
  agent: {layout_check: false, barrier_timeout: 1800, barrier_poll: 0.5}
nodes:
""" + "".join(f"  - {{hostname: {name}, mac: '52:54:00:18:00:2{i + 1}', role: compute, ip: 10.213.0.{21 + i}}}\n"
              for i, name in enumerate(NAMES))
AGENT_BOUND = 240  # seconds this test waits for agents; far below barrier_timeout


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[GlusterLab, Served]]:
    with GlusterLab(tmp_path / "nodes", NAMES) as gluster:
        workdir = tmp_path / "server"
        (workdir / "tftp").mkdir(parents=True)
        (workdir / "inventory.yaml").write_text(INVENTORY)
        (workdir / "provisiond.toml").write_text("")
        ns = VethPair(gluster.server_ns, "", gluster.bridge, "")
        served = Served(ns, workdir, workdir / "inventory.yaml", workdir / "state", workdir / "provisiond.toml",
                        workdir / "tftp", SERVER_IP)
        served.start()
        try:
            yield gluster, served
        finally:
            if served.process is not None:
                served.stop()


def installed_with_agent(gluster: GlusterLab, served: Served) -> None:
    """Each node as the installer leaves it: install callbacks sent with its install token, the
    agent fetched over HTTP with the credential from its own preseed."""
    operator = (served.state_dir / "operator.token").read_text().strip()
    for node in gluster.nodes:
        code, preseed = gluster.curl(node, f"{served.url}/preseed/{node.name}", "-H", f"Authorization: Bearer {operator}")
        assert code == 200, preseed
        token = re.search(r"Bearer ([0-9a-f]{64})", preseed).group(1)
        credential = re.search(r"echo '?([0-9a-f]{64})'? > /target/etc/provisiond/agent.credential", preseed).group(1)
        assert credential != token
        for event in ("install-started", "install-finished"):
            code, body = gluster.curl(node, f"{served.url}/api/v1/nodes/{node.name}/events", "-X", "POST",
                                      "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
                                      "--data", json.dumps({"event": event}))
            assert code == 200, body
        gluster.install_agent(node, served.url, credential)


def wait_all(gluster: GlusterLab, processes: list) -> None:
    deadline = time.monotonic() + AGENT_BOUND
    for process in processes:
        try:
            process.wait(max(1.0, deadline - time.monotonic()))
        except Exception:
            raise AssertionError(f"agents did not finish within {AGENT_BOUND} s\n{dump(gluster)}") from None


def test_three_nodes_build_mount_and_share_the_volume_surviving_a_kill_9(lab) -> None:
    gluster, served = lab
    store = Store.in_state_dir(served.state_dir)
    installed_with_agent(gluster, served)
    c1, c2, c3 = (gluster.node(name) for name in NAMES)

    # c1 alone: it reports its brick and waits at the barrier for c2 and c3. Kill it there.
    first = gluster.start_agent(c1)
    deadline = time.monotonic() + 120
    while True:
        waiting = (store.agent_progress().get("c1") or {}).get("waiting")
        if waiting and waiting.get("missing") == ["c2", "c3"]:
            break
        assert first.poll() is None and time.monotonic() < deadline, dump(gluster)
        time.sleep(0.2)
    shown = {n["hostname"]: n for n in json.loads(served.cli("status", "--json").stdout)["nodes"]}["c1"]["agent"]
    assert (shown["step"], shown["index"], shown["count"]) == ("gluster.wait-bricks", 7, 15)
    assert shown["waiting"]["missing"] == ["c2", "c3"] and shown["waiting"]["fact"] == "gluster-brick-ready"
    first.kill()
    first.wait(10)
    assert store.node("c1").state is State.CONFIGURING

    agents = [gluster.start_agent(node) for node in (c2, c3)] + [gluster.start_agent(c1)]
    wait_all(gluster, agents)
    assert [a.returncode for a in agents] == [0, 0, 0], dump(gluster)
    assert {name: store.node(name).state for name in NAMES} == dict.fromkeys(NAMES, State.READY)

    info = gluster.volume_info(c2, "vm-instances")
    assert info["Status"] == "Started" and info["Type"] == "Replicate", info
    assert info["Number of Bricks"].replace(" ", "") == "1x3=3", info
    assert {info["Brick1"], info["Brick2"], info["Brick3"]} == {f"{n}:/export/gluster/brick" for n in NAMES}
    assert "network.ping-timeout: 5" in gluster.gluster(c1, "volume", "info", "vm-instances")
    for node in gluster.nodes:
        mount = node.sh("findmnt -n -o SOURCE,FSTYPE --mountpoint /var/lib/nova/instances").stdout.split()
        assert mount == [f"{node.name}:/vm-instances", "fuse.glusterfs"], (node.name, mount)
        fstab = node.sh("cat /etc/fstab").stdout
        others = ":".join(n for n in NAMES if n != node.name)
        assert f"{node.name}:/vm-instances /var/lib/nova/instances glusterfs " \
               f"defaults,_netdev,backup-volfile-servers={others} 0 0" in fstab

    c2.sh("echo 'written on c2' > /var/lib/nova/instances/hello.txt")
    assert c3.sh("cat /var/lib/nova/instances/hello.txt").stdout == "written on c2\n"
    assert c2.sh("ls /export/gluster/brick/hello.txt && ls /export/gluster/brick").returncode == 0
    assert c1.sh("cat /export/gluster/brick/hello.txt").stdout == "written on c2\n"  # replicated to every brick

    # The killed agent resumed: the steps it had done were not run again.
    c1_events = [(e.kind, e.detail.get("step"), e.detail.get("message")) for e in store.events(hostname="c1")]
    for step in ("gluster.packages", "gluster.glusterd", "gluster.brick-fs", "gluster.brick-dir", "gluster.brick-ready"):
        assert ("agent:ok", step, "done earlier") in c1_events, step
        assert sum(1 for kind, s, _ in c1_events if kind == "agent:started" and s == step) == 1, step
    assert c1.agent_log.read_text().count("[1/15]") == 2


def test_a_node_whose_glusterd_cannot_start_fails_and_the_barrier_names_it(lab) -> None:
    gluster, served = lab
    store = Store.in_state_dir(served.state_dir)
    installed_with_agent(gluster, served)
    c1, c2, c3 = (gluster.node(name) for name in NAMES)
    # c3's glusterd exits at once (a broken option in its /etc/default/glusterd).
    (c3.root / "default" / "glusterd").write_text('GLUSTERD_OPTIONS="--no-such-option"\n')

    agents = [gluster.start_agent(node) for node in (c1, c2, c3)]
    wait_all(gluster, agents)
    assert [a.returncode for a in agents] == [1, 1, 1], dump(gluster)

    failed_c3 = store.node("c3")
    assert failed_c3.state is State.FAILED
    assert failed_c3.reason.startswith("step 3 of 8 (gluster.glusterd) failed: glusterd: ")
    assert "exited with status 64" in failed_c3.reason
    stderr = [e.detail.get("stderr", "") for e in store.events(hostname="c3") if e.kind == "agent:failed"]
    assert "unrecognized option '--no-such-option'" in stderr[0]

    builder = store.node("c1")
    assert builder.state is State.FAILED
    assert "(gluster.wait-bricks) failed: barrier gluster-brick-ready: gluster-brick-ready will never come: " \
           "c3 failed: step 3 of 8 (gluster.glusterd) failed" in builder.reason
    assert "timed out" not in builder.reason
    # c2 waited for the volume from c1, which is dead: it fails at once too, naming c1.
    assert "gluster-volume-ready will never come: c1 failed" in store.node("c2").reason
    assert "does not exist" in c1.sh("gluster --mode=script volume info vm-instances 2>&1", check=False).stdout
