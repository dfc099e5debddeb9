"""The per-node deploy script: after the layout script and the image, the deploy ramdisk runs
`sh node.sh identity`, `sh node.sh bootloader` and `sh node.sh unmount` against $TARGET.

identity: host name, hosts, the static network (systemd-networkd, matched by MAC), DNS, NTP,
root's password hash and SSH keys, the node token, and the agent's settings (agent.conf:
server URL, host name) and its agent credential, as the kickstart and preseed write them; and
the agent itself (zipapp + unit, enabled): carried in this script rather than baked into the
root image, so a change of the agent needs no image rebuild.
bootloader: GRUB for the node's firmware: BIOS on the disk's MBR; UEFI on the ESP with a
firmware boot entry (when the NVRAM takes one) and the removable path as the fallback.

Pure: the text is rendered from the inventory's values; it holds the node's token, so it is
served only to that node with its token (like the kickstart).
"""

from __future__ import annotations

import base64
import shlex
import textwrap
from dataclasses import dataclass, field

AGENT_PYZ = "/usr/local/lib/provisiond-agent/provisiond-agent.pyz"
AGENT_UNIT = "/etc/systemd/system/provisiond-agent.service"


@dataclass(frozen=True)
class NodeIdentity:
    hostname: str
    domain: str
    mac: str
    ip: str
    prefixlen: int
    gateway: str
    firmware: str  # bios | uefi
    server_url: str
    token: str
    agent_credential: str
    agent_zipapp: bytes  # the agent as served at /agent/provisiond-agent.pyz
    agent_unit: str
    dns: list[str] = field(default_factory=list)
    ntp: list[str] = field(default_factory=list)
    root_password_hash: str | None = None
    ssh_authorized_keys: list[str] = field(default_factory=list)

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{self.domain}" if self.domain else self.hostname


def _q(value: str) -> str:
    return shlex.quote(value)


def _write(path: str, text: str, mode: str = "0644") -> list[str]:
    """Shell lines writing `text` to $TARGET`path` verbatim (a quoted heredoc: no expansion)."""
    return [f'mkdir -p "$TARGET"{_q(path.rsplit("/", 1)[0])}',
            f"cat > \"$TARGET\"{_q(path)} <<'PROVISIOND_EOF'", text.rstrip("\n"), "PROVISIOND_EOF",
            f'chmod {mode} "$TARGET"{_q(path)}']


def identity_lines(node: NodeIdentity) -> list[str]:
    network = ["[Match]", f"MACAddress={node.mac}", "", "[Network]", f"Address={node.ip}/{node.prefixlen}",
               f"Gateway={node.gateway}", *(f"DNS={server}" for server in node.dns)]
    if node.domain:
        network.append(f"Domains={node.domain}")
    hosts = f"127.0.0.1\tlocalhost\n{node.ip}\t{node.fqdn}\t{node.hostname}\n"
    resolv = "".join(f"nameserver {server}\n" for server in node.dns) + (
        f"search {node.domain}\n" if node.domain else "")
    lines = ['step "identity: host name, network, DNS, NTP, credentials"']
    lines += _write("/etc/hostname", node.hostname + "\n")
    lines += _write("/etc/hosts", hosts)
    lines += _write("/etc/systemd/network/10-provisiond.network", "\n".join(network) + "\n")
    lines += ['rm -f "$TARGET/etc/resolv.conf"']
    lines += _write("/etc/resolv.conf", resolv or "# no DNS servers in the inventory\n")
    if node.ntp:
        lines += _write("/etc/chrony/sources.d/provisiond.sources",
                        "".join(f"server {server} iburst\n" for server in node.ntp))
    lines += ['mkdir -p -m 0700 "$TARGET/etc/provisiond"']
    lines += _write("/etc/provisiond/node.token", node.token + "\n", mode="0600")
    lines += _write("/etc/provisiond/agent.conf", f"server_url={node.server_url}\nhostname={node.hostname}\n")
    lines += _write("/etc/provisiond/agent.credential", node.agent_credential + "\n", mode="0600")
    lines += agent_lines(node)
    if node.root_password_hash:
        lines.append(f'chroot "$TARGET" usermod -p {_q(node.root_password_hash)} root')
    if node.ssh_authorized_keys:
        lines += _write("/root/.ssh/authorized_keys", "\n".join(node.ssh_authorized_keys) + "\n", mode="0600")
        lines.append('chmod 0700 "$TARGET/root/.ssh"')
    return lines


