"""One boot decision: for every (firmware, state, netboot) DHCP, TFTP and HTTP say the same.

Each firmware is followed the way it really goes: what DHCP hands it (the DHCP server's own
assignment code and the policy), then the boot config that loader fetches next (the iPXE
script over the Flask app, pxelinux/GRUB configs through the TFTP responder). Both must say
"install" exactly when lifecycle.installs(state, netboot) does, and "boot local" otherwise.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML

from provisiond.boot import files
from provisiond.boot.service import BootService
from provisiond.config import Config
from provisiond.dhcp.options import MessageType, Opt
from provisiond.dhcp.packet import BOOTREQUEST, DhcpPacket, build, parse
from provisiond.dhcp.policy import Site, decide
from provisiond.dhcp.server import DhcpServer
from provisiond.http import create_app
from provisiond.inventory import load_inventory
from provisiond.lifecycle import Event, Source, State, installs
from provisiond.store import Store

MAC = "52:54:00:13:00:11"
BASE = "http://10.213.0.1:8080"
INVENTORY = LAB_SITE_YAML + f"""\
nodes:
  - hostname: node1
    mac: {MAC}
    role: controller
    ip: 10.213.0.11
    disk: {{device: vda, size: 40GiB}}
"""

# The events that bring a node from `new` to each state (the store only moves by events).
PATH_TO: dict[State, tuple[Event, ...]] = {
    State.NEW: (),
    State.POWERING_ON: (Event.PROVISION,),
    State.PXE: (Event.PROVISION, Event.DHCP_BOOT_REQUEST),
    State.INSTALLING: (Event.PROVISION, Event.INSTALL_STARTED),
    State.INSTALLED: (Event.PROVISION, Event.INSTALL_STARTED, Event.INSTALL_FINISHED),
    State.CONFIGURING: (Event.PROVISION, Event.INSTALL_STARTED, Event.INSTALL_FINISHED,
                        Event.AGENT_STARTED),
    State.READY: (Event.PROVISION, Event.INSTALL_STARTED, Event.INSTALL_FINISHED,
                  Event.AGENT_STARTED, Event.AGENT_READY),
    State.FAILED: (Event.PROVISION, Event.POWER_FAILED),
}


@dataclass(frozen=True)
class Firmware:
    """A boot path: what its DHCP request carries and which boot config its loader fetches."""

    name: str
    options: dict[int, bytes]
    loader: str  # the DHCP boot file while installing
    uefi: bool
    config: str  # "ipxe" (HTTP script), "pxelinux" or "grub" (TFTP)
    bios_loader: str = "undionly.kpxe"
    uefi_loader: str = "ipxe.efi"


PXE_BIOS = {Opt.CLIENT_ARCH: b"\x00\x00", Opt.VENDOR_CLASS: b"PXEClient:Arch:00000:UNDI:002001"}
PXE_UEFI = {Opt.CLIENT_ARCH: b"\x00\x07", Opt.VENDOR_CLASS: b"PXEClient:Arch:00007:UNDI:003016"}
IPXE = {Opt.USER_CLASS: b"\x04iPXE"}
SCRIPT = f"{BASE}/boot/{MAC}.ipxe"

FIRMWARES = [
    Firmware("seabios-ipxe-rom", {**PXE_BIOS, **IPXE}, SCRIPT, False, "ipxe"),
    Firmware("bios-pxe-undionly", PXE_BIOS, "undionly.kpxe", False, "ipxe"),
    Firmware("ovmf-edk2-pxe", PXE_UEFI, "ipxe.efi", True, "ipxe"),
    Firmware("ovmf-ipxe", {**PXE_UEFI, **IPXE}, SCRIPT, True, "ipxe"),
    Firmware("uefi-http", {Opt.CLIENT_ARCH: b"\x00\x10", Opt.VENDOR_CLASS: b"HTTPClient"},
             f"{BASE}/boot/ipxe.efi", True, "ipxe"),
    Firmware("pxelinux", PXE_BIOS, "pxelinux.0", False, "pxelinux", bios_loader="pxelinux.0"),
    # QEMU's iPXE ROM on a pxelinux site is PXE firmware like any other: it gets pxelinux.0.
    Firmware("seabios-ipxe-rom-pxelinux", {**PXE_BIOS, **IPXE}, "pxelinux.0", False, "pxelinux",
             bios_loader="pxelinux.0"),
    Firmware("grub", PXE_UEFI, "grubx64.efi", True, "grub", uefi_loader="grubx64.efi"),
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("assets")
    (directory / "linux").write_bytes(b"kernel")
    (directory / "initrd.gz").write_bytes(b"initrd")
    return directory


def world(tmp: Path, assets: Path, firmware: Firmware, state: State, netboot: bool):
    """A store with node1 in `state` (reached by events) and netboot as given."""
    (tmp / "inventory.yaml").write_text(INVENTORY)
    inventory = load_inventory(tmp / "inventory.yaml")
    base = Config(inventory=tmp / "inventory.yaml", state_dir=tmp / "state",
                  bios_loader=firmware.bios_loader, uefi_loader=firmware.uefi_loader)
    config = replace(base, assets={**base.assets, "debian12": replace(
        base.assets["debian12"], kernel=assets / "linux", initrd=assets / "initrd.gz")})
    store = Store.in_state_dir(config.state_dir)
    store.sync_nodes({"node1": MAC})
    for event in PATH_TO[state]:
        store.apply("node1", event, Source.OPERATOR)
    # The netboot flag as a fixture sets it (the operator's `netboot on` would move the state).
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE nodes SET netboot = ? WHERE hostname = 'node1'", (int(netboot),))
    assert (store.node("node1").state, store.node("node1").netboot) == (state, netboot)
    return inventory, store, config


def dhcp_boot_file(inventory, store, config, firmware: Firmware) -> str | None:
    """What the DHCP server answers this firmware's DISCOVER (its own assignment code)."""
    server = DhcpServer(inventory, store, "unused", config=config)
    server.boot = BootService(inventory, store, config, BASE)
    options = {Opt.MESSAGE_TYPE: bytes([MessageType.DISCOVER]), **firmware.options}
    request = parse(build(DhcpPacket(op=BOOTREQUEST, xid=7, chaddr=bytes.fromhex(MAC.replace(":", "")),
                                     options=options)))
    site = Site(server=inventory.site.server, network=inventory.site.network)
    decision = decide(request, server._assignment(request, site), site)
    return decision.boot_file


