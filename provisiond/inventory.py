"""The inventory: one YAML file that maps each box (by MAC) to a hostname, a role and an address.

`load_inventory` reads and validates it and reports *every* problem at once, each with
file:line and the field (`inventory.yaml:14: nodes[1].mac: ...`), so an operator fixes a
broken file in one pass. Field checks live in the pydantic models; checks that span nodes
(duplicates, addresses against the site network, disk against the role's layout, readable BMC
password files) run afterwards on the nodes that parsed.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from provisiond.dns.settings import DnsUpdateSettings, KeyFileError, parse_key_file
from provisiond.errors import UserError
from provisiond.power.waves import PowerWaves
from provisiond.roles.openstack import OpenStackSettings
from provisiond.roles.settings import AgentSettings, GlusterSettings

ROLES = ("compute", "controller")
OPERATING_SYSTEMS = ("debian12", "rocky9")
FIRMWARES = ("bios", "uefi")
# How a node gets its OS: the distribution installer (kickstart/preseed) or the image method
# (deploy ramdisk + root image built by `provisiond image build`, debian12 only).
INSTALL_METHODS = ("installer", "image")
IMAGE_OPERATING_SYSTEMS = ("debian12",)

DEFAULT_MIRRORS = {
    "debian12": "http://deb.debian.org/debian",
    "rocky9": "https://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os",
}

_MAC_SEPARATED = re.compile(r"^[0-9a-f]{1,2}([:-])(?:[0-9a-f]{1,2}\1){4}[0-9a-f]{1,2}\Z")
_MAC_PLAIN = re.compile(r"^[0-9a-f]{12}\Z")
_MAC_CISCO = re.compile(r"^[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}\Z")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_DEVICE = re.compile(r"^(?:/dev/)?[A-Za-z0-9][A-Za-z0-9_./:-]*\Z")
# crypt(3) strings, per scheme: what libxcrypt accepts (salt and hash lengths are exact, so a
# truncated or hand-edited hash, which would lock root out, is refused).
_B64 = "[./A-Za-z0-9]"
_CRYPT_HASH = re.compile(
    rf"^(?:\$1\${_B64}{{1,8}}\${_B64}{{22}}"  # MD5-crypt (weak: check warns)
    rf"|\$5\$(?:rounds=[0-9]+\$)?{_B64}{{1,16}}\${_B64}{{43}}"  # SHA-256-crypt
    rf"|\$6\$(?:rounds=[0-9]+\$)?{_B64}{{1,16}}\${_B64}{{86}}"  # SHA-512-crypt
    rf"|\$g?y\${_B64}+\${_B64}+\${_B64}{{43}}"  # yescrypt, gost-yescrypt
    rf"|\$7\${_B64}{{11,}}\${_B64}{{43}}"  # scrypt
    rf"|\$2[abxy]\$[0-9]{{2}}\${_B64}{{53}})\Z")
_WEAK_HASH_PREFIXES = {"$1$": "MD5-crypt"}
_SSH_KEY = re.compile(r"^(?:ssh-(?:rsa|ed25519|dss)|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/=]+"
                      r'(?: [^\x00-\x1f\x7f"\\]*)?\Z')  # the comment: no quote (kickstart quotes it)
# Values that reach an answer file's line (d-i ..., a kickstart command): one word of the
# characters each kind of value needs, so none can end the line or add an option.
_TIMEZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*\Z")  # Europe/Paris, Etc/GMT+5
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:_[A-Za-z]{2})?(?:\.[A-Za-z0-9-]+)?(?:@[A-Za-z]+)?\Z")
_KEYBOARD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\Z")  # us, de, fr-latin1
_NTP_SERVER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*\Z")  # a host name or an IPv4 address
# A mirror URL: RFC 3986 characters less the quotes, backslash and shell expansion ($ `).
_URL = re.compile(r"^(?:https?|ftp)://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/%+,=:@-]*)?\Z")
_NO_SPACE = re.compile(r"^[^\s\x00-\x1f\x7f]+\Z")
# Control characters: no value in the inventory may carry one (a newline splits the line of
# every file it reaches: iPXE scripts, answer files, manifests).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
IPMI_PASSWORD_MAX = 20  # IPMI 2.0 passwords are at most 20 bytes
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*\Z", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1, "s": 512,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
    "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}


def normalize_mac(text: str) -> str:
    """Return the MAC in lower case with colons; accept colons, dashes, dots or no separators."""
    value = str(text).strip().lower()
    if _MAC_SEPARATED.match(value):
        octets = re.split(r"[:-]", value)
    elif _MAC_PLAIN.match(value) or _MAC_CISCO.match(value):
        digits = value.replace(".", "")
        octets = [digits[i : i + 2] for i in range(0, 12, 2)]
    else:
        raise ValueError(
            f"{text!r} is not a MAC address (expected six hex pairs, e.g. 52:54:00:12:34:56)"
        )
    return ":".join(octet.zfill(2) for octet in octets)


def parse_size(value: Any) -> int:
    """Parse a disk size into bytes.

    K/M/G/T (and KB/MB/GB/TB) are powers of 1000, as on a drive's label; KiB/MiB/GiB/TiB are
    powers of 1024; `s` is 512-byte sectors; a bare number is bytes.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise ValueError(
                f"{value!r} is not a size (examples: 80G, 250GB, 74.5GiB, 238475MiB, 488397168s)"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"{value!r}: a disk size must be positive")
    return size


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BmcSpec(_Model):
    """How to reach a node's BMC. The password is read only when needed, never stored here."""

    driver: Literal["ipmi"] = "ipmi"
    address: str
    port: int = Field(623, ge=1, le=65535)
    username: str = Field(min_length=1)
    password_file: Path | None = None
    password_env: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip()
        if not _NO_SPACE.match(value):
            raise ValueError(f"{value!r} is not a host name or IP address")
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if _CONTROL.search(value) or len(value.encode()) > 16:
            raise ValueError(f"{value!r} is not an IPMI user name (at most 16 bytes, no "
                             "control characters)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_clear_text(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError(
                "clear-text 'password' is not accepted in the inventory: put the password in a "
                "file (mode 0600) and name it with password_file, or name an environment "
                "variable with password_env"
            )
        return data

    @model_validator(mode="after")
    def _one_password_source(self) -> BmcSpec:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("give exactly one of password_file or password_env")
        return self

    def resolved(self, base_dir: Path) -> BmcSpec:
        """The same spec with password_file made absolute (relative to the inventory file)."""
        if self.password_file is None or self.password_file.is_absolute():
            return self
        return self.model_copy(update={"password_file": base_dir / self.password_file})

    def password(self) -> str:
        """Read the password now (a rotated file is picked up without a restart)."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise UserError(
                    f"BMC {self.address}: environment variable {self.password_env} is not set"
                )
            return value
        assert self.password_file is not None
        try:
            return self.password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise UserError(
                f"BMC {self.address}: cannot read password file {self.password_file}: "
                f"{exc.strerror}"
            ) from None

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


class DiskSpec(_Model):
    device: str = "sda"
    size_bytes: int | None = Field(None, alias="size")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"{value!r} is not a disk device name (e.g. sda, vda, nvme0n1)")
        return value.removeprefix("/dev/")

    @field_validator("size_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int | None:
        return None if value is None else parse_size(value)


def _choice(value: Any, allowed: Iterable[str], what: str) -> str:
    text = str(value).strip().lower()
    if text not in allowed:
        raise ValueError(f"unknown {what} {value!r} (expected one of: {', '.join(allowed)})")
    return text


def _ipv4_network(value: Any) -> IPv4Network:
    try:
        return IPv4Network(str(value), strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = IPv4Network(str(value), strict=False)
            raise ValueError(f"{value!r} has host bits set; did you mean {loose}?") from None
        raise ValueError(f"{value!r} is not an IPv4 network (e.g. 10.213.0.0/24)") from None


def _domain_name(value: str) -> str:
    labels = value.lower().rstrip(".").split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"{value!r} is not a DNS domain name")
    return ".".join(labels)


def parse_pool(text: Any) -> tuple[IPv4Address, IPv4Address]:
    """A dynamic range `FIRST-LAST` (e.g. 10.0.0.100-10.0.0.199) as its two ends."""
    try:
        first, last = (IPv4Address(part.strip()) for part in str(text).split("-"))
    except ValueError:
        raise ValueError(
            f"dynamic pool {text!r} is not a range: write FIRST-LAST, e.g. 10.0.0.100-10.0.0.199"
        ) from None
    if last < first:
        raise ValueError(f"dynamic pool {text!r}: the last address is before the first")
    return first, last


def _check_pool(pool: tuple[IPv4Address, IPv4Address] | None, network: IPv4Network,
                taken: list[tuple[IPv4Address, str]]) -> None:
    if pool is None:
        return
    first, last = pool
    if first not in network or last not in network:
        raise ValueError(f"pool {first}-{last} is not inside the network {network}")
    inside = [f"{address} ({what})" for address, what in taken if first <= address <= last]
    if inside:
        raise ValueError(f"pool {first}-{last} contains {', '.join(inside)}")


class RelayedNetwork(_Model):
    """A further network of the site, usually behind a router whose DHCP relay forwards its
    clients' requests (giaddr = the relay's address on it) to provisiond."""

    network: IPv4Network
    gateway: IPv4Address
    server: IPv4Address | None = None  # provisiond's address as these nodes reach it; None: site.server
    dns: list[IPv4Address] | None = None  # None: the site's
    ntp: list[str] | None = None  # None: the site's
    domain: str | None = None  # None: the site's
    pool: tuple[IPv4Address, IPv4Address] | None = None

    _network = field_validator("network", mode="before")(lambda value: _ipv4_network(value))
    _domain = field_validator("domain")(lambda value: None if value is None else _domain_name(value))

    @field_validator("pool", mode="before")
    @classmethod
    def _pool(cls, value: Any) -> tuple[IPv4Address, IPv4Address] | None:
        return None if value is None else parse_pool(value)

    @model_validator(mode="after")
    def _addresses(self) -> RelayedNetwork:
        if self.gateway not in self.network:
            raise ValueError(f"gateway {self.gateway} is outside the network {self.network}")
        taken = [(self.gateway, "the gateway")]
        if self.server is not None:
            taken.append((self.server, "the server"))
        _check_pool(self.pool, self.network, taken)
        return self


@dataclass(frozen=True)
class SiteNetwork:
    """One network of the site as DHCP, the boot decision and the answer files use it."""

    network: IPv4Network
    gateway: IPv4Address
    server: IPv4Address  # provisiond's address as this network's nodes reach it
    dns: tuple[IPv4Address, ...]
    ntp: tuple[str, ...]
    domain: str
    pool: tuple[IPv4Address, IPv4Address] | None = None
    relayed: bool = False  # one of site.networks (its clients come through a relay)

    def reached_from(self, addresses: Iterable[IPv4Address]) -> bool:
        """Whether a server answering on `addresses` serves this network: it holds the
        network's `server` (what its nodes are told to fetch from) or is on the network."""
        served = list(addresses)
        return self.server in served or any(address in self.network for address in served)


