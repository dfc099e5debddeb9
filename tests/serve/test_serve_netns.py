"""End to end: the real `provisiond serve` (DHCP, TFTP, HTTP) in a network namespace,
driven by real clients (busybox udhcpc, curl over HTTP and TFTP) and the real CLI."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML
from serve_lab import Served, netns_pair, pid_alive

from provisiond.lifecycle import Event, Source, State
from provisiond.store import Store

pytestmark = pytest.mark.root

SERVER = "10.213.0.1"
NODES = {  # hostname: (mac, ip)
    "node1": ("52:54:00:14:00:11", "10.213.0.11"),
    "node2": ("52:54:00:14:00:12", "10.213.0.12"),
    "node3": ("52:54:00:14:00:13", "10.213.0.13"),
    "node4": ("52:54:00:14:00:14", "10.213.0.14"),
    "rocky1": ("52:54:00:14:00:21", "10.213.0.21"),
}
INVENTORY = LAB_SITE_YAML + """\
nodes:
""" + "".join(
    f"  - {{hostname: {host}, mac: '{mac}', role: compute, ip: {ip}, disk: {{device: vda, size: 40GiB}}"
    + (", os: rocky9" if host.startswith("rocky") else "") + "}\n"
    for host, (mac, ip) in NODES.items()
)
CONFIG = """\
[serve]
deadline_check_seconds = 0.5

[timeouts]
"powering-on" = 2