def fetched_config(inventory, store, config, firmware: Firmware, boot_file: str | None = None) -> str:
    """The boot config the loader fetches next: over HTTP (iPXE) or TFTP (pxelinux, GRUB);
    which one follows from the boot file DHCP handed out (else the firmware's usual one)."""
    kind = firmware.config
    if boot_file is not None:
        kind = {"grubx64.efi": "grub", "pxelinux.0": "pxelinux"}.get(boot_file, "ipxe")
    if kind == "ipxe":
        client = create_app(config, inventory, store, base_url=BASE).test_client()
        reply = client.get(f"/boot/{MAC}.ipxe")
        assert reply.status_code == 200
        return reply.get_data(as_text=True)
    service = BootService(inventory, store, config, BASE)
    if kind == "pxelinux":
        answer = service.tftp_responder("pxelinux.cfg/01-" + MAC.replace(":", "-"), ("10.213.0.11", 2000))
    else:
        chain = service.tftp_responder("debian-installer/amd64/grub/grub.cfg", ("10.213.0.11", 2000))
        assert chain == files.GRUB_CHAIN.encode()
        # GRUB expands $prefix/grub.cfg-01-$net_default_mac (colons) and asks for that.
        answer = service.tftp_responder(f"debian-installer/amd64/grub/grub.cfg-01-{MAC}",
                                        ("10.213.0.11", 2000))
    assert isinstance(answer, bytes)
    return answer.decode()


def says_install(text: str) -> bool:
    install = ("kernel http" in text) or ("KERNEL " in text) or ("\n  linux /" in text)
    local = ("sanboot" in text) or ("LOCALBOOT 0" in text) or ("chainloader $loader" in text)
    assert install != local, text
    return install


@pytest.mark.parametrize("firmware", FIRMWARES, ids=lambda f: f.name)
def test_dhcp_tftp_and_http_agree_for_every_state(tmp_path: Path, assets: Path, firmware: Firmware) -> None:
    checked = []
    for state in State:
        for netboot in (True, False):
            tmp = tmp_path / f"{state}-{netboot}"
            tmp.mkdir()
            inventory, store, config = world(tmp, assets, firmware, state, netboot)
            expected = installs(state, netboot)
            boot_file = dhcp_boot_file(inventory, store, config, firmware)
            if expected:
                assert boot_file == firmware.loader, (state, netboot)
            elif firmware.name == "uefi-http":
                assert boot_file == firmware.loader, (state, netboot)  # iPXE's script: exit 1
            elif firmware.uefi:
                # UEFI boots local fast: GRUB, whose per-node config chainloads the disk.
                assert boot_file == "grubx64.efi", (state, netboot)
            else:
                assert boot_file is None, (state, netboot)  # BIOS local: no boot file, as ever
            # The config the handed loader fetches next agrees with DHCP (for BIOS local, the
            # firmware's usual config, in case a loader was already running).
            text = fetched_config(inventory, store, config, firmware, boot_file)
            assert says_install(text) is expected, (state, netboot)
            checked.append((state, netboot, expected))
            store.close()
    assert len(checked) == 2 * len(State)
    assert {state for state, _, installing in checked if installing} == {
        State.NEW, State.POWERING_ON, State.PXE, State.INSTALLING}


def test_only_an_install_is_a_sign_of_progress(tmp_path: Path, assets: Path) -> None:
    """A boot-local answer never moves a node; an install answer moves new -> pxe."""
    inventory, store, config = world(tmp_path, assets, FIRMWARES[2], State.NEW, False)
    dhcp_boot_file(inventory, store, config, FIRMWARES[2])
    fetched_config(inventory, store, config, FIRMWARES[2])
    assert store.node("node1").state is State.NEW and store.events(hostname="node1") == []
    store.set_netboot("node1", True, Source.OPERATOR)
    fetched_config(inventory, store, config, FIRMWARES[2])
    assert store.node("node1").state is State.PXE
    assert store.events(hostname="node1")[-1].detail["event"] == "boot-config-fetched"
