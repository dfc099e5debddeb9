"""`provisiond serve`: DHCP, TFTP and HTTP around one store, until SIGTERM.

In-process: DHCP (per interface), TFTP (on each interface's site address), the deadline
timer and (with site.dns_update) the DNS name publisher, each with start()/stop(). HTTP:
waitress (provisiond.http.wsgi) as a child process managed by PID, bound to the same
addresses. All share the SQLite store (WAL), so a
killed and restarted server resumes exactly where it was: state, leases and events are on disk.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

from provisiond import nodes
from provisiond.boot.service import BootService
from provisiond.config import Config
from provisiond.dhcp.server import DhcpServer
from provisiond.endpoint import Endpoint, resolve_endpoint
from provisiond.errors import UserError
from provisiond.http import operator_token
from provisiond.http import wsgi as wsgi_env
from provisiond.inventory import Inventory, load_inventory
from provisiond.logs import log_event
from provisiond.metrics import Metrics
from provisiond.store import Store
from provisiond.tftp.server import TftpServer, TransferStats

log = logging.getLogger("provisiond.serve")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In the HTTP child: get SIGTERM if serve dies (even by SIGKILL), so no orphan keeps
    the HTTP port."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class DeadlineTimer:
    """Fails nodes that stayed in a state past its deadline ("timed out in STATE")."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="deadline-timer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.config.deadline_check_seconds):
            try:
                for hostname in self.store.expire_overdue(self.config.timeouts):
                    log_event(log, "timed-out", logging.WARNING, host=hostname)
            except Exception:
                log.exception("deadline check failed; retrying at the next interval")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class HttpProcess:
    """The HTTP service (waitress) as a child process: started, health-checked and stopped by
    PID."""

    def __init__(self, config: Config, addresses: list[IPv4Address], base_url: str | None,
                 verbosity: int) -> None:
        self.config = config
        self.addresses = addresses
        self.base_url = base_url
        self.verbosity = verbosity
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        binds = [arg for address in self.addresses
                 for arg in ("--listen", f"{address}:{self.config.http_port}")]
        return [sys.executable, "-m", "provisiond.http.wsgi", *binds,
                "--threads", str(self.config.http_threads),
                "--connection-limit", str(self.config.http_connection_limit),
                "--idle-timeout", str(self.config.http_idle_timeout)]

    def start(self, timeout: float = 30.0) -> None:
        """Start the HTTP service and wait until *it* answers (another server on the port does not
        count: the health check must echo this start's instance id)."""
        instance = secrets.token_hex(8)
        env = dict(os.environ)
        env.update({
            wsgi_env.ENV_CONFIG: str(self.config.source or ""),
            wsgi_env.ENV_INVENTORY: str(Path(self.config.inventory).resolve()),
            wsgi_env.ENV_STATE_DIR: str(Path(self.config.state_dir).resolve()),
            wsgi_env.ENV_BASE_URL: self.base_url or "",
            wsgi_env.ENV_VERBOSITY: str(self.verbosity),
            wsgi_env.ENV_INSTANCE: instance,
        })
        self.process = subprocess.Popen(self.command(), env=env, stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent)
        health = f"http://{self.addresses[0]}:{self.config.http_port}/api/v1/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise UserError(f"the HTTP service exited with {code} while starting on "
                                f"port {self.config.http_port}: see its log above (port in use? "
                                "pass another --http-port)")
            try:
                with urllib.request.urlopen(health, timeout=2) as reply:
                    if json.load(reply).get("instance") == instance:
                        log_event(log, "http-ready", pid=self.process.pid, url=health)
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.2)
        self.stop()
        raise UserError(f"the HTTP service did not answer {health} within {timeout:.0f} s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


class Stoppable(Protocol):
    def stop(self) -> None: ...


class Server:
    """The whole server; start() is bounded and non-blocking, stop() joins everything."""

    def __init__(self, config: Config, verbosity: int = 1) -> None:
        if not config.interfaces:
            raise UserError("no interface to serve on: pass --interface IFACE or set "
                            "serve.interfaces in provisiond.toml")
        self.config = config
        self.verbosity = verbosity
        self.inventory: Inventory = load_inventory(config.inventory)
        self.store = Store.in_state_dir(config.state_dir)
        self.http: HttpProcess | None = None
        self.metrics = Metrics()
        self._started: list[tuple[str, Stoppable]] = []

    def start(self) -> None:
        """Check everything that can be wrong first (nothing is started until it all holds)."""
        config, inventory, store = self.config, self.inventory, self.store
        endpoints = [resolve_endpoint(spec, inventory.site, config.http_port)
                     for spec in config.interfaces]
        self._prepare_tftp_root()
        # Created before the sync, so the nodes it removes from the store lose their names too.
        publisher = None
        if inventory.site.dns_update is not None:
            from provisiond.dns.publish import NamePublisher  # dnspython's query stack: only when used

            publisher = NamePublisher(store, inventory)
        nodes.sync(store, inventory)
        operator_token(config.operator_token_file)
        self._check_assets()
        addresses = [endpoint.address for endpoint in endpoints]
        if inventory.site.server not in addresses:
            log_event(log, "server-address-mismatch", logging.WARNING,
                      inventory_server=str(inventory.site.server),
                      serving=",".join(map(str, addresses)))
        for network in inventory.site.all_networks:
            if network.relayed and not network.reached_from(addresses):
                # Its nodes would be told to fetch from an address nobody serves.
                raise UserError(
                    f"network {network.network} is served at {network.server} (its `server`, "
                    f"default site.server), but serve answers only on {', '.join(map(str, addresses))}: "
                    "pass the interface with that address, or set the network's server")
        # One interface: one base URL for everything. Several: HTTP takes it from the Host
        # header each node used (each reaches us on its own network's address).
        single_url = endpoints[0].base_url if len(endpoints) == 1 else None
        try:
            self.http = HttpProcess(config, addresses, single_url, self.verbosity)
            self.http.start()
            self._started.append(("http", self.http))
            for endpoint in endpoints:
                self._serve_on(endpoint)
            timer = DeadlineTimer(store, config)
            timer.start()
            self._started.append(("deadline timer", timer))
            if publisher is not None:
                publisher.start()
                self._started.append(("dns publisher", publisher))
        except BaseException:
            self.stop()
            raise
        log_event(log, "serving", interfaces=",".join(e.interface for e in endpoints),
                  addresses=",".join(map(str, addresses)), http_port=config.http_port,
                  tftp_port=config.tftp_port, nodes=len(inventory.nodes),
                  state_dir=str(config.state_dir))

    def _serve_on(self, endpoint: Endpoint) -> None:
        """TFTP and DHCP on one interface, with the boot decision at that endpoint."""
        config, inventory, store = self.config, self.inventory, self.store
        boot = BootService(inventory, store, config, endpoint.base_url)
        tftp = TftpServer(config.tftp_root, str(endpoint.address), config.tftp_port,
                          responder=boot.tftp_responder, on_transfer=self._transfer,
                          max_transfers=config.tftp_max_transfers,
                          max_per_client=config.tftp_max_per_client,
                          max_silence=config.tftp_max_silence)
        tftp.start()
        self._started.append((f"tftp {endpoint.address}", tftp))
        dhcp = DhcpServer(inventory, store, endpoint.interface, http_port=config.http_port,
                          proxy=config.dhcp_proxy, config=config, endpoint=endpoint,
                          on_decision=self.metrics.dhcp)
        dhcp.start()
        self._started.append((f"dhcp {endpoint.interface}", dhcp))

    def _prepare_tftp_root(self) -> None:
        """The default TFTP root is created (the operator never asked for it, and provisiond
        answers every boot file itself); a root the operator named must exist."""
        root = Path(self.config.tftp_root)
        if root.is_dir():
            return
        if root == Config.tftp_root:
            root.mkdir(parents=True, exist_ok=True)
            log_event(log, "tftp-root-created", path=str(root))
            return
        raise UserError(f"TFTP root {root} is not a directory: create it, or pass another "
                        "--tftp-root (serve.tftp_root in provisiond.toml)")

    def _check_assets(self) -> None:
        """Warn (not fail: other nodes can still install) when an OS in use lacks its files."""
        for os_name in sorted({node.os_name for node in self.inventory.nodes}):
            assets = self.config.assets.get(os_name)
            for path in (assets.kernel, assets.initrd) if assets else ():
                if not path.is_file():
                    hosts = [n.hostname for n in self.inventory.nodes if n.os_name == os_name]
                    log_event(log, "asset-missing", logging.WARNING, os=os_name, path=str(path),
                              nodes=",".join(hosts),
                              msg=f"set [os.{os_name}] kernel/initrd in provisiond.toml")

    def _transfer(self, stats: TransferStats) -> None:
        self.metrics.tftp(stats.outcome, stats.bytes, stats.retransmits, stats.duration)
        self.store.record_transfer(stats.peer, stats.filename, stats.bytes, stats.duration,
                                   stats.retransmits, dict(stats.options), stats.outcome)

    def stop(self) -> None:
        while self._started:
            name, service = self._started.pop()
            try:
                service.stop()
            except Exception:
                log.exception("stopping %s failed", name)
        self.store.close()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; exit non-zero if the HTTP child dies on its own."""
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        code = 0
        try:
            self.start()
            while not stop.wait(1.0):
                if self.http is not None and not self.http.alive():
                    log_event(log, "http-died", logging.ERROR,
                              msg="the HTTP service exited; stopping (a supervisor restarts us)")
                    code = 1
                    break
        finally:
            log_event(log, "stopping")
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log_event(log, "stopped", code=code)
        return code
