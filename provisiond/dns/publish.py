"""Publishing the nodes' names: `provisiond dns sync` and the lifecycle hook used by `serve`.

Both read the zones, plan with provisiond.dns.records and send one signed update per change.
A failed update is recorded as a `dns:failed` event of the node with the server's reply
(NOTAUTH, REFUSED, ...) and the run goes on; nothing here raises for a server's answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provisiond.dns.client import DnsClient, DnsError
from provisiond.dns.records import (
    Change,
    Plan,
    ZoneContents,
    desired,
    node_names,
    plan,
    update_message,
    zone_of,
)
from provisiond.dns.settings import DnsUpdateSettings, default_reverse_zone, parse_key_file
from provisiond.errors import UserError
from provisiond.inventory import Inventory, Site
from provisiond.lifecycle import ON_ITS_ADDRESS, Source
from provisiond.logs import log_event
from provisiond.store import Store

log = logging.getLogger("provisiond.dns")


@dataclass(frozen=True)
class SiteZones:
    """A site's DNS settings with the defaults filled in, for every network of the site
    (relayed ones too): forward zones from the zone (default site.domain) and each network's
    own domain outside it, reverse zones from each network on the octet boundary."""

    settings: DnsUpdateSettings
    site: str
    forward_zones: tuple[str, ...]
    reverse_zones: tuple[str, ...]

    @property
    def zones(self) -> tuple[str, ...]:
        return (*self.forward_zones, *self.reverse_zones)


def site_zones(site: Site) -> SiteZones:
    settings = site.dns_update
    if settings is None:
        raise UserError("the inventory's site has no dns_update section: add server, key_file (and "
                        "zone, reverse_zones if not the defaults); see docs/dns.md")
    forward = [settings.zone or site.domain]
    for network in site.all_networks:
        if zone_of(network.domain, forward) is None:
            forward.append(network.domain)
    reverse = tuple(settings.reverse_zones) or tuple(dict.fromkeys(
        default_reverse_zone(network.network) for network in site.all_networks))
    return SiteZones(settings, site.name, tuple(forward), reverse)


def client_for(zones: SiteZones) -> DnsClient:
    settings = zones.settings
    try:
        key = parse_key_file(settings.key_file.read_text())
    except OSError as exc:
        raise UserError(f"cannot read the TSIG key file {settings.key_file}: {exc.strerror}") from None
    except ValueError as exc:
        raise UserError(f"{settings.key_file}: {exc}") from None
    return DnsClient(str(settings.server), settings.port, key, settings.timeout)


def read_zones(client: DnsClient, zones: SiteZones) -> dict[str, ZoneContents]:
    return {zone: client.read_zone(zone) for zone in zones.zones}


def make_plan(inventory: Inventory, zones: SiteZones, contents: dict[str, ZoneContents]) -> Plan:
    wanted = desired(((node.fqdn, node.ip) for node in inventory.nodes), zones.forward_zones,
                     zones.reverse_zones)
    return plan(wanted, contents, zones.site)


@dataclass
class Outcome:
    change: Change
    host: str | None
    error: str | None = None

    def json(self) -> dict[str, Any]:
        return {**self.change.json(), "host": self.host, "ok": self.error is None, "error": self.error}


@dataclass
class SyncReport:
    plan: Plan
    outcomes: list[Outcome] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return all(outcome.error is None for outcome in self.outcomes)

    def json(self) -> dict[str, Any]:
        changes = ([{**c.json(), "ok": None, "error": None} for c in self.plan.changes] if self.dry_run
                   else [outcome.json() for outcome in self.outcomes])
        return {"dry_run": self.dry_run, "changes": changes, "conflicts": list(self.plan.conflicts),
                "problems": list(self.plan.problems), "ok": self.ok}


def host_of(change: Change, inventory: Inventory | None, domain: str) -> str | None:
    """The node a change is about: its forward name, or the name its PTR points at."""
    fqdn = change.name if change.rtype != "PTR" else (change.new or change.old or ("",))[0].rstrip(".")
    if fqdn.endswith("." + domain):
        return fqdn.removesuffix("." + domain)
    if inventory is not None:
        return next((node.hostname for node in inventory.nodes if node.fqdn == fqdn), None)
    return None


def apply_plan(client: DnsClient, the_plan: Plan, zones: SiteZones, domain: str,
               store: Store | None = None, inventory: Inventory | None = None) -> list[Outcome]:
    """Send one update per change, all over one connection; each result (and each failure,
    with the server's reply) is an event of the node in `store`."""
    with client.connection():
        return [_apply(client, change, zones, domain, store, inventory) for change in the_plan.changes]


def _apply(client: DnsClient, change: Change, zones: SiteZones, domain: str, store: Store | None,
           inventory: Inventory | None) -> Outcome:
    """One change's update; its outcome logged and recorded as an event of its node."""
    host = host_of(change, inventory, domain)
    message = update_message(change, zones.site, zones.settings.ttl, client.signing_key)
    try:
        client.update(message, f"{change.describe()} at {client.where}")
        outcome = Outcome(change, host)
    except DnsError as exc:
        outcome = Outcome(change, host, str(exc))
    kind = f"dns:{change.kind}" if outcome.error is None else "dns:failed"
    detail = {**change.json(), **({"error": outcome.error} if outcome.error else {})}
    log_event(log, kind, logging.INFO if outcome.error is None else logging.WARNING,
              host=host or "", change=change.describe(), error=outcome.error or "")
    if store is not None:
        store.add_event(host, kind, Source.DNS, detail)
    return outcome


def sync(inventory: Inventory, dry_run: bool = False, store: Store | None = None) -> SyncReport:
    """Reconcile the site's zones with the inventory (reads raise DnsError: nothing changed)."""
    zones = site_zones(inventory.site)
    client = client_for(zones)
    the_plan = make_plan(inventory, zones, read_zones(client, zones))
    if dry_run:
        return SyncReport(the_plan, dry_run=True)
    return SyncReport(the_plan, apply_plan(client, the_plan, zones, inventory.site.domain, store, inventory))


class NamePublisher:
    """The lifecycle hook: follows the store's events; a node entering a state in which it runs
    on its own address (lifecycle.ON_ITS_ADDRESS) gets its names, a node removed from the
    inventory loses them. Events before start are not replayed (`dns sync` catches up)."""

    ENTERING = frozenset(f"state:{state}" for state in ON_ITS_ADDRESS)

    def __init__(self, store: Store, inventory: Inventory, interval: float = 2.0,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        self.store, self.inventory, self.interval = store, inventory, interval
        self.zones = site_zones(inventory.site)
        self.client = client_for(self.zones)
        self.cursor = max((event.id for event in store.latest_events().values()), default=0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> list[Outcome]:
        """Handle the events since the last step; returns what was sent."""
        hosts: dict[str, bool] = {}  # host -> publish (True) or withdraw (False); last event wins
        for event in self.store.events(since=self.cursor):
            self.cursor = event.id
            if event.hostname and event.kind in self.ENTERING:
                hosts[event.hostname] = True
            elif event.hostname and event.kind == "removed":
                hosts[event.hostname] = False
        if not hosts:
            return []
        domain = self.inventory.site.domain
        try:
            contents = read_zones(self.client, self.zones)
        except DnsError as exc:
            for host in hosts:
                self.store.add_event(host, "dns:failed", Source.DNS, {"error": str(exc)})
            log_event(log, "dns:failed", logging.WARNING, hosts=",".join(hosts), error=str(exc))
            return []
        full = make_plan(self.inventory, self.zones, contents)
        names: set[str] = set()
        domains = dict.fromkeys(network.domain for network in self.inventory.site.all_networks)
        for host, publish in hosts.items():
            if publish:
                node = next((n for n in self.inventory.nodes if n.hostname == host), None)
                if node is not None:
                    names.update(node_names(node.fqdn, node.ip))
                continue
            # Removed: its forward name in whichever network's domain it had, and every
            # reverse name of ours that points at it.
            for fqdn in (f"{host}.{name}" for name in domains):
                names.add(fqdn)
                names.update(name for zone in self.zones.reverse_zones
                             for name, held in contents.get(zone, {}).items()
                             if f"{fqdn}." in held.get("PTR", frozenset()))
        part = full.only(names)
        for conflict in part.conflicts:
            log_event(log, "dns:conflict", logging.WARNING, msg=conflict)
        return apply_plan(self.client, part, self.zones, domain, self.store, self.inventory)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dns-publisher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception:
                log.exception("publishing names failed; retrying at the next interval")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
