"""The systemd unit that runs `provisiond serve`: pure text, rendered for this installation.

Hardened the way a network daemon should be: root's powers cut down to binding the DHCP and
TFTP ports (CAP_NET_BIND_SERVICE) and tying DHCP to its interface (SO_BINDTODEVICE:
CAP_NET_RAW); the file system read-only except its state, cache and runtime directories
(created by systemd) and the TFTP root; no new privileges, no devices, no kernel knobs.
MemoryDenyWriteExecute is left off: ctypes (the native TFTP sender) may need such memory.
"""

from __future__ import annotations

import sys
from pathlib import Path

UNIT_NAME = "provisiond.service"
DEFAULT_CONFIG = Path("/etc/provisiond/provisiond.toml")
DEFAULT_TFTP_ROOT = Path("/srv/provisiond/tftp")

TEMPLATE = """\
[Unit]
Description=provisiond: bare-metal provisioning server (DHCP, TFTP, HTTP)
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
ExecStart={python} -m provisiond --config {config} serve
# SIGTERM to serve only: it stops its HTTP child itself (by PID), then systemd cleans up.
KillMode=mixed
TimeoutStopSec=30
Restart=on-failure
RestartSec=5

# /var/lib/provisiond (store, tokens), /var/cache/provisiond (images), /run/provisiond
# (the HTTP worker's and serve's shared metrics), created and owned by systemd.
StateDirectory=provisiond
StateDirectoryMode=0700
CacheDirectory=provisiond
RuntimeDirectory=provisiond
RuntimeDirectoryMode=0700
WorkingDirectory=/var/lib/provisiond
UMask=0077

# DHCP (67) and TFTP (69) are privileged ports; DHCP binds to its interface.
CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW
AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=-{tftp_parent}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""


def render_unit(python: str = sys.executable, config: Path = DEFAULT_CONFIG,
                tftp_root: Path = DEFAULT_TFTP_ROOT) -> str:
    """The unit for this Python (the virtualenv provisiond is installed in)."""
    return TEMPLATE.format(python=python, config=config, tftp_parent=tftp_root.parent)
