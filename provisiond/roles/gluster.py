"""The GlusterFS plan of a site: who holds bricks, who builds the volume, what everyone mounts.

Compute nodes hold the bricks (the XFS LV at /export/gluster that the installer made). The
controller builds the volume; a site without a controller lets its first compute node do it.
Every node runs glusterd (the builder must be in the trusted pool to probe) and mounts the
volume at /var/lib/nova/instances.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisiond.roles.schema import ManifestError
from provisiond.roles.settings import GlusterSettings

BRICK_READY = "gluster-brick-ready"
VOLUME_READY = "gluster-volume-ready"


@dataclass(frozen=True)
class GlusterPlan:
    settings: GlusterSettings
    servers: tuple[str, ...]  # compute host names, in inventory order: one brick each
    builder: str  # the node that probes peers and creates the volume
    hostname: str  # the node this plan is for

    @property
    def volume(self) -> str:
        return self.settings.volume

    @property
    def replica(self) -> int:
        return self.settings.replica or len(self.servers)

    @property
    def brick_dir(self) -> str:
        return f"{self.settings.brick_mount}/brick"

    @property
    def bricks(self) -> list[str]:
        return [f"{server}:{self.brick_dir}" for server in self.servers]

    @property
    def is_server(self) -> bool:
        return self.hostname in self.servers

    @property
    def is_builder(self) -> bool:
        return self.hostname == self.builder

    @property
    def peers(self) -> list[str]:
        """The nodes the builder probes (every brick server but itself)."""
        return [server for server in self.servers if server != self.builder]

    @property
    def mount_server(self) -> str:
        """Where this node fetches the volume file: itself when it holds a brick."""
        return self.hostname if self.is_server else self.servers[0]

    @property
    def backup_servers(self) -> list[str]:
        return [server for server in self.servers if server != self.mount_server]

    @property
    def mount_options(self) -> str:
        options = "defaults,_netdev"
        if self.backup_servers:
            options += ",backup-volfile-servers=" + ":".join(self.backup_servers)
        return options


def plan_gluster(settings: GlusterSettings, roles: dict[str, str], hostname: str) -> GlusterPlan:
    """The plan for `hostname`, given every node's role ({hostname: role}, inventory order)."""
    servers = tuple(name for name, role in roles.items() if role == "compute")
    if not servers:
        raise ManifestError("GlusterFS needs at least one compute node (they hold the bricks); "
                            "the inventory has none")
    controllers = [name for name, role in roles.items() if role == "controller"]
    replica = settings.replica or len(servers)
    if replica > len(servers) or len(servers) % replica:
        raise ManifestError(
            f"site.gluster.replica {replica} does not fit {len(servers)} compute node(s): the number "
            f"of bricks must be a multiple of the replica count (use a divisor of {len(servers)})"
        )
    return GlusterPlan(settings, servers, controllers[0] if controllers else servers[0], hostname)
