"""Every boot path on real firmware: QEMU (TCG) VMs network-boot from `provisiond serve`.

Two sites, two VMs each (booted side by side, at most two at once on shared cores):
- iPXE site (the defaults): SeaBIOS with QEMU's iPXE ROM gets its iPXE script over HTTP;
  OVMF with EDK2's own PXE client loads ipxe.efi over TFTP, which gets the same script.
- pxelinux/GRUB site (`bios_loader = "pxelinux.0"`, `uefi_loader = "grubx64.efi"`): the BIOS
  VM loads pxelinux and its per-MAC config; the UEFI VM loads Debian's signed grubx64.efi,
  whose grub.cfg chains to the per-MAC config.
Each VM must reach the Debian installer's kernel and fetch its preseed (seen in the store and
the server's logs, not on the installer's screen). Then the installer's callbacks are sent,
the VMs are powered on again, and each must boot its local disk (the disk says so on the
serial console) without fetching the installer; the UEFI ones through GRUB, whose per-node
config (fetched and seen) chainloads the disk's EFI loader, not by waiting out the firmware's
DHCP retries.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML
from firmware_lab import LOCAL_MARKER, FirmwareLab, Vm, firmware_lab

from provisiond.lifecycle import State
from provisiond.store import Store

pytestmark = [pytest.mark.root, pytest.mark.qemu, pytest.mark.timeout(900)]

INSTALL_LIMIT = 420  # seconds, a bound (TCG on shared cores: measured 80-150 s to the preseed)
LOCAL_LIMIT = 240
BIOS_MAC, UEFI_MAC = "52:54:00:15:00:11", "52:54:00:15:00:12"
INVENTORY = LAB_SITE_YAML + f"""\
nodes:
  - {{hostname: vmbios, mac: '{BIOS_MAC}', role: compute, ip: 10.213.0.11, disk: {{device: vda, size: 40GiB}}}}
  - {{hostname: vmuefi, mac: '{UEFI_MAC}', role: compute, ip: 10.213.0.12, firmware: uefi,
      disk: {{device: vda, size: 40GiB}}}}
