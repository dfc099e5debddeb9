"""What the zones should hold, what they hold, and the updates between the two (pure, no I/O).

provisiond owns a name only when it carries provisiond's TXT marker (the ownership record, as
external-dns does it): a name someone else created is never changed or deleted, it is reported
as a conflict. Each change becomes one RFC 2136 update whose prerequisites state what the zone
held when the plan was made (name absent for an add, the marker and old values present for a
change or a removal), so an update never overwrites a change made in between, and running the
same plan twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.reversename
import dns.tsig
import dns.update

# What the zone holds: {absolute name without the final dot: {rtype: values}}.
ZoneContents = dict[str, dict[str, frozenset[str]]]
MANAGED_TYPES = ("A", "PTR")


def marker(site: str) -> str:
    """The TXT value that marks a name as provisiond's, per site (two sites may share a zone)."""
    return f"heritage=provisiond,site={site}"


@dataclass(frozen=True)
class RecordSet:
    zone: str
    name: str  # absolute, lower case, no final dot
    rtype: str  # A or PTR
    values: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    """One name's record set from `old` to `new` (empty old: add; empty new: remove)."""

    zone: str
    name: str
    rtype: str
    old: tuple[str, ...]
    new: tuple[str, ...]
    owned: bool = False  # the name already carries the marker (an add after a partial failure)

    @property
    def kind(self) -> str:
        return "add" if not self.old else "remove" if not self.new else "update"

    def describe(self) -> str:
        if self.kind == "add":
            return f"add {self.name} {self.rtype} {' '.join(self.new)}"
        if self.kind == "remove":
            return f"remove {self.name} {self.rtype} {' '.join(self.old)}"
        return f"update {self.name} {self.rtype} {' '.join(self.old)} -> {' '.join(self.new)}"

    def json(self) -> dict[str, object]:
        return {"action": self.kind, "zone": self.zone, "name": self.name, "type": self.rtype,
                "old": list(self.old), "new": list(self.new)}


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...] = ()
    conflicts: tuple[str, ...] = ()  # names provisiond wants but someone else holds
    problems: tuple[str, ...] = ()  # nodes that cannot get a record (outside every zone)

    def only(self, names: Iterable[str]) -> Plan:
        """The part of the plan about these names (one node's, for the lifecycle hook)."""
        wanted = set(names)
        return Plan(tuple(c for c in self.changes if c.name in wanted),
                    tuple(c for c in self.conflicts if c.split(" ", 1)[0] in wanted),
                    self.problems)


@dataclass(frozen=True)
class Desired:
    record_sets: tuple[RecordSet, ...] = ()
    problems: tuple[str, ...] = field(default=())


def zone_of(name: str, zones: Iterable[str]) -> str | None:
    """The longest zone that holds `name` (None: none does)."""
    holders = [zone for zone in zones if name == zone or name.endswith("." + zone)]
    return max(holders, key=len) if holders else None


def ptr_name(address: IPv4Address) -> str:
    return dns.reversename.from_address(str(address)).to_text(omit_final_dot=True)


def node_names(fqdn: str, address: IPv4Address) -> tuple[str, str]:
    """The two names a node owns: its forward name and its reverse-pointer name."""
    return fqdn.lower(), ptr_name(address)


def desired(nodes: Iterable[tuple[str, IPv4Address]], forward_zones: Iterable[str],
            reverse_zones: Iterable[str]) -> Desired:
    """The A and PTR record sets for (fqdn, address) pairs; a node outside the zones is a problem."""
    forward = list(forward_zones)
    reverse = list(reverse_zones)
    sets: list[RecordSet] = []
    problems: list[str] = []
    for fqdn, address in nodes:
        name, pointer = node_names(fqdn, address)
        zone = zone_of(name, forward)
        if zone is None:
            problems.append(f"{name} is outside the zone{'s' if len(forward) > 1 else ''} "
                            f"{', '.join(forward)} (no A record)")
        else:
            sets.append(RecordSet(zone, name, "A", (str(address),)))
        reverse_zone = zone_of(pointer, reverse)
        if reverse_zone is None:
            problems.append(f"{address} is outside the reverse zones {', '.join(reverse) or '(none)'} "
                            f"(no PTR record for {name})")
        else:
            sets.append(RecordSet(reverse_zone, pointer, "PTR", (name + ".",)))
    return Desired(tuple(sets), tuple(problems))


def plan(wanted: Desired, contents: dict[str, ZoneContents], site: str) -> Plan:
    """The changes that make the zones (`contents`, per zone) hold what is wanted.

    Names that carry this site's marker and are no longer wanted are removed; a wanted name
    that exists without the marker is a conflict and is left alone.
    """
    mark = marker(site)
    changes: list[Change] = []
    conflicts: list[str] = []
    wanted_names = set()
    for record_set in wanted.record_sets:
        wanted_names.add((record_set.zone, record_set.name))
        held = contents.get(record_set.zone, {}).get(record_set.name, {})
        current = tuple(sorted(held.get(record_set.rtype, frozenset())))
        if held and mark not in held.get("TXT", frozenset()):
            conflicts.append(f"{record_set.name} exists without provisiond's marker "
                             f"({', '.join(sorted(held))} records); left alone")
        elif current != record_set.values:
            changes.append(Change(record_set.zone, record_set.name, record_set.rtype, current, record_set.values,
                                  owned=bool(held)))
    for zone, names in sorted(contents.items()):
        for name, held in sorted(names.items()):
            if (zone, name) in wanted_names or mark not in held.get("TXT", frozenset()):
                continue
            for rtype in MANAGED_TYPES:
                if held.get(rtype):
                    changes.append(Change(zone, name, rtype, tuple(sorted(held[rtype])), (), owned=True))
            if not any(held.get(rtype) for rtype in MANAGED_TYPES):
                changes.append(Change(zone, name, "TXT", (mark,), (), owned=True))
    return Plan(tuple(changes), tuple(conflicts), wanted.problems)


def update_message(change: Change, site: str, ttl: int, key: dns.tsig.Key) -> dns.update.UpdateMessage:
    """The RFC 2136 update for one change, signed, with prerequisites for what the zone held."""
    mark = marker(site)
    message = dns.update.UpdateMessage(change.zone, keyring=key)
    name = dns.name.from_text(change.name)
    txt = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [mark.encode()])
    if not change.owned:
        message.absent(name)  # nobody else holds the name (else: YXDOMAIN, nothing changes)
        message.add(name, ttl, "TXT", txt.to_text())
        for value in change.new:
            message.add(name, ttl, change.rtype, value)
        return message
    message.present(name, txt)
    if change.rtype != "TXT" and change.old:
        rdatas = [dns.rdata.from_text("IN", change.rtype, value) for value in change.old]
        message.present(name, *rdatas)
        message.delete(name, change.rtype)
    for value in change.new:
        message.add(name, ttl, change.rtype, value)
    if not change.new:
        message.delete(name, "TXT")
    return message
