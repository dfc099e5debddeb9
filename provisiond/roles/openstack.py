"""The OpenStack roles: what the controller and compute manifests need to know, computed once.

Pure, like the storage model. `plan_openstack` turns the inventory, a node and its OS family
into the values that tie the nodes together (the controller's address, database URLs, the
transport URL, Keystone URLs, the volume group, the image and instance directories) plus the
per-family names (openstack_data.FAMILIES). The templates in manifests/openstack/ turn the plan
into steps; they are the parts appended to the roles below. Secrets appear only as
placeholders, and SECRET_SCOPES says which role may hold each (a compute node gets no
database password: nova-compute reaches the database through the conductor).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from provisiond.roles.generate import CONTEXT_PROVIDERS, ROLE_PARTS
from provisiond.roles.openstack_data import Family, family
from provisiond.roles.schema import ManifestError
from provisiond.roles.secrets import SECRET_SCOPES, placeholder

# Facts and names the roles share.
COMPUTE_UP = "nova-compute-up"
CONTROLLER_UP = "openstack-controller-up"  # the controller's services passed their checks
CLUSTER_CHECKED = "openstack-cluster-checked"  # the controller proved the whole cluster
IMAGES_DIR = "/var/lib/glance/images"  # lv_images on the controller (the storage model)
INSTANCES_DIR = "/var/lib/nova/instances"  # the GlusterFS volume on every node
STATE_DIR = "/var/lib/provisiond-openstack"  # the role's own files on the node (root only)
DATABASES = ("keystone", "glance", "placement", "nova_api", "nova", "nova_cell0", "neutron", "cinder")
SERVICE_USERS = ("glance", "placement", "nova", "neutron", "cinder")

# The parts each role gets (manifests/openstack/<part>.yaml.j2), in order, after GlusterFS.
CONTROLLER_PARTS = [
    "openstack/prepare", "openstack/packages", "openstack/firewall", "openstack/infrastructure",
    "openstack/keystone", "openstack/glance", "openstack/placement", "openstack/nova-controller",
    "openstack/neutron-server", "openstack/cinder", "openstack/dashboard", "openstack/controller-verify",
    "openstack/cell-discovery", "openstack/cluster-check", "openstack/finish",
]
COMPUTE_PARTS = [
    "openstack/prepare", "openstack/packages", "openstack/firewall", "openstack/compute",
    "openstack/compute-verify", "openstack/finish",
]

# secret -> roles that may hold it.
_SECRETS = {
    "openstack-admin": ("controller",),
    "rabbit-openstack": ("controller", "compute"),
    **{f"{database.split('_')[0]}-db": ("controller",) for database in DATABASES},
    "glance-user": ("controller",),
    "cinder-user": ("controller",),
    "nova-user": ("controller",),
    # nova-compute talks to placement and neutron with these service users' credentials.
    "placement-user": ("controller", "compute"),
    "neutron-user": ("controller", "compute"),
}


class ProviderNetwork(BaseModel):
    """The flat provider network Neutron gets (linuxbridge, no tenant networks)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "provider"
    physical_network: str = "provider"
    interface: str = "eth0"  # the compute (and controller) interface bridged to it
    cidr: str | None = None  # a subnet is created when given (without DHCP: no DHCP agent)
    gateway: str | None = None

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_network(value, strict=True)
        return value