def agent_lines(node: NodeIdentity) -> list[str]:
    """The agent's zipapp (base64 in a quoted heredoc) and its unit, enabled for first boot."""
    encoded = textwrap.wrap(base64.b64encode(node.agent_zipapp).decode(), 76)
    wants = "/etc/systemd/system/multi-user.target.wants"
    return [
        'step "agent: zipapp and unit"',
        f'mkdir -p "$TARGET"{_q(AGENT_PYZ.rsplit("/", 1)[0])} "$TARGET"{wants}',
        'mkdir -p -m 0700 "$TARGET/var/lib/provisiond-agent"',
        f"base64 -d > \"$TARGET\"{_q(AGENT_PYZ)} <<'PROVISIOND_EOF'", *encoded, "PROVISIOND_EOF",
        f'chmod 0755 "$TARGET"{_q(AGENT_PYZ)}',
        *_write(AGENT_UNIT, node.agent_unit),
        f'ln -sf {AGENT_UNIT} "$TARGET"{wants}/provisiond-agent.service',
    ]


def bootloader_lines(node: NodeIdentity) -> list[str]:
    lines = ['step "boot loader: GRUB for ' + node.firmware + '"']
    lines += [f'mount --bind /{fs} "$TARGET/{fs}"' for fs in ("dev", "proc", "sys", "run")]
    if node.firmware == "uefi":
        lines += [
            '[ -d /sys/firmware/efi ] || echo "warning: the ramdisk was not booted by UEFI firmware"',
            '# A firmware boot entry when the NVRAM takes one; the removable path works without.',
            'chroot "$TARGET" grub-install --target=x86_64-efi --efi-directory=/boot/efi '
            '--bootloader-id=debian "$DISK" || echo "no firmware boot entry (NVRAM refused it)"',
            'chroot "$TARGET" grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram',
        ]
    else:
        lines.append('chroot "$TARGET" grub-install --target=i386-pc "$DISK"')
    lines += ['chroot "$TARGET" update-grub']
    lines += [f'umount "$TARGET/{fs}"' for fs in ("run", "sys", "proc", "dev")]
    return lines


def render_node_script(node: NodeIdentity) -> str:
    """The script with its three entry points (identity, bootloader, unmount)."""
    body = [
        "#!/bin/sh",
        f"# provisiond deploy: identity and boot loader of {node.fqdn} ({node.firmware}).",
        "# Usage: TARGET=/target DISK=/dev/vda sh node.sh identity|bootloader|unmount",
        "set -eu",
        "TARGET=${TARGET:-/target}",
        'step() { echo "provisiond-node: $*"; }',
        'case "${1:-}" in',
        "    identity|bootloader|unmount) ;;",
        '    *) echo "usage: sh node.sh identity|bootloader|unmount" >&2; exit 2 ;;',
        "esac",
        "",
        'if [ "$1" = identity ]; then',
        *identity_lines(node),
        "fi",
        "",
        'if [ "$1" = bootloader ]; then',
        *bootloader_lines(node),
        "fi",
        "",
        'if [ "$1" = unmount ]; then',
        'step "unmount $TARGET, deactivate the volume groups"',
        "sync",
        'umount -R "$TARGET"',
        "vgchange -an",
        "fi",
        "",
    ]
    return "\n".join(body)
