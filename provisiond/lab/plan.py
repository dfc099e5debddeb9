"""What a lab consists of, as plain data: its nodes, their inventory, the phases a node went
through. No I/O here; provisiond.lab.orchestrator builds and runs the lab from it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from provisiond.errors import UserError
from provisiond.lab.machine import FIRMWARES

SITE_NETWORK = "10.213.0.0/24"
SERVER = "10.213.0.1"
DISK_GIB = 30  # sparse qcow2; the controller and compute layouts need about 26 GiB
INSTALL_METHODS = {"image": "image", "preseed": "installer"}  # lab option -> inventory value
MAX_COMPUTES = 40
# `--openstack`: the site's OpenStack section (TCG computes, one worker per API, the cluster
# check). The provider interface is site-wide and named by the NIC: e1000 on QEMU's `pc`
# machine (BIOS nodes) is ens3, virtio-net on q35 (UEFI) enp0s2, so the OpenStack lab's nodes
# are BIOS unless --firmware says otherwise. No port is ever bound on it (the check's
# instance has no network), so the node's address stays where it is.
OPENSTACK_SECTION = ("{virt_type: qemu, workers: 1, cluster_check: true, "
                     "provider: {interface: ens3, cidr: " + SITE_NETWORK + ", gateway: " + SERVER + "}}")
# Memory (MiB) and vCPUs per role: GlusterFS only, and with OpenStack (a controller with one
# worker per API needs about 3 GiB; a compute node runs libvirt, nova-compute, a TCG guest).
RESOURCES = {
    False: {"controller": (2048, 1), "compute": (1024, 1)},
    True: {"controller": (4096, 2), "compute": (2048, 1)},
}


@dataclass(frozen=True)
class LabNode:
    hostname: str
    role: str
    ip: str
    mac: str
    firmware: str
    memory_mib: int
    bmc_port: int
    cpus: int = 1


def parse_firmware_choices(values: Sequence[str], hostnames: Sequence[str]) -> dict[str, str]:
    """`--firmware uefi` (every node) or `--firmware compute1=uefi` (one node), repeatable;
    later values win. Returns {hostname: firmware} for the nodes named (or all)."""
    chosen: dict[str, str] = {}
    for value in values:
        host, _, firmware = value.rpartition("=")
        if firmware not in FIRMWARES:
            raise UserError(f"--firmware {value!r}: firmware must be one of {', '.join(FIRMWARES)} "
                            "(e.g. --firmware uefi or --firmware compute1=uefi)")
        if host and host not in hostnames:
            raise UserError(f"--firmware {value!r}: no lab node {host!r} (nodes: {', '.join(hostnames)})")
        for name in [host] if host else hostnames:
            chosen[name] = firmware
    return chosen


def lab_nodes(computes: int = 2, firmware: Sequence[str] = (), bmc_base_port: int = 16230,
              openstack: bool = False, controller_mib: int | None = None) -> list[LabNode]:
    """One controller and `computes` compute nodes. Firmware: the default lab mixes them
    (every other node UEFI, starting with compute1), the OpenStack lab is BIOS (see
    OPENSTACK_SECTION); `firmware` choices override. Memory and vCPUs per role: RESOURCES
    (`controller_mib` overrides the controller's memory: the smoke test needs less)."""
    if not 0 <= computes <= MAX_COMPUTES:
        raise UserError(f"--computes {computes}: use 0 to {MAX_COMPUTES}")
    names = ["controller", *(f"compute{i}" for i in range(1, computes + 1))]
    chosen = parse_firmware_choices(firmware, names)
    nodes = []
    for index, name in enumerate(names):
        role = "controller" if index == 0 else "compute"
        memory_mib, cpus = RESOURCES[openstack][role]
        if role == "controller" and controller_mib is not None:
            memory_mib = controller_mib
        nodes.append(LabNode(
            hostname=name, role=role, ip=f"10.213.0.{10 + index}",
            mac=f"52:54:00:13:00:{0x10 + index:02x}",
            firmware=chosen.get(name, "uefi" if index % 2 and not openstack else "bios"),
            memory_mib=memory_mib, bmc_port=bmc_base_port + index, cpus=cpus,
        ))
    return nodes


# Every install makes new host keys, and lab addresses are reused run after run: no known_hosts.
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR")


def ssh_argv(key: str, ip: str, command: Sequence[str] = ()) -> list[str]:
    """ssh as root to a lab node with the lab's key (run it inside the lab's namespace)."""
    return ["ssh", "-i", key, *SSH_OPTIONS, f"root@{ip}", *command]


def inventory_yaml(nodes: Iterable[LabNode], install: str, password_file: str | None,
                   mirror: str | None = None, openstack: bool = False, ssh_key: str | None = None) -> str:
    """The lab's inventory: the site network on the lab bridge, each node with its BMC
    (none without a password file: the Vagrant lab powers its nodes with `vagrant up`), with
    `openstack` the site's OpenStack section (OPENSTACK_SECTION), and with `ssh_key` (a public
    key) root's authorized key on every node."""
    if install not in INSTALL_METHODS:
        raise UserError(f"--install {install!r}: use one of {', '.join(INSTALL_METHODS)}")
    lines = [
        "# Written by `provisiond lab`: the virtual lab's inventory.",
        "site:",
        "  name: lab",
        "  domain: lab.example",
        f"  network: {SITE_NETWORK}",
        f"  gateway: {SERVER}",
        f"  server: {SERVER}",
        f"  dns: [{SERVER}]",
        "  os: debian12",
    ]
    if install == "image":
        lines.append("  install: image")
    if ssh_key:
        lines.append(f"  ssh_authorized_keys: ['{ssh_key}']")
    if mirror:
        lines += ["  mirrors:", f"    debian12: {mirror}"]
    if openstack:  # the controller's barriers wait for computes configuring under TCG too
        lines += [f"  openstack: {OPENSTACK_SECTION}", "  agent: {barrier_timeout: 7200}"]
    lines.append("nodes:")
    for node in nodes:
        lines += [
            f"  - hostname: {node.hostname}",
            f"    role: {node.role}",
            f"    mac: '{node.mac}'",
            f"    ip: {node.ip}",
            f"    firmware: {node.firmware}",
            f"    disk: {{device: vda, size: {DISK_GIB}GiB}}",
        ]
        if password_file is not None:
            lines.append(f"    bmc: {{address: 127.0.0.1, port: {node.bmc_port}, username: admin, "
                         f"password_file: {password_file}}}")
    return "\n".join(lines) + "\n"


# The states a node passes through, and what the time between two of them is called.
PHASES = (
    ("powering-on", "pxe", "power-on to PXE"),
    ("pxe", "installing", "PXE to installer"),
    ("installing", "installed", "install"),
    ("installed", "configuring", "first boot"),
    ("configuring", "ready", "agent steps"),
)


def phase_times(entered: dict[str, float]) -> dict[str, float]:
    """Seconds per phase from the time each state was first entered (only phases whose two
    ends were seen). A node going installed -> ready directly has no `configuring`: its
    first boot and agent steps are reported as one "first boot + agent" phase."""
    times = {}
    for start, end, name in PHASES:
        if start in entered and end in entered:
            times[name] = entered[end] - entered[start]
    if "configuring" not in entered and "installed" in entered and "ready" in entered:
        times["first boot + agent"] = entered["ready"] - entered["installed"]
    return times
