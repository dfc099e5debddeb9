"""A mount the agent makes outlives the agent, on a node booted with systemd.

The agent runs as a service. A FUSE file system (glusterfs) keeps a daemon that `mount` starts,
in the cgroup of whoever ran `mount`; when the agent's service ends, systemd kills what is left
in its cgroup. In lab run 4 of the OpenStack lab that took each compute node's Gluster mount of
/var/lib/nova/instances away as soon as its agent was done, and nova wrote the instance to the
local disk under the empty mount point.

Here a real systemd (a booted Debian container) runs the agent's mount step inside a transient
service, as the node runs the agent. The file system type's mount helper stands in for
mount.glusterfs: it starts a daemon, then mounts. After the service is gone, the daemon and the
mount must still be there. The same helper run by a plain `mount` in such a service loses its
daemon: the control case, which shows the test can see the difference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import require_program, require_root
from netlab import veth_pair
from nspawn import Timings, base_root, booted

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
FSTYPE = "pdfuse"
# mount(8) runs /sbin/mount.<type> SPEC DIR -o OPTIONS; this one starts the file system's daemon
# (as mount.glusterfs does) and mounts a tmpfs in its name.
MOUNT_HELPER = f"""#!/bin/sh
setsid sleep infinity </dev/null >/dev/null 2>&1 &
echo $! > "/run/{FSTYPE}-$(basename "$2").pid"
exec mount -i -t tmpfs -o size=1m {FSTYPE} "$2"
"""
RUN_STEP = """import json, sys
sys.path.insert(0, "/opt/provisiond")
from agent.context import StepContext
from agent.journal import Journal
from agent.steps import handler
ctx = StepContext(hostname="n", os_family="debian", journal=Journal("/var/lib/pdtest"), client=None, dry_run=False)
outcome = handler("mount")(json.loads(sys.argv[1]), ctx)
print(json.dumps({"changed": outcome.changed, "message": outcome.message}))
"""


def mount_step(path: str) -> dict:
    return {"id": "gluster.mount", "kind": "mount", "title": "t", "src": FSTYPE, "path": path, "fstype": FSTYPE,
            "options": "defaults,_netdev", "check_writable": True, "timeout": 60}


def test_a_fuse_style_mount_made_by_the_agent_outlives_the_agent_service(tmp_path: Path) -> None:
    require_root()
    for program in ("systemd-nspawn", "debootstrap", "nsenter"):
        require_program(program)
    timings = Timings()
    with timings.phase("base root (debootstrap, cached)"):
        base = base_root()
    files = {f"/sbin/mount.{FSTYPE}": MOUNT_HELPER, "/opt/run_step.py": RUN_STEP}
    with veth_pair("pdm", "m", ["10.215.0.1/24"], ["10.215.0.10/24"]) as net, \
            booted(f"pdm{os.getpid()}", [base], tmp_path / "container", net.client_ns, timings,
                   binds=[f"{REPO / 'agent'}:/opt/provisiond/agent"], files=files) as node:
        node.run("chmod", "755", f"/sbin/mount.{FSTYPE}")

        # The agent's step, in a service like the agent's own: the service ends, the mount stays.
        step = json.dumps(mount_step("/srv/instances"))
        service = node.run("systemd-run", "--unit=pdtest-agent", "--wait", "--pipe", "--collect", "-q",
                           "-p", "Type=simple", "python3", "/opt/run_step.py", step, timeout=120, check=False)
        assert service.returncode == 0, service.stdout + service.stderr + node.run(
            "journalctl", "--no-pager", "-n", "30", check=False).stdout
        assert json.loads(service.stdout.splitlines()[-1]) == {
            "changed": True, "message": f"fstab, mount: {FSTYPE} on /srv/instances"}
        assert node.run("systemctl", "is-active", "pdtest-agent.service", check=False).stdout.strip() != "active"
        daemon = node.run("cat", f"/run/{FSTYPE}-instances.pid").stdout.strip()
        assert node.run("kill", "-0", daemon, check=False).returncode == 0, "the file system's daemon died with the agent"
        assert node.run("findmnt", "-n", "-o", "SOURCE", "--mountpoint", "/srv/instances").stdout.strip() == FSTYPE
        cgroup = node.run("cat", f"/proc/{daemon}/cgroup").stdout
        assert "srv-instances.mount" in cgroup, cgroup
        assert node.run("systemctl", "is-active", "srv-instances.mount", check=False).stdout.strip() == "active"
        # Run again: nothing to change.
        again = node.run("python3", "/opt/run_step.py", step, timeout=120)
        assert json.loads(again.stdout.splitlines()[-1])["changed"] is False

        # Control: the same helper run by `mount` inside a service loses its daemon with the service.
        node.run("mkdir", "-p", "/srv/control")
        node.run("sh", "-c", f"echo '{FSTYPE} /srv/control {FSTYPE} noauto 0 0' >> /etc/fstab")
        node.run("systemd-run", "--unit=pdtest-control", "--wait", "--collect", "-q", "-p", "Type=simple",
                 "mount", "/srv/control", timeout=120)
        control = node.run("cat", f"/run/{FSTYPE}-control.pid").stdout.strip()
        assert node.run("kill", "-0", control, check=False).returncode != 0, \
            "the control daemon survived its service: this test cannot tell the two ways apart"
    print("\nphases:\n" + timings.report())