[os.debian12]
cmdline = "console=ttyS0,115200n8"
"""
BIOS_PXE = ("-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
IPXE = ("-x", "0x5d:0000", "-x", "0x4d:69505845")  # user class "iPXE"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("serve")
    (workdir / "tftp").mkdir()
    (workdir / "inventory.yaml").write_text(INVENTORY)
    (workdir / "provisiond.toml").write_text(CONFIG)
    with netns_pair("e2e", f"{SERVER}/24", [f"{ip}/24" for _, ip in NODES.values()]) as ns:
        server = Served(ns, workdir, workdir / "inventory.yaml", workdir / "state",
                        workdir / "provisiond.toml", workdir / "tftp", SERVER)
        server.start()
        try:
            yield server
        finally:
            if server.process is not None:
                children = server.children()
                server.stop()
                for pid in children:
                    assert not pid_alive(pid), "the HTTP child outlived serve"


def store_of(served: Served) -> Store:
    return Store.in_state_dir(served.state_dir)


def token_in(text: str) -> str:
    match = re.search(r"Bearer ([0-9a-f]{64})", text)
    assert match, "no callback token in the preseed"
    return match.group(1)


def test_full_journey_and_boot_local_everywhere_after_install(served: Served) -> None:
    store = store_of(served)
    mac, ip = NODES["node1"]
    dashed = mac.replace(":", "-")
    assert served.cli("netboot", "node1", "on").returncode == 0
    store.apply("node1", Event.PROVISION, Source.OPERATOR)

    # Firmware DHCP: a BIOS PXE client gets iPXE, the node is at `pxe` (seen by DHCP).
    env = served.udhcpc(mac, *BIOS_PXE)
    assert env is not None and env["ip"] == ip and env["boot_file"] == "undionly.kpxe"
    assert store.node("node1").state is State.PXE
    env = served.udhcpc(mac, *IPXE)
    assert env is not None and env["boot_file"] == f"http://{SERVER}:8080/boot/{mac}.ipxe"

    code, script = served.curl(ip, f"/boot/{mac}.ipxe")
    assert code == 200 and f"kernel http://{SERVER}:8080/boot/debian12/linux" in script
    assert f"url=http://{SERVER}:8080/preseed/node1" in script
    pxelinux = served.tftp_get(f"pxelinux.cfg/01-{dashed}").decode()
    assert "KERNEL debian-installer/amd64/linux" in pxelinux and "netcfg/get_ipaddress=10.213.0.11" in pxelinux
    assert b"linux /debian-installer/amd64/linux" in served.tftp_get(f"grub/grub.cfg-01-{dashed}")
    assert served.tftp_get("undionly.kpxe") == Path("/usr/lib/ipxe/undionly.kpxe").read_bytes()

    # The installer: kernel over HTTP (a range too), the preseed from its own address.
    code, head = served.curl_bytes(ip, "/boot/debian12/linux", "-r", "1000-2023")
    kernel = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux")
    assert code == 206 and head == kernel.read_bytes()[1000:2024]
    code, preseed = served.curl(ip, "/preseed/node1")
    assert code == 200 and store.node("node1").state is State.INSTALLING
    token = token_in(preseed)
    other_ip = NODES["node2"][1]
    assert served.curl(other_ip, "/preseed/node1")[0] == 403

    assert served.post_event(ip, "node1", "install-started", token) == 200
    assert served.post_event(ip, "node1", "install-finished", token) == 200
    node = store.node("node1")
    assert node.state is State.INSTALLED and node.netboot is False

    # After install-finished every path says "boot local": iPXE, pxelinux, GRUB, DHCP.
    code, script = served.curl(ip, f"/boot/{mac}.ipxe")
    assert code == 200 and "sanboot --no-describe --drive 0x80" in script and "kernel" not in script
    assert b"LOCALBOOT 0" in served.tftp_get(f"pxelinux.cfg/01-{dashed}")
    assert b"exit" in served.tftp_get(f"grub.cfg-01-{dashed}")
    env = served.udhcpc(mac, *BIOS_PXE)
    assert env is not None and env["ip"] == ip and "boot_file" not in env

    # The rest of the journey belongs to the agent (a later issue); the store takes it there.
    store.apply("node1", Event.AGENT_STARTED, Source.AGENT)
    store.apply("node1", Event.AGENT_READY, Source.AGENT)
    kinds = [e.kind for e in store.events(hostname="node1") if e.kind.startswith("state:")]
    assert kinds == ["state:powering-on", "state:pxe", "state:installing", "state:installed",
                     "state:configuring", "state:ready"]
    sources = {e.kind: e.source for e in store.events(hostname="node1")}
    assert sources["state:pxe"] == "dhcp" and sources["state:installing"] == "http"

    result = served.cli("events", "node1")
    assert result.returncode == 0 and "state:installed" in result.stdout and "netboot:off" in result.stdout
    assert token not in served.log()  # tokens never reach the log
    assert "event=http-listening server=waitress" in served.log()  # not a development server


def test_kickstart_journey_for_a_rocky_node(served: Served) -> None:
    store = store_of(served)
    mac, ip = NODES["rocky1"]
    assert served.cli("netboot", "rocky1", "on").returncode == 0
    code, script = served.curl(ip, f"/boot/{mac.upper().replace(':', '-')}.ipxe")
    assert code == 200 and f"inst.ks=http://{SERVER}:8080/ks/rocky1" in script
    assert "ip=10.213.0.21::10.213.0.1:255.255.255.0:rocky1.lab.example:bootnet:none" in script
    assert served.curl(NODES["node2"][1], "/ks/rocky1")[0] == 403
    code, kickstart = served.curl(ip, "/ks/rocky1")
    assert code == 200 and "%pre" in kickstart
    token = token_in(kickstart)
    assert served.post_event(ip, "rocky1", "install-started", token) == 200
    assert served.post_event(ip, "rocky1", "install-finished", token) == 200
    assert "sanboot" in served.curl(ip, f"/boot/{mac}.ipxe")[1]
    states = [e.kind for e in store.events(hostname="rocky1") if e.kind.startswith("state:")]
    assert states == ["state:pxe", "state:installing", "state:installed"]


def test_refused_callbacks_over_http_change_nothing(served: Served) -> None:
    store = store_of(served)
    _mac, ip = NODES["node2"]
    assert served.cli("netboot", "node2", "on").returncode == 0
    stale = store.current_token("node2")
    assert served.cli("netboot", "node2", "on").returncode == 0  # new cycle: token rotates
    assert served.curl(ip, "/preseed/node2")[0] == 200
    others = store.current_token("node3")
    before = (store.node("node2"), [e.id for e in store.events()])
    assert served.post_event(ip, "node2", "install-finished", None) == 401
    assert served.post_event(ip, "node2", "install-finished", others) == 403
    assert served.post_event(ip, "node2", "install-finished", stale) == 403
    assert (store.node("node2"), [e.id for e in store.events()]) == before
    assert store.node("node2").netboot is True


def test_kill_and_restart_mid_install_loses_nothing(served: Served) -> None:
    store = store_of(served)
    mac, ip = NODES["node3"]
    assert served.cli("netboot", "node3", "on").returncode == 0
    assert served.udhcpc(mac, *IPXE) is not None
    code, preseed = served.curl(ip, "/preseed/node3")
    assert code == 200
    token = token_in(preseed)
    assert served.post_event(ip, "node3", "install-started", token) == 200
    before = ([e.id for e in store.events()], store.leases(), store.node("node3"))
    assert before[2].state is State.INSTALLING

    children = served.children()
    assert children, "serve runs the HTTP service as its child"
    served.stop(signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in children):
        time.sleep(0.1)
    assert not any(pid_alive(pid) for pid in children), "the HTTP child must not outlive a killed serve"

    served.start()
    after = ([e.id for e in store.events()], store.leases(), store.node("node3"))
    assert after == before
    # The same token still works after the restart: the install finishes normally.
    assert served.post_event(ip, "node3", "install-finished", token) == 200
    assert store.node("node3").state is State.INSTALLED


def test_status_and_watch_against_the_running_server(served: Served) -> None:
    store = store_of(served)
    # node4 is provisioned but never boots: the server's deadline timer fails it.
    store.apply("node4", Event.PROVISION, Source.OPERATOR)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and store.node("node4").state is not State.FAILED:
        time.sleep(0.2)
    assert store.node("node4").reason == "timed out in powering-on"

    status = served.cli("status")
    assert status.returncode == 0
    assert re.search(r"node4\s.*failed", status.stdout) and "timed out in powering-on" in status.stdout
    over_api = served.ns.client_run(*served_cli(served), "status", "--server", served.url, "--json",
                                    check=False)
    assert over_api.returncode == 0 and '"hostname": "node4"' in over_api.stdout

    ready = served.cli("watch", "node1", "--interval", "0.2", "--timeout", "30")
    assert ready.returncode == 0 and "ready" in ready.stdout
    failing = served.cli("watch", "node1", "node4", "--interval", "0.2", "--timeout", "30")
    assert failing.returncode == 1
    assert "node4 failed: timed out in powering-on" in failing.stderr
    over_api = served.ns.client_run(*served_cli(served), "watch", "node4", "--server", served.url,
                                    "--interval", "0.2", "--timeout", "30", check=False)
    assert over_api.returncode == 1 and "node4 failed: timed out in powering-on" in over_api.stderr

    # An operator action over the API needs the operator token, which the CLI finds itself.
    off = served.ns.client_run(*served_cli(served), "netboot", "node2", "off", "--server",
                               served.url, check=False)
    assert off.returncode == 0 and store.node("node2").netboot is False
    refused = served.ns.client_run(*served_cli(served, state_dir=False), "netboot", "node2", "on",
                                   "--server", served.url, check=False)
    assert refused.returncode == 1 and "401" in refused.stderr and "operator token" in refused.stderr


def served_cli(served: Served, state_dir: bool = True) -> list[str]:
    """The CLI with the global options (the state dir gives it the operator token)."""
    from serve_lab import PROVISIOND

    args = [*PROVISIOND, "--inventory", str(served.inventory)]
    return [*args, "--state-dir", str(served.state_dir)] if state_dir else [
        *args, "--state-dir", str(Path(served.workdir) / "elsewhere")]


def test_bad_start_says_why_and_the_running_server_keeps_serving(served: Served) -> None:
    """A second serve: on an interface without a site address, then on the busy port."""
    second = [*served.globals()[:2], "--state-dir", str(served.workdir / "state2"),
              *served.globals()[4:], "serve", "--tftp-root", str(served.tftp_root)]
    wrong = run_in(served.ns.server_ns, *second, "--interface", "lo")
    assert wrong.returncode == 1
    assert "interface lo is not on the site network 10.213.0.0/24" in wrong.stderr
    # A TFTP root the operator named but that is missing: refused before anything starts.
    missing = run_in(served.ns.server_ns, *second, "--interface", SERVER,
                     "--tftp-root", str(served.workdir / "no-such-root"))
    assert missing.returncode == 1 and "no-such-root is not a directory" in missing.stderr
    assert "http-ready" not in missing.stderr and "http-listening" not in missing.stderr
    busy = run_in(served.ns.server_ns, *second, "--interface", SERVER)  # by address this time
    assert busy.returncode == 1 and "HTTP service exited" in busy.stderr
    assert "port in use?" in busy.stderr
    code, _ = served.curl(NODES["node1"][1], "/api/v1/health")
    assert code == 200


def run_in(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    from serve_lab import PROVISIOND, run

    return run("ip", "netns", "exec", ns, *PROVISIOND, *args, check=False, timeout=60)


def test_sigterm_stops_cleanly(served: Served) -> None:
    children = served.children()
    assert served.stop(signal.SIGTERM) == 0
    assert not any(pid_alive(pid) for pid in children)
    assert "event=stopped" in served.log()
