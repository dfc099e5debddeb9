"""The `dns_update:` section of inventory.site and the TSIG key file it names (pure: the
inventory loader reads the file and hands its text to `parse_key_file`).

The site's DNS lives with the site (the inventory), like its domain and name servers; the key's
secret lives in its own file (mode 0600), like a BMC password, never in the inventory.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The algorithms BIND's tsig-keygen makes and dnspython signs with.
ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_KEY_BLOCK = re.compile(r'key\s+"?([A-Za-z0-9._-]+)"?\s*\{(.*?)\}\s*;', re.DOTALL)
_KEY_FIELD = re.compile(r'(algorithm|secret)\s+"?([^";]+?)"?\s*;')


def _zone_name(value: str) -> str:
    labels = value.strip().lower().rstrip(".").split(".")
    if not value.strip() or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{value!r} is not a DNS zone name")
    return ".".join(labels)


class DnsUpdateSettings(BaseModel):
    """Where the site's names are published: one server, a forward zone, reverse zones, a key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: IPv4Address
    port: int = Field(53, ge=1, le=65535)
    zone: str | None = None  # default: site.domain
    reverse_zones: list[str] = Field(default_factory=list)  # default: from site.network
    key_file: Path
    ttl: int = Field(300, ge=0, le=2147483647)
    timeout: float = Field(5.0, gt=0, le=120)  # each query or update, seconds

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else _zone_name(value)

    @field_validator("reverse_zones")
    @classmethod
    def _reverse(cls, value: list[str]) -> list[str]:
        zones = [_zone_name(item) for item in value]
        for zone in zones:
            if not zone.endswith("in-addr.arpa"):
                raise ValueError(f"{zone!r} is not a reverse zone (it ends in in-addr.arpa)")
        return zones

    def resolved(self, base_dir: Path) -> DnsUpdateSettings:
        """The same settings with key_file made absolute (relative to the inventory file)."""
        if self.key_file.is_absolute():
            return self
        return self.model_copy(update={"key_file": base_dir / self.key_file})


def default_reverse_zone(network: IPv4Network) -> str:
    """The in-addr.arpa zone on the octet boundary that holds `network` (a /24 gives 3 labels)."""
    octets = max(1, min(3, network.prefixlen // 8))
    parts = str(network.network_address).split(".")[:octets]
    return ".".join(reversed(parts)) + ".in-addr.arpa"


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key read from a BIND key file; repr never shows the secret."""

    name: str
    algorithm: str
    secret: str = field(repr=False)


class KeyFileError(ValueError):
    """The key file is not a BIND key file; the message never quotes the secret."""


def parse_key_file(text: str) -> TsigKey:
    """Read `key "name" { algorithm hmac-sha256; secret "base64"; };` (tsig-keygen's output)."""
    blocks = _KEY_BLOCK.findall(text)
    if len(blocks) != 1:
        found = "no" if not blocks else str(len(blocks))
        raise KeyFileError(f"expected one key block (key \"NAME\" {{ algorithm ...; secret \"...\"; }};), "
                           f"found {found}; make one with `tsig-keygen -a hmac-sha256 NAME`")
    name, body = blocks[0]
    fields = dict(_KEY_FIELD.findall(body))
    missing = [key for key in ("algorithm", "secret") if key not in fields]
    if missing:
        raise KeyFileError(f"key {name!r}: {' and '.join(missing)} missing")
    algorithm = fields["algorithm"].lower()
    if algorithm not in ALGORITHMS:
        raise KeyFileError(f"key {name!r}: algorithm {algorithm!r} unknown (one of {', '.join(ALGORITHMS)})")
    try:
        base64.b64decode(fields["secret"], validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"key {name!r}: the secret is not base64") from None
    return TsigKey(name=name.lower().rstrip("."), algorithm=algorithm, secret=fields["secret"])