class OpenStackSettings(BaseModel):
    """The `site.openstack` section of the inventory; a site without it gets no OpenStack."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = "RegionOne"
    # Processes per API (uwsgi `processes`, the services' `workers`). Package defaults (8-16
    # each) need about 6 GiB on a controller; one each needs about 2 GiB in all.
    workers: int = Field(1, ge=1, le=64)
    virt_type: str = "kvm"  # kvm, or qemu where the computes have no hardware virtualisation
    volume_group: str = "nova-volumes"
    dashboard: bool = False
    provider: ProviderNetwork = Field(default_factory=ProviderNetwork)
    # qemu's live-migration ports; gluster's bricks use 49152-60999, qemu's default 49152-49215.
    migration_ports: tuple[int, int] = (61152, 61215)
    # After cell discovery the controller proves the cluster end to end: a volume in the volume
    # group, an instance whose files are on the Gluster volume (manifests/openstack/
    # cluster_check.py). Off by default: it leaves a volume, a flavor and an instance behind.
    cluster_check: bool = False

    @field_validator("virt_type")
    @classmethod
    def _virt_type(cls, value: str) -> str:
        if value not in ("kvm", "qemu"):
            raise ValueError(f"virt_type must be kvm or qemu, got {value!r}")
        return value


@dataclass(frozen=True)
class Port:
    """One line of the firewall table: who may reach which port of a role."""

    ports: str  # "5000" or "49152-60999"
    protocol: str
    service: str
    source: str  # "any", "site" (the site network), "computes" (the compute nodes)


CONTROLLER_PORTS = (
    Port("22", "tcp", "ssh", "site"),
    Port("5000", "tcp", "keystone (identity API)", "any"),
    Port("9292", "tcp", "glance-api", "any"),
    Port("8778", "tcp", "placement-api", "any"),
    Port("8774", "tcp", "nova-api (compute API)", "any"),
    Port("6080", "tcp", "nova-novncproxy", "any"),
    Port("9696", "tcp", "neutron-api", "any"),
    Port("8776", "tcp", "cinder-api", "any"),
    Port("3306", "tcp", "MariaDB", "site"),
    Port("5672", "tcp", "RabbitMQ (AMQP)", "site"),
    Port("3260", "tcp", "iSCSI target (tgt, cinder-volume)", "computes"),
    Port("24007-24008", "tcp", "glusterd (management)", "site"),
)
COMPUTE_PORTS = (
    Port("22", "tcp", "ssh", "site"),
    Port("5900-5999", "tcp", "VNC consoles (from nova-novncproxy)", "site"),
    Port("16509", "tcp", "libvirtd (live migration control)", "computes"),
    Port("61152-61215", "tcp", "qemu live-migration data", "computes"),
    Port("24007-24008", "tcp", "glusterd (management)", "site"),
    Port("49152-60999", "tcp", "GlusterFS bricks", "site"),
)
DASHBOARD_PORT = Port("80", "tcp", "Horizon (dashboard)", "any")


def _register() -> None:
    for name, roles in _SECRETS.items():
        SECRET_SCOPES[name] = frozenset(roles)


_register()


@dataclass(frozen=True)
class OpenStackPlan:
    """Everything an OpenStack part template reads (as `openstack`)."""

    settings: OpenStackSettings
    names: Family
    os_family: str
    hostname: str
    role: str
    my_ip: str
    controller: str  # host name
    controller_ip: str
    computes: tuple[str, ...]
    site_network: str
    compute_ips: tuple[str, ...]

    # URLs every node uses to reach the controller.
    @property
    def keystone_url(self) -> str:
        return f"http://{self.controller_ip}:5000/v3"

    @property
    def keystone_public(self) -> str:
        return f"http://{self.controller_ip}:5000"

    @property
    def glance_url(self) -> str:
        return f"http://{self.controller_ip}:9292"

    @property
    def memcached(self) -> str:
        """memcached listens on localhost only: just the controller's own APIs use it."""
        return "127.0.0.1:11211"

    @property
    def transport_url(self) -> str:
        return f"rabbit://openstack:{placeholder('rabbit-openstack')}@{self.controller_ip}:5672/"

    @property
    def novncproxy_url(self) -> str:
        return f"http://{self.controller_ip}:6080/vnc_auto.html"

    @property
    def images_dir(self) -> str:
        return IMAGES_DIR

    @property
    def instances_dir(self) -> str:
        return INSTANCES_DIR

    @property
    def state_dir(self) -> str:
        return STATE_DIR

    @property
    def compute_up(self) -> str:
        return COMPUTE_UP

    @property
    def controller_up(self) -> str:
        return CONTROLLER_UP

    @property
    def catalog(self) -> list[dict[str, str]]:
        """Keystone's service catalog: (name, type, URL) for each API the controller runs."""
        base = f"http://{self.controller_ip}"
        return [
            {"name": "glance", "type": "image", "url": f"{base}:9292"},
            {"name": "placement", "type": "placement", "url": f"{base}:8778"},
            {"name": "nova", "type": "compute", "url": f"{base}:8774/v2.1"},
            {"name": "neutron", "type": "network", "url": f"{base}:9696"},
            {"name": "cinderv3", "type": "volumev3", "url": f"{base}:8776/v3/%(project_id)s"},
        ]

    @property
    def catalog_spec(self) -> dict[str, Any]:
        """What manifests/openstack/catalog.py makes in Keystone (holds the service passwords)."""
        return {
            "auth_url": self.keystone_url, "region": self.settings.region,
            "admin_password": placeholder("openstack-admin"),
            "users": [{"name": user, "password": placeholder(f"{user}-user")} for user in SERVICE_USERS],
            "services": self.catalog,
        }

    def database_url(self, database: str) -> str:
        """mysql+pymysql URL of one database; nova_cell0 shares nova's user and password."""
        user = database.split("_")[0]
        return f"mysql+pymysql://{user}:{placeholder(user + '-db')}@{self.controller_ip}/{database}"

    def databases(self) -> list[dict[str, str]]:
        return [{"name": database, "user": database.split("_")[0],
                 "secret": placeholder(database.split("_")[0] + "-db")} for database in DATABASES]

    def authtoken(self, user: str) -> dict[str, str]:
        """The [keystone_authtoken]-style options a service uses to log in as `user`."""
        return {
            "www_authenticate_uri": self.keystone_public, "auth_url": self.keystone_public,
            "memcached_servers": self.memcached, "auth_type": "password", "region_name": self.settings.region,
            "project_domain_name": "Default", "user_domain_name": "Default",
            "project_name": "service", "username": user, "password": placeholder(f"{user}-user"),
        }

    def service_credentials(self, user: str) -> dict[str, str]:
        """Options of a section through which one service calls another ([placement], [neutron])."""
        return {
            "auth_url": self.keystone_public, "auth_type": "password",
            "project_domain_name": "Default", "user_domain_name": "Default",
            "region_name": self.settings.region, "project_name": "service", "username": user,
            "password": placeholder(f"{user}-user"),
        }

    def packages(self, *components: str) -> list[str]:
        names: list[str] = []
        for component in components:
            names += [name for name in self.names.packages.get(component, ()) if name not in names]
        return names

    def services(self, component: str) -> tuple[str, ...]:
        return self.names.services.get(component, ())

    def path(self, name: str) -> str:
        return self.names.paths[name]

    def workers(self, api: str) -> tuple[str, str, str] | None:
        return self.names.workers.get(api)

    @property
    def debconf(self) -> list[str]:
        values = {"my_ip": self.my_ip, "volume_group": self.settings.volume_group}
        return [line.format(**values) for line in self.names.debconf]

    @property
    def role_packages(self) -> list[str]:
        """Every package of this node's role, installed in one transaction."""
        return role_packages(self.names, self.role, self.settings)

    @property
    def cluster_check_spec(self) -> dict[str, Any]:
        """What manifests/openstack/cluster_check.py proves (no secrets: it logs in with
        /root/admin-openrc)."""
        return {"name": "provisiond-cluster-check", "image": "provisiond-verify",
                "volume_group": self.settings.volume_group, "instances_dir": self.instances_dir,
                "computes": list(self.computes)}

    @property
    def cluster_checked(self) -> str:
        return CLUSTER_CHECKED

    @property
    def ports(self) -> list[Port]:
        table = CONTROLLER_PORTS if self.role == "controller" else COMPUTE_PORTS
        return [*table, *([DASHBOARD_PORT] if self.role == "controller" and self.settings.dashboard else [])]

    def sources(self, source: str) -> str:
        """An nftables address set expression for a Port.source."""
        if source == "site":
            return self.site_network
        if source == "computes":
            return "{ " + ", ".join(self.compute_ips) + " }" if self.compute_ips else ""
        return ""

    @property
    def provider(self) -> ProviderNetwork:
        return self.settings.provider