class Site(_Model):
    name: str = Field(min_length=1)
    domain: str
    network: IPv4Network
    gateway: IPv4Address
    server: IPv4Address
    dns: list[IPv4Address] = Field(default_factory=list)
    ntp: list[str] | None = None
    os: str = "debian12"
    timezone: str = "UTC"
    locale: str = "en_US.UTF-8"
    keyboard: str = "us"
    root_password_hash: str | None = None
    ssh_authorized_keys: list[str] = Field(default_factory=list)
    mirrors: dict[str, str] = Field(default_factory=dict)
    gluster: GlusterSettings = Field(default_factory=GlusterSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    openstack: OpenStackSettings | None = None  # None: GlusterFS only, no OpenStack parts
    install: str = "installer"  # the nodes' default install method
    pool: tuple[IPv4Address, IPv4Address] | None = None  # dynamic range on `network`
    networks: list[RelayedNetwork] = Field(default_factory=list)  # further (relayed) networks
    dns_update: DnsUpdateSettings | None = None  # None: provisiond publishes no names (docs/dns.md)
    power_waves: PowerWaves | None = None  # None: every node powered on at once (docs/power.md)

    @field_validator("install", mode="before")
    @classmethod
    def _install(cls, value: Any) -> str:
        return _choice(value, INSTALL_METHODS, "install")

    @field_validator("pool", mode="before")
    @classmethod
    def _pool(cls, value: Any) -> tuple[IPv4Address, IPv4Address] | None:
        return None if value is None else parse_pool(value)

    @model_validator(mode="before")
    @classmethod
    def _no_clear_root_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "root_password" in data:
            raise ValueError(
                "clear-text 'root_password' is not accepted: give root_password_hash "
                "(make one with `openssl passwd -6`) or ssh_authorized_keys"
            )
        return data

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return _domain_name(value)

    @field_validator("network", mode="before")
    @classmethod
    def _network(cls, value: Any) -> IPv4Network:
        return _ipv4_network(value)

    @field_validator("os", mode="before")
    @classmethod
    def _os(cls, value: Any) -> str:
        return _choice(value, OPERATING_SYSTEMS, "os")

    @field_validator("root_password_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        if value is not None and not _CRYPT_HASH.match(value):
            raise ValueError(
                "not a crypt(3) password hash: make one with `openssl passwd -6` (e.g. $6$, a "
                "salt of up to 16 characters, $, 86 characters); a truncated or edited hash "
                "would lock root out, and clear-text passwords are not accepted"
            )
        return value

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for number, key in enumerate(value):
            if not _SSH_KEY.match(key.strip()):
                raise ValueError(f"entry {number} is not an OpenSSH public key line")
        return [key.strip() for key in value]

    @field_validator("mirrors")
    @classmethod
    def _mirrors(cls, value: dict[str, str]) -> dict[str, str]:
        for os_name, url in value.items():
            _choice(os_name, OPERATING_SYSTEMS, "os in mirrors")
            if not _URL.match(url):
                raise ValueError(f"{os_name}: {url!r} is not a mirror URL (http, https or ftp; "
                                 "letters, digits and - . _ ~ / % + , = : @ only)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        if not _TIMEZONE.match(value):
            raise ValueError(f"{value!r} is not a time zone name (e.g. UTC, Europe/Paris)")
        return value

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str) -> str:
        if not _LOCALE.match(value):
            raise ValueError(f"{value!r} is not a locale (e.g. en_US.UTF-8)")
        return value

    @field_validator("keyboard")
    @classmethod
    def _keyboard(cls, value: str) -> str:
        if not _KEYBOARD.match(value):
            raise ValueError(f"{value!r} is not a keyboard layout name (e.g. us, de)")
        return value

    @field_validator("ntp")
    @classmethod
    def _ntp(cls, value: list[str] | None) -> list[str] | None:
        for number, server in enumerate(value or ()):
            if not _NTP_SERVER.match(server):
                raise ValueError(f"entry {number}: {server!r} is not a host name or address")
        return value

    @model_validator(mode="after")
    def _addresses_on_network(self) -> Site:
        for field in ("gateway", "server"):
            address = getattr(self, field)
            if address not in self.network:
                raise ValueError(f"{field} {address} is outside the site network {self.network}")
        _check_pool(self.pool, self.network, [(self.gateway, "the gateway"), (self.server, "the server")])
        seen = [self.network]
        for index, extra in enumerate(self.networks):
            clash = next((net for net in seen if net.overlaps(extra.network)), None)
            if clash is not None:
                raise ValueError(f"networks[{index}]: {extra.network} overlaps {clash}")
            seen.append(extra.network)
        return self

    @cached_property
    def all_networks(self) -> tuple[SiteNetwork, ...]:
        """The site network first, then `networks`, each with the site's defaults filled in."""
        ntp = tuple(self.ntp_servers)
        primary = SiteNetwork(self.network, self.gateway, self.server, tuple(self.dns), ntp,
                              self.domain, self.pool)
        return (primary, *(
            SiteNetwork(
                extra.network, extra.gateway, extra.server or self.server,
                tuple(self.dns if extra.dns is None else extra.dns),
                ntp if extra.ntp is None else tuple(extra.ntp), extra.domain or self.domain,
                extra.pool, relayed=True,
            ) for extra in self.networks))

    def network_of(self, address: IPv4Address) -> SiteNetwork | None:
        """The site network that holds `address` (a node's address belongs to exactly one)."""
        return next((net for net in self.all_networks if address in net.network), None)

    @property
    def ntp_servers(self) -> list[str]:
        """NTP servers for the nodes; by default provisiond's own address on the site network."""
        return self.ntp if self.ntp is not None else [str(self.server)]

    def mirror(self, os_name: str) -> str:
        return self.mirrors.get(os_name, DEFAULT_MIRRORS[os_name]).rstrip("/")


class Node(_Model):
    hostname: str
    mac: str
    role: str
    ip: IPv4Address
    os: str | None = None
    firmware: str = "bios"
    install: str | None = None  # installer | image; None: the site's default
    disk: DiskSpec = Field(default_factory=DiskSpec)
    bmc: BmcSpec | None = None
    # Filled in by the loader from the site (so every node knows its full name and OS).
    domain: str = ""

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not _HOST_LABEL.match(value.lower()):
            raise ValueError(
                f"{value!r} is not a valid host name (letters, digits and '-', up to 63, "
                "no dots: the site domain is appended)"
            )
        return value.lower()

    @field_validator("mac", mode="before")
    @classmethod
    def _mac(cls, value: Any) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f"YAML read this MAC as the number {value!r} (unquoted digits): "
                             "write it in quotes, e.g. '52:54:00:12:34:56'")
        return normalize_mac(value)

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> str:
        return _choice(value, ROLES, "role")

    @field_validator("os", mode="before")
    @classmethod
    def _os(cls, value: Any) -> str | None:
        return None if value is None else _choice(value, OPERATING_SYSTEMS, "os")

    @field_validator("firmware", mode="before")
    @classmethod
    def _firmware(cls, value: Any) -> str:
        return _choice(value, FIRMWARES, "firmware")

    @field_validator("install", mode="before")
    @classmethod
    def _install(cls, value: Any) -> str | None:
        return None if value is None else _choice(value, INSTALL_METHODS, "install")

    @property
    def install_method(self) -> str:
        assert self.install is not None, "the loader resolves install from the site default"
        return self.install

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{self.domain}" if self.domain else self.hostname

    @property
    def uefi(self) -> bool:
        return self.firmware == "uefi"

    @property
    def os_name(self) -> str:
        assert self.os is not None, "the loader resolves os from the site default"
        return self.os


@dataclass(frozen=True)
class Problem:
    line: int | None
    field: str
    message: str

    def format(self, path: Path) -> str:
        where = f"{path}:{self.line}" if self.line else str(path)
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class InventoryError(UserError):
    """The inventory has problems; `problems` lists every one, in file order."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.field))
        count = len(self.problems)
        lines = "\n".join(problem.format(path) for problem in self.problems)
        super().__init__(f"{path}: {count} problem{'s' if count != 1 else ''}\n{lines}")


@dataclass(frozen=True)
class Inventory:
    path: Path
    site: Site
    nodes: list[Node]
    warnings: tuple[str, ...] = ()

    def node(self, hostname: str) -> Node:
        if hostname.lower() in self._by_hostname:
            return self._by_hostname[hostname.lower()]
        names = [node.hostname for node in self.nodes]
        close = difflib.get_close_matches(hostname.lower(), names, n=3)
        if close:
            hint = "did you mean: " + ", ".join(close)
        else:
            more = f" and {len(names) - 8} more" if len(names) > 8 else ""
            hint = "known nodes: " + (", ".join(names[:8]) + more if names else "none")
        raise UserError(f"{hostname!r} is not in {self.path} ({hint})")

    @cached_property
    def _by_mac(self) -> dict[str, Node]:
        return {node.mac: node for node in self.nodes}

    @cached_property
    def _by_hostname(self) -> dict[str, Node]:
        return {node.hostname: node for node in self.nodes}

    def network(self, node: Node) -> SiteNetwork:
        """The network that holds the node's address (the loader has checked there is one)."""
        network = self.site.network_of(node.ip)
        assert network is not None, f"{node.hostname}: the loader checks every node is on a network"
        return network

    def by_mac(self, mac: str) -> Node | None:
        try:
            return self._by_mac.get(normalize_mac(mac))
        except ValueError:
            return None

    def select(self, hostnames: Iterable[str] = (), role: str | None = None, all_nodes: bool = False) -> list[Node]:
        """Nodes picked on a command line: by name, by role, or all (in inventory order)."""
        if all_nodes:
            return list(self.nodes)
        picked = [self.node(name) for name in hostnames]
        if role is not None:
            _choice(role, ROLES, "role")
            picked += [node for node in self.nodes if node.role == role and node not in picked]
        if not picked:
            raise UserError("no nodes selected: name hosts, or use --role ROLE or --all")
        return picked


# -- loading ---------------------------------------------------------------------------------


class _InventoryLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (libyaml's parser when present) without YAML 1.1's base-60 numbers, so an
    unquoted MAC stays a string. (Under YAML 1.1, 52:54:00:10:00:10 is the integer 41135076010.)
    """


_InventoryLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp) for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_InventoryLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_InventoryLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)

Loc = tuple[str | int, ...]


def _line_map(root: yaml.Node) -> tuple[dict[Loc, int], list[Problem]]:
    """Map each path in the document (('nodes', 1, 'mac')) to its 1-based line; find duplicate keys."""
    lines: dict[Loc, int] = {}
    problems: list[Problem] = []

    def walk(node: yaml.Node, loc: Loc) -> None:
        lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    problems.append(
                        Problem(line, _dotted((*loc, key)), f"duplicate key (first at line {seen[key]})")
                    )
                    continue
                seen[key] = line
                lines[(*loc, key)] = line
                walk(value_node, (*loc, key))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*loc, index))

    walk(root, ())
    return lines, problems


# Aliases make a YAML document a graph: a 1 KB file of nested aliases names billions of
# values, and an alias inside its own anchor names itself. Both are refused before any walk
# that expands aliases (the line map, the models).
MAX_EXPANDED_EXTRA = 100_000  # values an inventory may add through aliases


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _graph_problem(root: yaml.Node) -> Problem | None:
    """A recursive alias, an expansion past the limit, or a control character in a value:
    found in one pass over the distinct nodes (iterative: no recursion to run out of)."""
    expanded: dict[int, int] = {}
    started: set[int] = set()  # nodes being expanded: an alias to one of them is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            started.discard(key)
            expanded[key] = 1 + sum(expanded[id(child)] for child in _children(node))
            continue
        if key in expanded:
            continue
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode) and _CONTROL.search(str(node.value)):
            char = _CONTROL.search(str(node.value)).group()  # type: ignore[union-attr]
            return Problem(line, "", f"a value contains the control character {char!r} "
                                     f"({str(node.value)[:40]!r}): remove it (a trailing "
                                     "newline too: use a plain or quoted scalar, not |)")
        started.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in started:
                return Problem(child.start_mark.line + 1, "",
                               "recursive alias: the value anchored here contains an alias to "
                               "itself; an alias must not be inside its own anchor")
            if id(child) not in expanded:
                stack.append((child, False))
    distinct = len(expanded)
    if expanded[id(root)] > distinct + MAX_EXPANDED_EXTRA:
        return Problem(root.start_mark.line + 1, "",
                       f"through its aliases this document names {expanded[id(root)]:,} values "
                       f"({distinct:,} written): an alias bomb? write the values out or use "
                       "fewer nested aliases")
    return None


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _validation_problems(
    exc: ValidationError, prefix: Loc, lines: dict[Loc, int], known: Iterable[str]
) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = (*prefix, *(part for part in error["loc"] if part != "size_bytes"))
        if "size_bytes" in error["loc"]:
            loc = (*loc, "size")
        kind = error["type"]
        if kind == "missing":
            message = "required field is missing"
        elif kind == "extra_forbidden":
            field = str(loc[-1])
            close = difflib.get_close_matches(field, list(known), n=1)
            message = f"unknown field {field!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        elif kind == "ip_v4_address":
            message = f"{error['input']!r} is not an IPv4 address"
        else:
            message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        problems.append(Problem(_line_of(lines, loc), _dotted(loc), message))
    return problems


def _duplicate_problems(raw_nodes: list[Any], lines: dict[Loc, int]) -> list[Problem]:
    """Hostname, MAC, IP and BMC endpoint must be unique; checked on the raw entries so a
    node with other errors still counts (compared in normalised form where it parses)."""

    def key(field: str, raw: dict[str, Any]) -> str | None:
        value = raw.get(field)
        if field == "bmc":
            if not isinstance(value, dict) or "address" not in value:
                return None
            return f"{value['address']}:{value.get('port', 623)}"
        if value is None or isinstance(value, dict | list):
            return None
        if field == "mac":
            try:
                return normalize_mac(value)
            except ValueError:
                return None
        return str(value).lower()

    problems = []
    first: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict):
            continue
        for field in ("hostname", "mac", "ip", "bmc"):
            value = key(field, raw)
            if value is None:
                continue
            earlier = first.setdefault((field, value), index)
            if earlier != index:
                loc = ("nodes", index, field)
                line = _line_of(lines, ("nodes", earlier))
                problems.append(Problem(_line_of(lines, loc), _dotted(loc),
                                        f"duplicate {field} {value} (also nodes[{earlier}], line {line})"))
    return problems


def _check_nodes(site: Site | None, raw_nodes: list[Any], lines: dict[Loc, int], base_dir: Path) -> list[Problem]:
    """Checks of each node against the site and its role: address, disk size, BMC secret.

    Each check runs on the fields it needs, parsed on their own, so a node with an error in
    one field still gets the other checks.
    """
    from provisiond.layouts import LayoutError, plan_layout

    problems: list[Problem] = []

    def report(index: int, field: str, message: str) -> None:
        loc = ("nodes", index, *field.split("."))
        problems.append(Problem(_line_of(lines, loc), _dotted(loc), message))

    def parsed(parse: Any, value: Any) -> Any:
        try:
            return parse(value)
        except (ValueError, TypeError, ValidationError):
            return None

    for index, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict):
            continue
        ip = parsed(IPv4Address, raw.get("ip"))
        if site is not None and ip is not None:
            network = site.network_of(ip)
            if network is None:
                nets = ", ".join(str(net.network) for net in site.all_networks)
                where = f"the site network {site.network}" if len(site.all_networks) == 1 \
                    else f"every site network ({nets})"
                report(index, "ip", f"{ip} is outside {where}")
            else:
                gateway = f"the gateway of {network.network}" if network.relayed \
                    else "the gateway (site.gateway)"
                reserved = [
                    (network.server, "provisiond's own address (site.server)"),
                    (network.gateway, gateway),
                    (network.network.network_address, "the network address"),
                    (network.network.broadcast_address, "the broadcast address"),
                ]
                taken = " and ".join(what for address, what in reserved if address == ip)
                if taken:
                    report(index, "ip", f"{ip} is {taken}")
                elif network.pool is not None and network.pool[0] <= ip <= network.pool[1]:
                    report(index, "ip", f"{ip} is inside the dynamic pool "
                           f"{network.pool[0]}-{network.pool[1]} of {network.network}")

        role = parsed(lambda value: _choice(value, ROLES, "role"), raw.get("role"))
        disk = parsed(DiskSpec.model_validate, raw.get("disk", {}))
        firmware = parsed(lambda value: _choice(value, FIRMWARES, "firmware"), raw.get("firmware", "bios"))
        if role and disk is not None and disk.size_bytes is not None and firmware:
            try:
                plan_layout(role, disk.size_bytes, device=disk.device, uefi=firmware == "uefi")
            except LayoutError as exc:
                report(index, "disk.size", str(exc))

        bmc = parsed(BmcSpec.model_validate, raw.get("bmc"))
        if bmc is not None and bmc.password_file is not None:
            path = bmc.resolved(base_dir).password_file
            assert path is not None
            problem = _password_file_problem(path)
            if problem:
                report(index, "bmc.password_file", problem)
    return problems


def _password_file_problem(path: Path) -> str | None:
    """What is wrong with a BMC password file, if anything. Never opens what is not a regular
    file (a FIFO would block the reader)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return f"{path} does not exist (create it, mode 0600)"
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror}"
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
        return f"{path} is {kind}: name a file that holds the password"
    if not os.access(path, os.R_OK):
        return f"{path} is not readable by this user"
    try:
        password = path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        return f"{path} cannot be read: {exc}"
    if not password.strip():
        return f"{path} is empty"
    if len(password.encode()) > IPMI_PASSWORD_MAX:
        return (f"{path} holds a password of {len(password.encode())} bytes; IPMI passwords "
                f"are at most {IPMI_PASSWORD_MAX} bytes (a BMC would refuse or cut it)")
    return None


def _resolve_dns_update(site: Site, base_dir: Path, lines: dict[Loc, int]) -> tuple[Site, list[Problem]]:
    """The site with dns_update.key_file made absolute, and the key file checked (it exists,
    is readable and holds one TSIG key; the secret is never quoted)."""
    if site.dns_update is None:
        return site, []
    settings = site.dns_update.resolved(base_dir)
    loc = ("site", "dns_update", "key_file")
    try:
        parse_key_file(settings.key_file.read_text())
    except OSError as exc:
        message = f"{settings.key_file}: {exc.strerror} (make one with `tsig-keygen -a hmac-sha256 NAME`, mode 0600)"
        return site, [Problem(_line_of(lines, loc), _dotted(loc), message)]
    except KeyFileError as exc:
        return site, [Problem(_line_of(lines, loc), _dotted(loc), f"{settings.key_file}: {exc}")]
    return site.model_copy(update={"dns_update": settings}), []


def load_inventory(path: Path | str) -> Inventory:
    """Load and validate an inventory file; raise InventoryError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        missing = Problem(None, "", "file not found (see docs/inventory.md for the format)")
        raise InventoryError(path, [missing]) from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        column = exc.start - (exc.object.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InventoryError(path, [Problem(line, "", f"not UTF-8 text: byte "
                                                      f"{exc.object[exc.start]:#04x} at column "
                                                      f"{column}; save the file as UTF-8")]) from None
    except OSError as exc:
        raise InventoryError(path, [Problem(None, "", f"cannot read: {exc}")]) from None

    try:
        root = yaml.compose(text, Loader=_InventoryLoader)
        graph = _graph_problem(root) if root is not None else None
        if graph is not None:
            raise InventoryError(path, [graph])
        data = yaml.load(text, Loader=_InventoryLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise InventoryError(path, [Problem(line, "", f"YAML syntax error: {problem}")]) from None
    except RecursionError:
        raise InventoryError(path, [Problem(None, "", "YAML nested too deeply: an inventory "
                                                      "needs a few levels")]) from None
    if root is None or not isinstance(data, dict):
        raise InventoryError(path, [Problem(1, "", "expected a mapping with 'site' and 'nodes'")])

    lines, problems = _line_map(root)
    for key in data.keys() - {"site", "nodes"}:
        problems.append(Problem(_line_of(lines, (key,)), str(key), "unknown top-level key (expected site, nodes)"))

    site: Site | None = None
    if "site" not in data:
        problems.append(Problem(1, "site", "required section is missing"))
    elif not isinstance(data["site"], dict):
        problems.append(Problem(_line_of(lines, ("site",)), "site", "must be a mapping"))
    else:
        try:
            site = Site.model_validate(data["site"])
        except ValidationError as exc:
            problems += _validation_problems(exc, ("site",), lines, Site.model_fields)
        else:
            site, key_problems = _resolve_dns_update(site, path.resolve().parent, lines)
            problems += key_problems

    raw_nodes = data.get("nodes")
    parsed: list[tuple[int, Node]] = []
    if raw_nodes is None:
        problems.append(Problem(_line_of(lines, ("nodes",)) or 1, "nodes", "required list is missing or empty"))
        raw_nodes = []
    elif not isinstance(raw_nodes, list):
        problems.append(Problem(_line_of(lines, ("nodes",)), "nodes", "must be a list of nodes"))
        raw_nodes = []
    base_dir = path.resolve().parent
    for index, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict):
            problems.append(
                Problem(_line_of(lines, ("nodes", index)), f"nodes[{index}]",
                        "each node must be a mapping with hostname, mac, role and ip")
            )
            continue
        try:
            node = Node.model_validate({key: value for key, value in raw.items() if key != "domain"})
        except ValidationError as exc:
            problems += _validation_problems(exc, ("nodes", index), lines, Node.model_fields)
            continue
        if "domain" in raw:
            problems.append(Problem(_line_of(lines, ("nodes", index, "domain")), f"nodes[{index}].domain",
                                    "unknown field 'domain' (the domain is site.domain)"))
        home = site.network_of(node.ip) if site is not None else None
        update: dict[str, Any] = {"domain": home.domain if home else (site.domain if site else "")}
        if node.os is None and site is not None:
            update["os"] = site.os
        if node.install is None and site is not None:
            update["install"] = site.install
        method, os_name = update.get("install", node.install), update.get("os", node.os)
        if method == "image" and os_name not in IMAGE_OPERATING_SYSTEMS:
            problems.append(Problem(
                _line_of(lines, ("nodes", index, "install")) or _line_of(lines, ("nodes", index)),
                f"nodes[{index}].install",
                f"the image method installs {', '.join(IMAGE_OPERATING_SYSTEMS)} only, not {os_name} "
                "(use install: installer for this node)"))
        if node.bmc is not None:
            update["bmc"] = node.bmc.resolved(base_dir)
        parsed.append((index, node.model_copy(update=update)))

    problems += _duplicate_problems(raw_nodes, lines)
    problems += _check_nodes(site, raw_nodes, lines, base_dir)
    if problems or site is None:
        raise InventoryError(path, problems)

    warnings = [
        f"{node.hostname}: bmc.password_env {node.bmc.password_env} is not set here (power commands need it)"
        for _, node in parsed
        if node.bmc is not None and node.bmc.password_env and node.bmc.password_env not in os.environ
    ]
    weak = next((name for prefix, name in _WEAK_HASH_PREFIXES.items()
                 if (site.root_password_hash or "").startswith(prefix)), None)
    if weak:
        warnings.append(f"site.root_password_hash is {weak}, which is cracked quickly: make a "
                        "SHA-512 or yescrypt hash (openssl passwd -6, mkpasswd -m yescrypt)")
    if site.root_password_hash is None and not site.ssh_authorized_keys:
        warnings.append(
            "site: neither root_password_hash nor ssh_authorized_keys is set: installed nodes "
            "will have root locked and no SSH key"
        )
    return Inventory(path=path, site=site, nodes=[node for _, node in parsed], warnings=tuple(warnings))
