"""Isolated GlusterFS nodes on one host, and a `provisiond serve` they reach, for the agent tests.

Each node is a network namespace (a veth into a bridge that lives in the server's namespace:
no uplink) plus a private mount and UTS namespace held open by one holder process
(`nsenter --net=... unshare -m -u sleep infinity`; `ip netns exec` would make a new mount
namespace on every call). Private per node: /run (tmpfs), /var/lib/glusterd (a copy of the
package's contents), /var/log/glusterfs, /etc/hosts, /etc/fstab, /etc/default, /var/lib/nova,
and /export/gluster: XFS on a loop device of its own. Everything is removed on exit, by PID:
the processes left are those whose network namespace is a node's (glusterd, bricks, mounts).
See shared/reference/agent-phase-notes.md for the measured recipe.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import require_program, require_root
from netlab import run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from serve_lab import Served

__all__ = ["SERVER_IP", "GlusterLab", "LabNode", "Served", "dump", "events_of"]

SERVER_IP = "10.213.0.1"
BRICK_IMAGE_BYTES = 320 * 1024 * 1024  # mkfs.xfs wants 300 MiB at least
# Mount points that must exist on the host. They stay after the test: another run of this test
# on the machine mounts on them in its nodes' private namespaces, and removing a directory
# detaches every mount other namespaces have on it (Linux >= 3.18): its bricks vanished.
HOST_DIRS = ("/export", "/var/lib/nova")


def _ns_inode(pid: int | str, kind: str = "net") -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


@dataclass
class LabNode:
    name: str
    ip: str
    netns: str
    root: Path  # this node's private files on the host
    holder: subprocess.Popen[bytes] | None = None
    loop: str = ""
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def enter(self) -> list[str]:
        """The prefix that runs a command inside the node (its mounts, host name, network)."""
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-u", "-n"]

    def sh(self, script: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(*self.enter(), "sh", "-c", script, check=check, timeout=timeout)

    @property
    def state_dir(self) -> Path:
        return self.root / "agent-state"

    @property
    def agent_log(self) -> Path:
        return self.root / "agent.log"


class GlusterLab:
    """`with GlusterLab(workdir, ["c1", "c2", "c3"]) as lab:` three nodes and a server namespace."""

    def __init__(self, workdir: Path, names: list[str], first_ip: int = 21) -> None:
        require_root()
        for program in ("nsenter", "unshare", "losetup", "mkfs.xfs", "glusterd", "gluster", "ip", "curl"):
            require_program(program)
        tag = os.getpid() % 100000
        self.workdir = workdir
        self.server_ns = f"agsrv{tag}"
        self.bridge = f"agbr{tag}"
        self.nodes = [LabNode(name, f"10.213.0.{first_ip + i}", f"ag{tag}n{i}", workdir / name)
                      for i, name in enumerate(names)]

    # -- setup ---------------------------------------------------------------------------

    def __enter__(self) -> GlusterLab:
        try:
            self._network()
            for node in self.nodes:
                self._node(node)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _network(self) -> None:
        run("ip", "netns", "add", self.server_ns)
        run("ip", "-n", self.server_ns, "link", "set", "lo", "up")
        run("ip", "-n", self.server_ns, "link", "add", self.bridge, "type", "bridge")
        run("ip", "-n", self.server_ns, "addr", "add", f"{SERVER_IP}/24", "dev", self.bridge)
        run("ip", "-n", self.server_ns, "link", "set", self.bridge, "up")
        for node in self.nodes:
            inside, outside = f"{node.netns}a", f"{node.netns}b"
            run("ip", "netns", "add", node.netns)
            run("ip", "link", "add", inside[:15], "netns", node.netns, "type", "veth",
                "peer", "name", outside[:15], "netns", self.server_ns)
            run("ip", "-n", node.netns, "addr", "add", f"{node.ip}/24", "dev", inside[:15])
            run("ip", "-n", node.netns, "link", "set", "lo", "up")
            run("ip", "-n", node.netns, "link", "set", inside[:15], "up")
            run("ip", "-n", self.server_ns, "link", "set", outside[:15], "master", self.bridge, "up")

    def _node(self, node: LabNode) -> None:
        for directory in HOST_DIRS:
            os.makedirs(directory, exist_ok=True)
        root = node.root
        for sub in ("log", "default", "nova", "agent-state"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copytree("/var/lib/glusterd", root / "glusterd", symlinks=True)
        (root / "glusterd" / "glusterd.info").unlink(missing_ok=True)  # each node makes its own UUID
        (root / "hosts").write_text("127.0.0.1 localhost\n" + f"{SERVER_IP} provisiond\n"
                                    + "".join(f"{n.ip} {n.name}\n" for n in self.nodes))
        (root / "fstab").write_text("# fstab of lab node " + node.name + "\n")
        image = root / "brick.img"
        with image.open("wb") as handle:
            handle.truncate(BRICK_IMAGE_BYTES)
        node.loop = run("losetup", "-f", "--show", str(image)).stdout.strip()
        run("mkfs.xfs", "-q", "-i", "size=512", node.loop, timeout=120)
        node.holder = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "-m", "-u", "--propagation", "private",
             "sleep", "infinity"], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while _ns_inode(node.holder.pid, "mnt") == _ns_inode("self", "mnt"):
            assert time.monotonic() < deadline, f"holder of {node.name} did not enter its namespaces"
            time.sleep(0.02)
        node.sh(f"""
            set -e
            hostname {node.name}
            mount -t tmpfs -o mode=0755 tmpfs /run
            mount --bind {root}/glusterd /var/lib/glusterd
            mount --bind {root}/log /var/log/glusterfs
            mount --bind {root}/hosts /etc/hosts
            mount --bind {root}/fstab /etc/fstab
            mount --bind {root}/default /etc/default
            mount --bind {root}/nova /var/lib/nova
            mount -t tmpfs tmpfs /export
            mkdir /export/gluster
            mount -t xfs {node.loop} /export/gluster
        """)

    # -- use -----------------------------------------------------------------------------

    def node(self, name: str) -> LabNode:
        return next(node for node in self.nodes if node.name == name)

    def curl(self, node: LabNode, url: str, *args: str) -> tuple[int, str]:
        out = node.root / f"curl-{time.monotonic_ns()}"
        result = run(*node.enter(), "curl", "-sS", "--max-time", "20", "-o", str(out), "-w", "%{http_code}",
                     *args, url, check=False, timeout=30)
        assert result.returncode == 0, f"curl {url} from {node.name}: {result.stderr}"
        return int(result.stdout), out.read_text(errors="replace") if out.exists() else ""

    def install_agent(self, node: LabNode, server_url: str, credential: str) -> Path:
        """The agent as a node gets it: the zipapp over HTTP, settings, credential (0600)."""
        pyz = node.root / "agent.pyz"
        code = int(run(*node.enter(), "curl", "-sS", "--max-time", "20", "-o", str(pyz), "-w", "%{http_code}",
                       f"{server_url}/agent/provisiond-agent.pyz", timeout=30).stdout)
        assert code == 200 and pyz.stat().st_size > 1000, f"no agent zipapp for {node.name}"
        credential_file = node.root / "agent.credential"
        credential_file.write_text(credential + "\n")
        credential_file.chmod(0o600)
        (node.root / "agent.conf").write_text(
            f"server_url={server_url}\nhostname={node.name}\ncredential_file={credential_file}\n"
            f"state_dir={node.state_dir}\n")
        return pyz

    def start_agent(self, node: LabNode) -> subprocess.Popen[bytes]:
        """The node's system python3 runs the zipapp inside the node (no virtualenv)."""
        log = node.agent_log.open("ab")
        process = subprocess.Popen(
            [*node.enter(), "/usr/bin/python3", str(node.root / "agent.pyz"), "--config", str(node.root / "agent.conf")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={"PATH": os.environ["PATH"]})
        log.close()
        node.agents.append(process)
        return process

    def gluster(self, node: LabNode, *args: str) -> str:
        return run(*node.enter(), "gluster", "--mode=script", *args, timeout=60).stdout

    def volume_info(self, node: LabNode, volume: str) -> dict[str, str]:
        text = self.gluster(node, "volume", "info", volume)
        return dict(re.findall(r"^([A-Za-z0-9 .-]+): (.*)$", text, re.MULTILINE))

    # -- teardown ------------------------------------------------------------------------

    def _node_pids(self, node: LabNode) -> list[int]:
        """Processes inside the node's network namespace (glusterd, bricks, FUSE clients)."""
        try:
            inode = os.stat(f"/run/netns/{node.netns}").st_ino
        except OSError:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.stat(f"/proc/{entry}/ns/net").st_ino == inode and int(entry) != os.getpid():
                        pids.append(int(entry))
                except OSError:
                    continue
        return pids

    def close(self) -> None:
        for node in self.nodes:
            for agent in node.agents:
                if agent.poll() is None:
                    agent.kill()
                    agent.wait(10)
            if node.holder is not None and node.holder.poll() is None:
                # Unmount the FUSE client first, so nothing hangs on a dying brick.
                node.sh("umount -l /var/lib/nova/instances 2>/dev/null; true", check=False, timeout=20)
            for pid in self._node_pids(node):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if node.holder is not None:
                node.holder.kill()
                node.holder.wait(10)
        deadline = time.monotonic() + 20
        for node in self.nodes:
            while self._node_pids(node) and time.monotonic() < deadline:
                time.sleep(0.1)
        for node in self.nodes:
            if node.loop:
                for _ in range(50):
                    if run("losetup", "-d", node.loop, check=False).returncode == 0:
                        break
                    time.sleep(0.2)
            run("ip", "netns", "del", node.netns, check=False)
        run("ip", "netns", "del", self.server_ns, check=False)


def events_of(state_dir: Path, host: str) -> list[dict]:
    """The node's events straight from the store (kind, detail)."""
    from provisiond.store import Store

    return [{"kind": e.kind, "detail": e.detail} for e in Store.in_state_dir(state_dir).events(hostname=host)]


def dump(lab: GlusterLab) -> str:
    """Agent logs of every node, for assertion messages."""
    return "\n".join(f"--- {n.name} ---\n{n.agent_log.read_text(errors='replace') if n.agent_log.exists() else ''}"
                     for n in lab.nodes)