def role_components(role: str, settings: OpenStackSettings) -> list[str]:
    """The package components of a role (keys of Family.packages)."""
    if role == "controller":
        return ["database", "messaging", "cache", "keystone", "glance", "placement", "nova-controller",
                "neutron-server", "cinder-controller", "cinder-volume", "client", "firewall",
                *(["dashboard"] if settings.dashboard else [])]
    return [f"hypervisor-{settings.virt_type}", "nova-compute", "neutron-agent", "firewall"]


def role_packages(names: Family, role: str, settings: OpenStackSettings) -> list[str]:
    """Every package of a role, in order, without repeats."""
    packages: list[str] = []
    for component in role_components(role, settings):
        packages += [name for name in names.packages.get(component, ()) if name not in packages]
    return packages


def image_packages(settings: OpenStackSettings | None, role: str,
                   os_family: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a root image of `role` preinstalls for a site's OpenStack (nothing without one):
    the role's packages and the debconf answers that hold for every node of the role (the
    per-node ones, such as my-ip, are the prepare part's). The agent's packages step then finds
    every package installed: a node without a mirror (the lab) needs nothing downloaded."""
    if settings is None or role not in ("controller", "compute"):
        return (), ()
    names = family(os_family)
    values = {"volume_group": settings.volume_group}
    debconf = tuple(line.format(**values) for line in names.debconf if "{my_ip}" not in line)
    return tuple(role_packages(names, role, settings)), debconf


def plan_openstack(inventory: Any, node: Any, os_family: str) -> OpenStackPlan | None:
    """The OpenStack plan for `node`, None when the site has no `openstack:` section (GlusterFS
    only). Raises ManifestError naming what is missing."""
    settings: OpenStackSettings | None = inventory.site.openstack
    if settings is None:
        return None
    controllers = [item for item in inventory.nodes if item.role == "controller"]
    if not controllers:
        raise ManifestError("OpenStack needs a controller node; the inventory has none")
    controller = controllers[0]
    computes = [item for item in inventory.nodes if item.role == "compute"]
    try:
        names = family(os_family)
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    return OpenStackPlan(
        settings=settings, names=names, os_family=os_family, hostname=node.hostname, role=node.role,
        my_ip=str(node.ip), controller=controller.hostname, controller_ip=str(controller.ip),
        computes=tuple(item.hostname for item in computes), site_network=str(inventory.site.network),
        compute_ips=tuple(str(item.ip) for item in computes),
    )


def _register_parts() -> None:
    ROLE_PARTS["controller"] += [part for part in CONTROLLER_PARTS if part not in ROLE_PARTS["controller"]]
    ROLE_PARTS["compute"] += [part for part in COMPUTE_PARTS if part not in ROLE_PARTS["compute"]]
    CONTEXT_PROVIDERS["openstack"] = plan_openstack


_register_parts()
