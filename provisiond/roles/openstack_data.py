"""OpenStack Zed per OS family: package, service and path names, as data (no if/else).

Debian 12 ships Zed in its own archive (keystone 22, nova 26, glance 25, cinder 21,
neutron 21); Rocky 9 gets it from RDO (`centos-release-openstack-zed`). The role templates
(manifests/openstack/) ask this table by component, never by distribution. Debian's names
and behaviour were checked in a Debian 12 container (tests/openstack/); RDO's follow RDO's
packaging and are checked by the manifest tests only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    """What one OS family calls things. Components are the keys of `packages`/`services`."""

    packages: Mapping[str, tuple[str, ...]]  # component -> packages
    services: Mapping[str, tuple[str, ...]]  # component -> services, in start order
    paths: Mapping[str, str]  # config file -> path
    # API -> (path, section, option) of its worker count; absent: the API's own `workers` option.
    workers: Mapping[str, tuple[str, str, str]]
    # System user that owns each service's state (for directories the role makes).
    owners: Mapping[str, str]
    # Packages must be installed before the others (a repository release package).
    repository_packages: tuple[str, ...] = ()
    # Whether package scripts start services on install (Debian) and must be held back with
    # policy-rc.d until the role is configured; and debconf answers for that install.
    holds_starts: bool = False
    debconf: tuple[str, ...] = ()
    # Services the packages enable that the controller does not use (stopped and disabled).
    unwanted: tuple[str, ...] = ()
    # Whole files the controller writes: path -> template in manifests/openstack/.
    controller_files: Mapping[str, str] = field(default_factory=dict)


_COMMON_PATHS = {
    "keystone": "/etc/keystone/keystone.conf",
    "glance": "/etc/glance/glance-api.conf",
    "placement": "/etc/placement/placement.conf",
    "nova": "/etc/nova/nova.conf",
    "neutron": "/etc/neutron/neutron.conf",
    "ml2": "/etc/neutron/plugins/ml2/ml2_conf.ini",
    "linuxbridge": "/etc/neutron/plugins/ml2/linuxbridge_agent.ini",
    "cinder": "/etc/cinder/cinder.conf",
    "libvirtd": "/etc/libvirt/libvirtd.conf",
    "qemu": "/etc/libvirt/qemu.conf",
}
_OWNERS = {name: name for name in ("keystone", "glance", "placement", "nova", "neutron", "cinder")}

# Debconf answers (owner, question, type, value); "{my_ip}" and "{volume_group}" are filled in
# per node. Every "configure ..." question is answered false: the manifest is the one source
# of truth, the packages configure nothing themselves.
_DEBIAN_DEBCONF = (
    "keystone keystone/configure_db boolean false",
    "keystone keystone/create-admin-tenant boolean false",
    "keystone keystone/register-endpoint boolean false",
    "glance-common glance/configure_db boolean false",
    "glance-common glance/configure_rabbit boolean false",
    "glance-common glance/configure_ksat boolean false",
    "glance-api glance/configure_api-endpoint boolean false",
    "placement-common placement/configure_db boolean false",
    "placement-common placement/configure_ksat boolean false",
    "placement-api placement/configure_api-endpoint boolean false",
    "nova-common nova/configure_db boolean false",
    "nova-common nova/configure_rabbit boolean false",
    "nova-common nova/configure_ksat boolean false",
    "nova-common nova/configure_neutron boolean false",
    "nova-common nova/configure_placement boolean false",
    "nova-common nova/my-ip string {my_ip}",
    "nova-api novaapi/configure_db boolean false",
    "nova-api nova/configure_api-endpoint boolean false",
    "nova-consoleproxy nova-consoleproxy/daemon_type select novnc",
    "neutron-common neutron/configure_db boolean false",
    "neutron-common neutron/configure_rabbit boolean false",
    "neutron-common neutron/configure_ksat boolean false",
    "neutron-common neutron/configure_nova boolean false",
    "neutron-api neutron/configure_api-endpoint boolean false",
    "cinder-common cinder/configure_db boolean false",
    "cinder-common cinder/configure_rabbit boolean false",
    "cinder-common cinder/configure_ksat boolean false",
    "cinder-common cinder/volume_group string {volume_group}",
    "cinder-common cinder/my-ip string {my_ip}",
    "cinder-api cinder/configure_api-endpoint boolean false",
)

FAMILIES: dict[str, Family] = {
    "debian": Family(
        packages={
            "database": ("mariadb-server", "python3-pymysql"),
            "messaging": ("rabbitmq-server",),
            "cache": ("memcached", "python3-memcache"),
            "keystone": ("keystone",),
            "glance": ("glance-api",),
            "placement": ("placement-api",),
            "nova-controller": ("nova-api", "nova-conductor", "nova-scheduler", "nova-consoleproxy"),
            "neutron-server": ("neutron-server",),
            "cinder-controller": ("cinder-api", "cinder-scheduler"),
            "cinder-volume": ("cinder-volume", "tgt", "lvm2"),
            "client": ("python3-openstackclient",),
            "firewall": ("nftables",),
            "hypervisor-kvm": ("nova-compute-kvm",),
            "hypervisor-qemu": ("nova-compute-qemu",),
            "nova-compute": ("nova-compute",),
            "neutron-agent": ("neutron-linuxbridge-agent",),
            "dashboard": ("openstack-dashboard-apache",),
        },
        services={
            "database": ("mariadb",),
            "messaging": ("rabbitmq-server",),
            "cache": ("memcached",),
            "keystone": ("keystone",),
            "dashboard": ("apache2",),
            "glance": ("glance-api",),
            "placement": ("placement-api",),
            "nova-controller": ("nova-api", "nova-conductor", "nova-scheduler", "nova-novncproxy"),
            "neutron-server": ("neutron-api", "neutron-rpc-server"),
            "cinder-controller": ("cinder-api", "cinder-scheduler"),
            "cinder-volume": ("tgt", "cinder-volume"),
            "firewall": ("nftables",),
            "hypervisor": ("libvirtd",),
            "nova-compute": ("nova-compute",),
            "neutron-agent": ("neutron-linuxbridge-agent",),
        },
        paths={
            **_COMMON_PATHS,
            "database": "/etc/mysql/mariadb.conf.d/99-openstack.cnf",
            "firewall": "/etc/nftables.conf",
            "nova-compute": "/etc/nova/nova-compute.conf",
        },
        # Debian runs the APIs under uwsgi (ini files per API); glance-api is its own daemon.
        workers={
            "keystone": ("/etc/keystone/keystone-uwsgi.ini", "uwsgi", "processes"),
            "placement": ("/etc/placement/placement-api-uwsgi.ini", "uwsgi", "processes"),
            "nova": ("/etc/nova/nova-api-uwsgi.ini", "uwsgi", "processes"),
            "neutron": ("/etc/neutron/neutron-api-uwsgi.ini", "uwsgi", "processes"),
            "cinder": ("/etc/cinder/cinder-api-uwsgi.ini", "uwsgi", "processes"),
            "glance": ("/etc/glance/glance-api.conf", "DEFAULT", "workers"),
        },
        owners=_OWNERS,
        holds_starts=True,
        debconf=_DEBIAN_DEBCONF,
        # No neutron metadata agent; noVNC, not SPICE or serial consoles.
        unwanted=("nova-api-metadata", "nova-spicehtml5proxy", "nova-serialproxy"),
        # nova-consoleproxy's init scripts pick the console proxy from here, not from nova.conf.
        controller_files={"/etc/default/nova-consoleproxy": "openstack/nova-consoleproxy.default.j2"},
    ),
    "rhel": Family(
        packages={
            "database": ("mariadb-server", "python3-PyMySQL"),
            "messaging": ("rabbitmq-server",),
            "cache": ("memcached", "python3-memcached"),
            "keystone": ("openstack-keystone", "httpd", "python3-mod_wsgi"),
            "glance": ("openstack-glance",),
            "placement": ("openstack-placement-api",),
            "nova-controller": ("openstack-nova-api", "openstack-nova-conductor", "openstack-nova-scheduler",
                                "openstack-nova-novncproxy"),
            "neutron-server": ("openstack-neutron", "openstack-neutron-ml2"),
            "cinder-controller": ("openstack-cinder",),
            "cinder-volume": ("openstack-cinder", "targetcli", "lvm2"),
            "client": ("python3-openstackclient",),
            "firewall": ("nftables",),
            "hypervisor-kvm": ("libvirt", "qemu-kvm"),
            "hypervisor-qemu": ("libvirt", "qemu-kvm"),
            "nova-compute": ("openstack-nova-compute",),
            "neutron-agent": ("openstack-neutron-linuxbridge",),
            "dashboard": ("openstack-dashboard",),
        },
        services={
            "database": ("mariadb",),
            "messaging": ("rabbitmq-server",),
            "cache": ("memcached",),
            # RDO serves keystone and placement through Apache httpd (mod_wsgi).
            "keystone": ("httpd",),
            "dashboard": ("httpd",),
            "glance": ("openstack-glance-api",),
            "placement": ("httpd",),
            "nova-controller": ("openstack-nova-api", "openstack-nova-conductor", "openstack-nova-scheduler",
                                "openstack-nova-novncproxy"),
            "neutron-server": ("neutron-server",),
            "cinder-controller": ("openstack-cinder-api", "openstack-cinder-scheduler"),
            "cinder-volume": ("target", "openstack-cinder-volume"),
            "firewall": ("nftables",),
            "hypervisor": ("libvirtd",),
            "nova-compute": ("openstack-nova-compute",),
            "neutron-agent": ("neutron-linuxbridge-agent",),
        },
        paths={
            **_COMMON_PATHS,
            "database": "/etc/my.cnf.d/99-openstack.cnf",
            "firewall": "/etc/sysconfig/nftables.conf",
            "nova-compute": "/etc/nova/nova.conf",
        },
        # keystone and placement run in httpd (WSGIDaemonProcess processes=), not in an ini file.
        workers={
            "nova": ("/etc/nova/nova.conf", "DEFAULT", "osapi_compute_workers"),
            "neutron": ("/etc/neutron/neutron.conf", "DEFAULT", "api_workers"),
            "cinder": ("/etc/cinder/cinder.conf", "DEFAULT", "osapi_volume_workers"),
            "glance": ("/etc/glance/glance-api.conf", "DEFAULT", "workers"),
        },
        owners=_OWNERS,
        repository_packages=("centos-release-openstack-zed",),
    ),
}


def family(os_family: str) -> Family:
    try:
        return FAMILIES[os_family]
    except KeyError:
        raise ValueError(f"no OpenStack data for OS family {os_family!r} (known: {', '.join(FAMILIES)})") from None