"""
# no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can fail and
# panic ("IO-APIC + timer doesn't work!"); virtual machines skip it.
CMDLINE = '[os.debian12]\ncmdline = "console=ttyS0,115200n8 no_timer_check"\n'


def transfers(state_dir: Path, peer_ip: str) -> list[tuple[str, str]]:
    """(file name without a leading /, outcome) of the TFTP transfers to one VM, oldest first
    (GRUB asks by absolute names, pxelinux and EDK2 by relative ones)."""
    rows = Store.in_state_dir(state_dir).transfers(limit=1000)
    return [(row["filename"].lstrip("/"), row["outcome"]) for row in reversed(rows)
            if row["peer"].split(":")[0] == peer_ip]


def install_then_boot_local(lab: FirmwareLab, bios: Vm, uefi: Vm) -> dict[str, dict]:
    """Netboot on, boot both VMs to their preseed fetch, finish the install by callbacks,
    boot them again to their local disks. Returns what each phase showed, per VM."""
    store = Store.in_state_dir(lab.workdir / "state")
    vms = [bios, uefi]
    for vm in vms:
        assert lab.cli("netboot", vm.name, "on").returncode == 0
        lab.boot(vm)
    lab.wait("the installers fetch their preseeds",
             lambda: all(store.node(vm.name).state is State.INSTALLING for vm in vms),
             vms, INSTALL_LIMIT)
    seen: dict[str, dict] = {}
    for vm, ip in ((bios, "10.213.0.11"), (uefi, "10.213.0.12")):
        states = [(e.kind, e.source) for e in store.events(hostname=vm.name) if e.kind.startswith("state:")]
        assert states == [("state:pxe", "dhcp"), ("state:installing", "http")], states
        fetched = next(e for e in store.events(hostname=vm.name) if e.kind == "state:installing")
        assert fetched.detail["fetched"] == "preseed" and fetched.detail["peer"] == ip
        seen[vm.name] = {"install_console": vm.console(), "install_tftp": transfers(lab.workdir / "state", ip)}
    install_log = lab.log()

    # The installer's callbacks (with the node's own token), as its preseed sends them.
    for vm in vms:
        lab.power_off(vm)
        token = store.current_token(vm.name)
        for event in ("install-started", "install-finished"):
            reply = lab.curl("-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {token}",
                             "-H", "Content-Type: application/json", "-d", f'{{"event": "{event}"}}',
                             f"http://10.213.0.1:8080/api/v1/nodes/{vm.name}/events")
            assert reply.stdout == "200", reply
        assert (store.node(vm.name).state, store.node(vm.name).netboot) == (State.INSTALLED, False)

    for vm in vms:
        lab.boot(vm)
    lab.wait("the VMs boot their local disks", lambda: all(LOCAL_MARKER in vm.console() for vm in vms),
             vms, LOCAL_LIMIT)
    local_log = lab.log()[len(install_log):]
    for vm, ip in ((bios, "10.213.0.11"), (uefi, "10.213.0.12")):
        before = len(seen[vm.name]["install_tftp"])
        seen[vm.name].update(local_log=local_log,
                             local_tftp=transfers(lab.workdir / "state", ip)[before:])
        assert store.node(vm.name).state is State.INSTALLED  # boot local moves nothing
    # Nothing of the installer after install-finished, over HTTP or TFTP.
    for path in ("/boot/debian12/linux", "/boot/debian12/initrd.gz", "/preseed/"):
        assert f"path={path}" not in local_log
    installer = ("debian-installer/amd64/linux", "debian-installer/amd64/initrd.gz")
    for vm in vms:
        assert not [name for name, _ in seen[vm.name]["local_tftp"] if name in installer]
    return seen


def test_ipxe_site_seabios_ipxe_rom_and_ovmf_edk2_pxe(tmp_path: Path) -> None:
    with firmware_lab(tmp_path, INVENTORY, CMDLINE) as lab:
        bios = lab.add_vm("vmbios", BIOS_MAC, uefi=False)
        uefi = lab.add_vm("vmuefi", UEFI_MAC, uefi=True)
        seen = install_then_boot_local(lab, bios, uefi)
        log = lab.log()
    # SeaBIOS + iPXE ROM: the script and the installer over HTTP, no TFTP at all.
    assert f"path=/boot/{BIOS_MAC}.ipxe status=200" in log
    assert seen["vmbios"]["install_tftp"] == []
    # OVMF + EDK2's PXE: ipxe.efi over TFTP (the firmware's own client), then the script.
    assert ("ipxe.efi", "ok") in seen["vmuefi"]["install_tftp"]
    assert f"path=/boot/{UEFI_MAC}.ipxe status=200" in log
    assert "path=/boot/debian12/linux status=200" in log and "path=/boot/debian12/initrd.gz status=200" in log
    for vm in ("vmbios", "vmuefi"):
        assert "Linux version" in seen[vm]["install_console"]
    # Boot local: BIOS got no boot file (nothing fetched); UEFI got GRUB, whose per-node
    # config (fetched, "local") chainloaded the disk's loader.
    assert seen["vmbios"]["local_tftp"] == []
    assert "event=boot-config host=vmbios" not in seen["vmbios"]["local_log"]
    local = dict(seen["vmuefi"]["local_tftp"])
    assert local.get("grubx64.efi") == "ok" and any(n.endswith(f"grub.cfg-01-{UEFI_MAC}") for n in local)
    assert "event=boot-config host=vmuefi" in seen["vmuefi"]["local_log"]
    assert "boot=local" in seen["vmuefi"]["local_log"]


def test_pxelinux_and_grub_site(tmp_path: Path) -> None:
    config = '[serve]\nbios_loader = "pxelinux.0"\nuefi_loader = "grubx64.efi"\n' + CMDLINE
    with firmware_lab(tmp_path, INVENTORY, config) as lab:
        bios = lab.add_vm("vmbios", BIOS_MAC, uefi=False)
        uefi = lab.add_vm("vmuefi", UEFI_MAC, uefi=True)
        seen = install_then_boot_local(lab, bios, uefi)
    dashed = BIOS_MAC.replace(":", "-")
    pxelinux = dict(seen["vmbios"]["install_tftp"])
    for name in ("pxelinux.0", "ldlinux.c32", f"pxelinux.cfg/01-{dashed}",
                 "debian-installer/amd64/linux", "debian-installer/amd64/initrd.gz"):
        assert pxelinux.get(name) == "ok", seen["vmbios"]["install_tftp"]
    grub = dict(seen["vmuefi"]["install_tftp"])
    assert grub.get("grubx64.efi") == "ok", seen["vmuefi"]["install_tftp"]
    chain = [name for name in grub if name.endswith("grub/grub.cfg")]
    per_node = [name for name in grub if name.endswith(f"grub.cfg-01-{UEFI_MAC}")]
    assert chain and per_node, seen["vmuefi"]["install_tftp"]
    assert grub.get("debian-installer/amd64/linux") == "ok"
    assert grub.get("debian-installer/amd64/initrd.gz") == "ok"
    for vm in ("vmbios", "vmuefi"):
        assert "Linux version" in seen[vm]["install_console"]
    # Boot local: BIOS no boot file at all; GRUB fetched its per-node config, which says exit.
    assert seen["vmbios"]["local_tftp"] == []
    local = dict(seen["vmuefi"]["local_tftp"])
    assert local.get("grubx64.efi") == "ok" and any(n.endswith(f"grub.cfg-01-{UEFI_MAC}") for n in local)
