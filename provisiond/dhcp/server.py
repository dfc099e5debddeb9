"""The DHCP server: one thread, sockets bound to one interface, around the pure policy.

The thread reads a datagram, parses it (malformed ones are counted and dropped), picks the
network it is for (`selection`: relay, RFC 3011/3527 options, client or interface), looks up
who the client is (inventory reservation, else that network's dynamic pool), asks `policy.decide`,
records what must persist (lease, seen MAC, the node's `pxe` observation) and sends the reply.
Nothing a client sends can stop the loop: every failure is counted and logged.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Protocol

from provisiond.boot.decision import classify
from provisiond.boot.service import BootService
from provisiond.config import Config
from provisiond.dhcp.options import MessageType, Opt
from provisiond.dhcp.packet import HTYPE_ETHERNET, DhcpPacket, MalformedPacket, build, parse
from provisiond.dhcp.policy import (
    PXE_PORT,
    SERVER_PORT,
    Action,
    Assignment,
    Decision,
    Site,
    decide,
    ignore,
    is_ipxe,
    is_netboot_client,
)
from provisiond.dhcp.selection import select_network
from provisiond.endpoint import Endpoint, resolve_endpoint
from provisiond.errors import UserError
from provisiond.inventory import Inventory, SiteNetwork, parse_pool
from provisiond.lifecycle import Source
from provisiond.store import Store, UnknownNode

log = logging.getLogger(__name__)

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
# How often the loop looks at the stop flag; bounds stop() and the offer/seen bookkeeping.
POLL_SECONDS = 0.2
OFFER_HOLD_SECONDS = 60.0
SEEN_RECORD_INTERVAL = 60.0
DECLINE_REPORT_INTERVAL = 60.0  # one warning and event per MAC per minute
DECLINE_REPORTS_PER_MINUTE = 30  # and at most this many for all MACs: the rest are counted
# Room for a burst (a rack powering on at once) while the thread writes a lease.
# Not more: packets that wait longer than a client's retransmit timeout are wasted work.
RECEIVE_BUFFER = 1024 * 1024
# Datagrams served per group commit of their leases.
BATCH = 64
DISCOVER = bytes([MessageType.DISCOVER])

LeaseRow = tuple[str, str, str | None, float]  # mac, ip, hostname, expires
Outgoing = tuple[bytes, tuple[str, int], str, IPv4Address]  # datagram, destination, client MAC, source


@lru_cache(maxsize=65536)
def _address(text: str) -> IPv4Address:
    return IPv4Address(text)


@lru_cache(maxsize=65536)
def _text(address: IPv4Address) -> str:
    return str(address)


class _Node(Protocol):
    hostname: str
    mac: str
    ip: IPv4Address


@dataclass(frozen=True)
class Pool:
    """A dynamic range for clients not in the inventory (discovery); off unless configured."""

    first: IPv4Address
    last: IPv4Address

    @classmethod
    def parse(cls, text: str) -> Pool:
        try:
            return cls(*parse_pool(text))
        except ValueError as exc:
            raise UserError(str(exc)) from None

    def __contains__(self, address: object) -> bool:
        return isinstance(address, IPv4Address) and self.first <= address <= self.last

    def addresses(self) -> range:
        return range(int(self.first), int(self.last) + 1)


class DhcpServer:
    """DHCP for the inventory's nodes on one interface; `start()` returns at once."""

    def __init__(
        self, inventory: Inventory, store: Store, interface: str, http_port: int = 8080,
        proxy: bool = False, *, pool: Pool | None = None, lease_time: int = 3600,
        config: Config | None = None, endpoint: Endpoint | None = None,
        on_decision: Callable[[str, str], None] | None = None,
    ) -> None:
        """`endpoint`: where this server answers (serve computes it once for DHCP, TFTP and
        HTTP); without it, found from `interface` (a name or an address) at start().
        `on_decision(message type, action)` is told of every request answered or not (metrics)."""
        self.inventory = inventory
        self.endpoint = endpoint
        self.config = config or Config()
        self.boot: BootService | None = None
        self.store = store
        self.interface = interface
        self.http_port = http_port
        self.proxy = proxy
        self.pool = pool  # the dynamic range on the interface's own network (--pool)
        self.lease_time = lease_time
        self.stats: Counter[str] = Counter()
        self.on_decision = on_decision
        self.site: Site | None = None  # the interface's own network
        self.sites: dict[IPv4Network, Site] = {}  # every network of the inventory
        self._pools: dict[IPv4Network, Pool] = {}
        self._arrival: IPv4Network | None = None
        self._nodes: dict[str, _Node] = {node.mac: node for node in inventory.nodes}
        self._reserved = {node.ip for node in inventory.nodes}
        self._pool_owner: dict[IPv4Address, tuple[str, float]] = {}  # ip -> (mac, expires)
        self._seen: dict[str, float] = {}
        self._declines_reported: dict[str, float] = {}  # mac -> when its last one was reported
        self._decline_window = (0.0, 0)  # (minute start, reports in it)
        self._sockets: list[socket.socket] = []
        self._pktinfo: dict[IPv4Address, list[tuple[int, int, bytes]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Check the interface, bind, clean up stale leases, and serve in a background thread."""
        if self._thread is not None:
            raise RuntimeError("DhcpServer already started")
        site = self.inventory.site
        if self.endpoint is None:
            self.endpoint = resolve_endpoint(self.interface, site, self.http_port)
        self.interface, server = self.endpoint.interface, self.endpoint.address
        home = site.network_of(server)
        assert home is not None, "resolve_endpoint serves only an address on an inventory network"
        for network in site.all_networks:
            # Our address as each network's nodes reach it: on the interface's own network the
            # address we serve on; on a relayed one, its `server` (where its relay sends to).
            address = server if network.network == home.network else network.server
            self.sites[network.network] = self._site(network, address)
            pool = self.pool if network.network == home.network and self.pool else None
            if pool is None and network.pool is not None:
                pool = Pool(*network.pool)
            if pool is not None and not self.proxy:
                self._check_pool(pool, network.network, address)
                self._pools[network.network] = pool
        self._arrival = home.network
        self.site = self.sites[home.network]
        self.boot = BootService(self.inventory, self.store, self.config, self.endpoint.base_url)
        ports = (SERVER_PORT, PXE_PORT) if self.proxy else (SERVER_PORT,)
        try:
            self._sockets = [self._bind(port, self._bind_address(port)) for port in ports]
        except BaseException:
            self._close()
            raise
        self._load_leases()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"dhcp-{self.interface}", daemon=True)
        self._thread.start()
        log.info(
            "DHCP%s serving %d nodes on %s as %s (ports %s; networks %s)", " proxy" if self.proxy else "",
            len(self._nodes), self.interface, server, ", ".join(map(str, ports)),
            ", ".join(map(str, self.sites)),
        )

    def _site(self, network: SiteNetwork, server: IPv4Address) -> Site:
        ntp = []
        for name in network.ntp:
            try:
                ntp.append(IPv4Address(name))
            except ValueError:
                log.info("NTP server %s is not an IPv4 address; option 42 carries addresses only", name)
        return Site(
            server=server, network=network.network, gateway=network.gateway, dns=network.dns,
            ntp=tuple(ntp), domain=network.domain or None, lease_time=self.lease_time,
            proxy=self.proxy,
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and close the sockets; returns within about `timeout` seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("DHCP thread did not stop within %.1f s", timeout)
            self._thread = None
        self._close()

    def _close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    def _bind_address(self, port: int) -> str:
        """Where to listen: everything, except port 67 in proxy mode.

        Linux hands a broadcast to every socket bound to its port, but a unicast datagram to
        one socket only: the best match (a specific address beats the wildcard, a bound device
        adds to it), and among equals the one bound last (or last used on that CPU). Beside the
        site's DHCP server on the same host (dnsmasq binds 0.0.0.0:67 on the interface too), a
        wildcard port 67 socket of ours would take some of its clients' unicast renewals. Bound
        to 255.255.255.255, the socket matches broadcasts only (what a PXE DISCOVER is) and
        never a unicast; port 4011 is ours alone.
        """
        return "255.255.255.255" if self.proxy and port == SERVER_PORT else "0.0.0.0"

    def _bind(self, port: int, address: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.interface.encode())
            sock.bind((address, port))
        except PermissionError:
            sock.close()
            raise UserError(
                f"cannot bind UDP port {port} on {self.interface}: needs root "
                "(or CAP_NET_RAW and CAP_NET_BIND_SERVICE); run provisiond as root"
            ) from None
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"UDP port {port} on {self.interface} is taken by another program "
                    "(another DHCP server such as dnsmasq or kea?): stop it, or run provisiond "
                    "with --proxy beside a server that sets SO_REUSEADDR"
                ) from None
            raise UserError(f"cannot bind UDP port {port} on {self.interface}: {exc.strerror}") from None
        sock.setblocking(False)
        return sock

    def _pktinfo_for(self, source: IPv4Address) -> list[tuple[int, int, bytes]]:
        """The IP_PKTINFO control message that makes `source` the reply's source address."""
        if source not in self._pktinfo:
            self._pktinfo[source] = [(socket.IPPROTO_IP, IP_PKTINFO,
                                      struct.pack("=I4s4s", 0, source.packed, bytes(4)))]
        return self._pktinfo[source]

    def _check_pool(self, pool: Pool, network: IPv4Network, server: IPv4Address) -> None:
        if pool.first not in network or pool.last not in network:
            raise UserError(
                f"dynamic pool {pool.first}-{pool.last} is not inside the site network "
                f"{network}: choose a range on that network"
            )
        clash = sorted(a for a in self._reserved | {server} if a in pool)
        if clash:
            raise UserError(
                f"dynamic pool {pool.first}-{pool.last} contains reserved addresses "
                f"({', '.join(map(str, clash[:5]))}): choose a range without node or server addresses"
            )

    def _load_leases(self) -> None:
        """Keep the leases that still hold; release those of removed nodes or changed addresses."""
        for lease in self.store.leases():
            node = self._nodes.get(lease.mac)
            address = IPv4Address(lease.ip)
            if node is not None and node.ip == address:
                continue
            if node is None and self._pool_of(address) is not None:
                self._pool_owner[address] = (lease.mac, lease.expires)
                continue
            self.store.release_lease(lease.mac)
            why = "address changed" if node is not None else "not in the inventory"
            log.info("released lease %s for %s (%s)", lease.ip, lease.mac, why)

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for sock in self._sockets:
            selector.register(sock, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(POLL_SECONDS):
                    self._drain(key.fileobj)  # type: ignore[arg-type]
        finally:
            selector.close()
            self.store.close()

    def _drain(self, sock: socket.socket) -> None:
        """Serve the datagrams waiting on `sock`, a bounded batch at a time.

        Group commit: the leases of a batch are saved in one transaction, and the replies
        are sent only after that, so an ACK never goes out for a lease that is not stored.
        """
        port = sock.getsockname()[1]
        while not self._stop.is_set():
            batch: list[tuple[DhcpPacket, tuple[IPv4Address, int]]] = []
            received = 0
            while received < BATCH:
                try:
                    data, source = sock.recvfrom(4096)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    self.stats["errors"] += 1
                    log.warning("DHCP receive on %s failed: %s", self.interface, exc)
                    break
                received += 1
                request = self._parse(data, source[0])
                if request is not None:
                    batch.append((request, (_address(source[0]), source[1])))
            if received == 0:
                return
            # Under a backlog, finish the exchanges in progress (REQUEST) before starting new
            # ones (DISCOVER): a late ACK makes the client start over, wasting both.
            batch.sort(key=lambda item: item[0].options[Opt.MESSAGE_TYPE] == DISCOVER)
            outbox: list[Outgoing] = []
            leases: list[LeaseRow] = []
            for request, source in batch:
                try:
                    self._handle(request, source, port, outbox, leases)
                except Exception:
                    self.stats["errors"] += 1
                    log.exception("DHCP: failed to answer %s from %s; still serving",
                                  request.mac, source[0])
            if leases:
                try:
                    self.store.save_leases(leases)
                except Exception:
                    self.stats["errors"] += 1
                    log.exception("DHCP: could not store %d leases; their ACKs are not sent",
                                  len(leases))
                    unsaved = {mac for mac, *_ in leases}
                    outbox = [item for item in outbox if item[2] not in unsaved]
            for data, destination, _mac, source in outbox:
                try:
                    # IP_PKTINFO sets the source address to our server id, which matters when
                    # the interface has several addresses (relays check where replies are from).
                    sock.sendmsg([data], self._pktinfo_for(source), 0, destination)
                except OSError as exc:
                    self.stats["errors"] += 1
                    log.warning("sending to %s:%d failed: %s", *destination, exc)

    def _parse(self, data: bytes, source: str) -> DhcpPacket | None:
        self.stats["received"] += 1
        try:
            request = parse(data)
        except MalformedPacket as exc:
            self.stats["malformed"] += 1
            log.debug("dropped malformed packet from %s: %s", source, exc)
            return None
        if request.htype != HTYPE_ETHERNET:
            self.stats["ignored"] += 1
            log.debug("ignored hardware type %d from %s", request.htype, source)
            return None
        return request

    def _handle(
        self, request: DhcpPacket, source: tuple[IPv4Address, int], port: int,
        outbox: list[Outgoing], leases: list[LeaseRow],
    ) -> None:
        selection = select_network(request, tuple(self.sites), self._arrival)
        site = self.sites.get(selection.network) if selection.network is not None else None
        if site is None:
            who, decision = None, ignore(selection.reason)
        else:
            who = self._assignment(request, site)
            decision = decide(request, who, site, port=port, source=source)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s from %s (%s): %s", request.message_type.name, request.mac,
                      source[0], decision.reason, decision.action)
        self.stats[decision.action.value] += 1
        if self.on_decision is not None:
            self.on_decision(request.message_type.name.lower(), decision.action.value)
        self._record(request, who, decision, leases)
        if decision.reply is None or decision.destination is None:
            return
        try:
            reply = build(decision.reply, request.max_message_size)
        except ValueError as exc:
            self.stats["errors"] += 1
            log.warning("reply to %s not sent: %s", request.mac, exc)
            return
        address, dport = decision.destination
        assert site is not None
        outbox.append((reply, (_text(address), dport), request.mac, site.server))

    # -- who is the client, and what to remember ------------------------------------------

    def _assignment(self, request: DhcpPacket, site: Site) -> Assignment | None:
        node = self._nodes.get(request.mac)
        if node is not None:
            # Only a boot client asks the boot decision (it reads the node's state from the
            # store, per request: the HTTP service changes it); an OS's DHCP client never does.
            spec = None
            if is_netboot_client(request):
                assert self.boot is not None
                spec = self.boot.for_dhcp(node, classify(
                    request.client_archs, request.vendor_class, is_ipxe(request)))
            return Assignment(node.ip, node.hostname, boot=spec)
        pool = self._pools.get(site.network)
        if pool is None or self.proxy:
            self._record_seen(request)
            return None
        address = self._pool_address(request, pool)
        if address is None:
            log.warning("dynamic pool %s-%s is full", pool.first, pool.last)
        self._record_seen(request)
        return None if address is None else Assignment(address)

    def _pool_of(self, address: IPv4Address) -> Pool | None:
        return next((pool for pool in self._pools.values() if address in pool), None)

    def _pool_address(self, request: DhcpPacket, pool: Pool) -> IPv4Address | None:
        """The client's pool address: its own lease, else the one it asks for, else a free one."""
        now = time.time()
        mac = request.mac
        owned = next((ip for ip, (owner, _) in self._pool_owner.items() if owner == mac and ip in pool), None)
        if owned is not None:
            return owned
        if request.message_type is not MessageType.DISCOVER:
            return None  # a REQUEST for an address we never offered: not ours to answer

        def free(ip: IPv4Address) -> bool:
            holder = self._pool_owner.get(ip)
            return holder is None or holder[1] < now

        wanted = request.requested_ip
        choice = wanted if wanted in pool and free(wanted) else None  # type: ignore[operator]
        if choice is None:
            choice = next((IPv4Address(i) for i in pool.addresses() if free(IPv4Address(i))), None)
        if choice is not None:
            stale = self._pool_owner.pop(choice, None)
            if stale is not None:
                self.store.release_lease(stale[0])
            self._pool_owner[choice] = (mac, now + OFFER_HOLD_SECONDS)
        return choice

    def _report_decline(self, mac: str) -> bool:
        """Whether this DECLINE gets a warning and an event: anyone can send DECLINEs, so one
        per MAC per minute and DECLINE_REPORTS_PER_MINUTE in all (stats count every one)."""
        now = time.monotonic()
        if now - self._declines_reported.get(mac, -DECLINE_REPORT_INTERVAL) < DECLINE_REPORT_INTERVAL:
            return False
        start, reported = self._decline_window
        if now - start >= 60.0:
            start, reported = now, 0
        if reported >= DECLINE_REPORTS_PER_MINUTE:
            return False
        if len(self._declines_reported) > 10_000:
            self._declines_reported.clear()
        self._declines_reported[mac] = now
        self._decline_window = (start, reported + 1)
        return True

    def _record_seen(self, request: DhcpPacket) -> None:
        """Remember a MAC that is not in the inventory (at most once a minute per MAC)."""
        now = time.monotonic()
        if now - self._seen.get(request.mac, -SEEN_RECORD_INTERVAL) < SEEN_RECORD_INTERVAL:
            return
        if len(self._seen) > 100_000:
            self._seen.clear()
        self._seen[request.mac] = now
        detail: dict[str, Any] = {"interface": self.interface, "message": request.message_type.name}
        if request.vendor_class:
            detail["vendor_class"] = request.vendor_class
        if request.client_archs:
            detail["arch"] = list(request.client_archs)
        if request.hostname:
            detail["hostname"] = request.hostname
        if request.giaddr != IPv4Address(0):
            detail["relay"] = str(request.giaddr)
        self.store.record_seen(request.mac, detail)

    def _record(
        self, request: DhcpPacket, who: Assignment | None, decision: Decision,
        leases: list[LeaseRow],
    ) -> None:
        mac = request.mac
        hostname = who.hostname if who else None
        if decision.lease is not None:
            expires = time.time() + self.lease_time
            leases.append((mac, _text(decision.lease), hostname, expires))
            if self._pool_of(decision.lease) is not None:
                self._pool_owner[decision.lease] = (mac, expires)
        if decision.action in (Action.RELEASE, Action.DECLINE):
            self.store.release_lease(mac)
            for ip, (owner, _) in list(self._pool_owner.items()):
                if owner == mac:
                    del self._pool_owner[ip]
            if decision.action is Action.DECLINE:
                if who is not None and self._pool_of(who.ip) is not None:
                    # Someone else uses it: keep it out of the pool for a lease time.
                    self._pool_owner[who.ip] = ("declined", time.time() + self.lease_time)
                self.stats["declines"] += 1
                if self._report_decline(mac):
                    log.warning("%s (%s) declined %s: %s", mac, hostname or "pool",
                                who and who.ip, decision.reason)
                    self.store.add_event(hostname, "dhcp:decline", Source.DHCP,
                                         {"mac": mac, "ip": str(who.ip) if who else None})
                else:
                    self.stats["declines-not-reported"] += 1
        spec = who.boot if who else None
        if spec is not None and decision.boot_file and (
            decision.action is Action.ACK or (self.proxy and decision.reply is not None)
        ):
            assert self.boot is not None
            try:
                self.boot.dhcp_answered(spec, decision.boot_file)
            except UnknownNode:
                log.warning("node %s is not in the store: run `provisiond serve` (it syncs the "
                            "inventory) so its state can be followed", hostname)
