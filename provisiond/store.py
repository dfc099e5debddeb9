"""The store: node state, events, tokens, DHCP leases, seen MACs, TFTP transfer stats, and the
agent phase (agent credentials, reported facts, each node's current step, site secrets).

One module owns all persistence so a PostgreSQL backend can replace SQLite by configuration
later. SQLite runs in WAL mode (readers never block the writer), one connection per thread,
and schema migrations are numbered and applied at open (PRAGMA user_version).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisiond import lifecycle
from provisiond.lifecycle import ACTIVE, IllegalTransition, Source, State, next_state

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE nodes (
        hostname    TEXT PRIMARY KEY,
        mac         TEXT NOT NULL UNIQUE,
        state       TEXT NOT NULL DEFAULT 'new',
        state_since REAL NOT NULL,
        netboot     INTEGER NOT NULL DEFAULT 0,
        reason      TEXT
    );
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        ts       REAL NOT NULL,
        hostname TEXT,
        kind     TEXT NOT NULL,
        source   TEXT NOT NULL,
        detail   TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_by_host ON events (hostname, id);
    CREATE TABLE tokens (
        hostname   TEXT PRIMARY KEY,
        generation INTEGER NOT NULL,
        issued     REAL NOT NULL
    );
    CREATE TABLE leases (
        mac      TEXT PRIMARY KEY,
        ip       TEXT NOT NULL UNIQUE,
        hostname TEXT,
        expires  REAL NOT NULL,
        updated  REAL NOT NULL
    );
    CREATE TABLE seen_macs (
        mac        TEXT PRIMARY KEY,
        first_seen REAL NOT NULL,
        last_seen  REAL NOT NULL,
        count      INTEGER NOT NULL,
        detail     TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE transfers (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        ts          REAL NOT NULL,
        peer        TEXT NOT NULL,
        filename    TEXT NOT NULL,
        bytes       INTEGER NOT NULL,
        duration    REAL NOT NULL,
        retransmits INTEGER NOT NULL,
        options     TEXT NOT NULL DEFAULT '{}',
        outcome     TEXT NOT NULL
    );
    """,    # 2: the agent phase: agent credentials, reported facts, each node's current step, and
    #    the generations of site secrets (values are derived, never stored).
    """
    CREATE TABLE agent_credentials (
        hostname   TEXT PRIMARY KEY,
        generation INTEGER NOT NULL,
        issued     REAL NOT NULL
    );
    CREATE TABLE facts (
        hostname TEXT NOT NULL,
        name     TEXT NOT NULL,
        value    TEXT NOT NULL DEFAULT 'null',
        ts       REAL NOT NULL,
        PRIMARY KEY (hostname, name)
    );
    CREATE INDEX facts_by_name ON facts (name);
    CREATE TABLE agent_progress (
        hostname TEXT PRIMARY KEY,
        detail   TEXT NOT NULL DEFAULT '{}',
        waiting  TEXT,
        updated  REAL NOT NULL
    );
    CREATE TABLE site_secrets (
        name       TEXT PRIMARY KEY,
        generation INTEGER NOT NULL,
        created    REAL NOT NULL
    );
    """,
)


MAX_SEEN_MACS = 4096  # unknown MACs remembered (most recently seen first)
SEEN_PRUNE_EVERY = 256  # new unknown MACs between two prunes: the table stays under 4096 + 256

class UnknownNode(LookupError):
    """The store has no node by that name (it is not in the inventory)."""


@dataclass(frozen=True)
class NodeRecord:
    hostname: str
    mac: str
    state: State
    state_since: float
    netboot: bool
    reason: str | None


@dataclass(frozen=True)
class Event:
    id: int
    ts: float
    hostname: str | None
    kind: str
    source: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str | None
    expires: float


class Store:
    """Thread-safe access to the provisiond database (one SQLite file in the state dir)."""

    FILENAME = "provisiond.sqlite3"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._site_secret: bytes | None = None
        self._seen_added = itertools.count(1)  # new unknown MACs since start: prune now and then
        self._migrate()

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> Store:
        return cls(Path(state_dir) / cls.FILENAME)

    # -- connection handling -------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (BEGIN IMMEDIATE), so read-modify-write is atomic."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _migrate(self) -> None:
        with self._tx() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    # -- nodes ---------------------------------------------------------------------------

    def sync_nodes(self, nodes: dict[str, str]) -> None:
        """Make the node table match the inventory ({hostname: mac}); keep known nodes' state.

        A node removed from the inventory is dropped with its token and lease.
        """
        now = time.time()
        with self._tx() as conn:
            known = {row["hostname"]: row["mac"] for row in conn.execute("SELECT hostname, mac FROM nodes")}
            for hostname in known.keys() - nodes.keys():
                conn.execute("DELETE FROM nodes WHERE hostname = ?", (hostname,))
                conn.execute("DELETE FROM tokens WHERE hostname = ?", (hostname,))
                conn.execute("DELETE FROM leases WHERE mac = ?", (known[hostname],))
                for table in ("agent_credentials", "facts", "agent_progress"):
                    conn.execute(f"DELETE FROM {table} WHERE hostname = ?", (hostname,))
                self._add_event(conn, hostname, "removed", Source.OPERATOR, {})
            # Free MACs first so a MAC moving between hostnames does not trip UNIQUE.
            for hostname, mac in nodes.items():
                if hostname in known and known[hostname] != mac:
                    conn.execute("UPDATE nodes SET mac = ? WHERE hostname = ?", (f"moving:{hostname}", hostname))
                    conn.execute("DELETE FROM leases WHERE mac = ?", (known[hostname],))
            for hostname, mac in nodes.items():
                if hostname in known:
                    conn.execute("UPDATE nodes SET mac = ? WHERE hostname = ?", (mac, hostname))
                else:
                    conn.execute(
                        "INSERT INTO nodes (hostname, mac, state, state_since) VALUES (?, ?, ?, ?)",
                        (hostname, mac, State.NEW.value, now),
                    )

    def nodes(self) -> list[NodeRecord]:
        rows = self._conn().execute("SELECT * FROM nodes ORDER BY hostname").fetchall()
        return [self._node(row) for row in rows]

    def node(self, hostname: str) -> NodeRecord:
        row = self._conn().execute("SELECT * FROM nodes WHERE hostname = ?", (hostname,)).fetchone()
        if row is None:
            raise UnknownNode(hostname)
        return self._node(row)

    def node_by_mac(self, mac: str) -> NodeRecord | None:
        row = self._conn().execute("SELECT * FROM nodes WHERE mac = ?", (mac,)).fetchone()
        return self._node(row) if row else None

    @staticmethod
    def _node(row: sqlite3.Row) -> NodeRecord:
        return NodeRecord(
            hostname=row["hostname"], mac=row["mac"], state=State(row["state"]),
            state_since=row["state_since"], netboot=bool(row["netboot"]), reason=row["reason"],
        )

    def apply(
        self, hostname: str, event: lifecycle.Event, source: Source, *, reason: str | None = None,
        detail: dict[str, Any] | None = None, netboot: bool | None = None,
    ) -> NodeRecord:
        """Report `event` for a node; the state machine (lifecycle.next_state) decides the state.

        `netboot` sets the node's netboot flag in the same transaction. An event that does not
        apply raises IllegalTransition and changes nothing. Staying in the same state records
        no state event (a repeated DHCP request while in `pxe`), except a new `provision`.
        """
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM nodes WHERE hostname = ?", (hostname,)).fetchone()
            if row is None:
                raise UnknownNode(hostname)
            current = State(row["state"])
            target = next_state(current, event)
            # The operator's setting is recorded even when unchanged (what was asked is visible).
            if netboot is not None and (bool(row["netboot"]) != netboot or source is Source.OPERATOR):
                conn.execute("UPDATE nodes SET netboot = ? WHERE hostname = ?", (int(netboot), hostname))
                self._add_event(conn, hostname, "netboot:on" if netboot else "netboot:off", source, {})
            if target is not current or event is lifecycle.Event.PROVISION:
                conn.execute(
                    "UPDATE nodes SET state = ?, state_since = ?, reason = ? WHERE hostname = ?",
                    (target.value, time.time(), reason if target is State.FAILED else None, hostname),
                )
                record = {"from": current.value, "event": event.value, **(detail or {})}
                if reason:
                    record["reason"] = reason
                self._add_event(conn, hostname, f"state:{target.value}", source, record)
            if (target is State.NEW and current is not State.NEW) or event is lifecycle.Event.PROVISION:
                # A node on its way to a reinstall reports its facts again.
                conn.execute("DELETE FROM facts WHERE hostname = ?", (hostname,))
                conn.execute("DELETE FROM agent_progress WHERE hostname = ?", (hostname,))
            row = conn.execute("SELECT * FROM nodes WHERE hostname = ?", (hostname,)).fetchone()
        return self._node(row)

    def observe(self, hostname: str, event: lifecycle.Event, source: Source, **kwargs: Any) -> bool:
        """apply() for a sign seen on the wire: one that does not apply is ignored (False)."""
        try:
            self.apply(hostname, event, source, **kwargs)
        except IllegalTransition:
            return False
        return True

    def set_netboot(self, hostname: str, enabled: bool, source: Source) -> NodeRecord:
        """The operator's netboot on/off (on for a node past its install puts it back to new)."""
        event = lifecycle.Event.NETBOOT_ON if enabled else lifecycle.Event.NETBOOT_OFF
        return self.apply(hostname, event, source, netboot=enabled)

    def expire_overdue(self, deadlines: dict[State, float], now: float | None = None) -> list[str]:
        """Fail every node that stayed in an active state past its deadline (seconds)."""
        now = time.time() if now is None else now
        failed = []
        for node in self.nodes():
            limit = deadlines.get(node.state)
            overdue = node.state in ACTIVE and limit is not None and now - node.state_since > limit
            if overdue and self.observe(
                node.hostname, lifecycle.Event.DEADLINE, Source.TIMER, reason=f"timed out in {node.state}"
            ):
                failed.append(node.hostname)
        return failed

    # -- events --------------------------------------------------------------------------

    @staticmethod
    def _add_event(
        conn: sqlite3.Connection, hostname: str | None, kind: str, source: Source | str,
        detail: dict[str, Any],
    ) -> None:
        conn.execute(
            "INSERT INTO events (ts, hostname, kind, source, detail) VALUES (?, ?, ?, ?, ?)",
            (time.time(), hostname, kind, str(source), json.dumps(detail, sort_keys=True)),
        )

    def add_event(
        self, hostname: str | None, kind: str, source: Source | str, detail: dict[str, Any] | None = None
    ) -> None:
        with self._tx() as conn:
            self._add_event(conn, hostname, kind, source, detail or {})

    def events(self, since: int = 0, hostname: str | None = None, limit: int = 1000) -> list[Event]:
        query = "SELECT * FROM events WHERE id > ?"
        params: list[Any] = [since]
        if hostname is not None:
            query += " AND hostname = ?"
            params.append(hostname)
        query += " ORDER BY id LIMIT ?"
        params.append(limit)
        return [self._event(row) for row in self._conn().execute(query, params)]

    def latest_events(self) -> dict[str, Event]:
        """Each node's most recent event (the "last event" column of status tables)."""
        rows = self._conn().execute(
            "SELECT * FROM events WHERE id IN "
            "(SELECT MAX(id) FROM events WHERE hostname IS NOT NULL GROUP BY hostname)"
        )
        return {row["hostname"]: self._event(row) for row in rows}

    @staticmethod
    def _event(row: sqlite3.Row) -> Event:
        return Event(row["id"], row["ts"], row["hostname"], row["kind"], row["source"], json.loads(row["detail"]))

    # -- per-node tokens ---------------------------------------------------------------------
    # A node's token is HMAC(site secret, "hostname:generation"). The store keeps only the
    # generation, so a copy of the database holds no usable token, yet the server can render
    # the current token into that node's kickstart. `issue_token` bumps the generation, which
    # makes every earlier token stale.

    def _secret(self) -> bytes:
        """The site secret (created 0600 on first use), read from disk once per Store."""
        if self._site_secret is None:
            path = self.path.parent / "secret.key"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(secrets.token_bytes(32))
            self._site_secret = path.read_bytes()
        return self._site_secret

    def _token(self, hostname: str, generation: int) -> str:
        digest = hmac.new(self._secret(), f"{hostname}:{generation}".encode(), hashlib.sha256)
        return digest.hexdigest()

    def issue_token(self, hostname: str) -> str:
        """Make a new token for the node (earlier ones become stale) and return it."""
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM nodes WHERE hostname = ?", (hostname,)).fetchone() is None:
                raise UnknownNode(hostname)
            conn.execute(
                "INSERT INTO tokens (hostname, generation, issued) VALUES (?, 1, ?) "
                "ON CONFLICT (hostname) DO UPDATE SET generation = generation + 1, issued = excluded.issued",
                (hostname, time.time()),
            )
            generation = conn.execute(
                "SELECT generation FROM tokens WHERE hostname = ?", (hostname,)
            ).fetchone()[0]
        return self._token(hostname, generation)

    def current_token(self, hostname: str) -> str:
        """The node's current token (issued on first use), for rendering into its own pages."""
        row = self._conn().execute("SELECT generation FROM tokens WHERE hostname = ?", (hostname,)).fetchone()
        if row is None:
            return self.issue_token(hostname)
        return self._token(hostname, row[0])

    def verify_token(self, hostname: str, token: str | None) -> bool:
        if not token:
            return False
        row = self._conn().execute("SELECT generation FROM tokens WHERE hostname = ?", (hostname,)).fetchone()
        expected = self._token(hostname, row[0]).encode() if row is not None else b""
        # Compared as bytes: compare_digest refuses non-ASCII str, and any token is a wrong one.
        return row is not None and hmac.compare_digest(expected, token.encode("utf-8", "replace"))

    # -- the agent phase: credentials, site secrets, facts, progress -------------------------
    # Agent credentials and site secrets are derived like node tokens (HMAC of the state dir's
    # secret key over a name and a generation): the store keeps generations only.

    def _derive(self, message: str) -> str:
        return hmac.new(self._secret(), message.encode(), hashlib.sha256).hexdigest()

    def issue_agent_credential(self, hostname: str) -> str:
        """A new agent credential for the node (earlier ones stop working)."""
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM nodes WHERE hostname = ?", (hostname,)).fetchone() is None:
                raise UnknownNode(hostname)
            conn.execute(
                "INSERT INTO agent_credentials (hostname, generation, issued) VALUES (?, 1, ?) "
                "ON CONFLICT (hostname) DO UPDATE SET generation = generation + 1, issued = excluded.issued",
                (hostname, time.time()),
            )
            generation = conn.execute(
                "SELECT generation FROM agent_credentials WHERE hostname = ?", (hostname,)
            ).fetchone()[0]
        return self._derive(f"agent:{hostname}:{generation}")

    def agent_credential(self, hostname: str) -> str:
        """The node's current agent credential (issued on first use), for its install pages."""
        row = self._conn().execute(
            "SELECT generation FROM agent_credentials WHERE hostname = ?", (hostname,)
        ).fetchone()
        if row is None:
            return self.issue_agent_credential(hostname)
        return self._derive(f"agent:{hostname}:{row[0]}")

    def verify_agent_credential(self, hostname: str, credential: str | None) -> bool:
        if not credential:
            return False
        row = self._conn().execute(
            "SELECT generation FROM agent_credentials WHERE hostname = ?", (hostname,)
        ).fetchone()
        expected = self._derive(f"agent:{hostname}:{row[0]}").encode() if row is not None else b""
        return row is not None and hmac.compare_digest(expected, credential.encode("utf-8", "replace"))

    def site_secret(self, name: str) -> str:
        """The site's value of a named secret (made on first use; 32 hex characters)."""
        with self._tx() as conn:
            conn.execute("INSERT OR IGNORE INTO site_secrets (name, generation, created) VALUES (?, 1, ?)",
                         (name, time.time()))
            generation = conn.execute("SELECT generation FROM site_secrets WHERE name = ?", (name,)).fetchone()[0]
        return self._derive(f"site-secret:{name}:{generation}")[:32]

    def site_secrets(self) -> dict[str, str]:
        """Every site secret made so far, name -> value (masked in whatever agents report)."""
        rows = self._conn().execute("SELECT name, generation FROM site_secrets").fetchall()
        return {row[0]: self._derive(f"site-secret:{row[0]}:{row[1]}")[:32] for row in rows}

    def set_fact(self, hostname: str, name: str, value: Any) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO facts (hostname, name, value, ts) VALUES (?, ?, ?, ?) ON CONFLICT (hostname, name) "
                "DO UPDATE SET value = excluded.value, ts = excluded.ts",
                (hostname, name, json.dumps(value, sort_keys=True), time.time()),
            )

    def fact(self, hostname: str, name: str) -> Any | None:
        row = self._conn().execute(
            "SELECT value FROM facts WHERE hostname = ? AND name = ?", (hostname, name)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def fact_reporters(self, name: str) -> set[str]:
        rows = self._conn().execute("SELECT hostname FROM facts WHERE name = ?", (name,))
        return {row[0] for row in rows}

    def facts(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for row in self._conn().execute("SELECT hostname, name, value FROM facts ORDER BY name, hostname"):
            out.setdefault(row["name"], {})[row["hostname"]] = json.loads(row["value"])
        return out

    def set_agent_progress(self, hostname: str, detail: dict[str, Any], status: str) -> None:
        """The node's current step (what status shows: "n of m", the step, its outcome)."""
        current = {key: detail.get(key) for key in ("step", "title", "kind", "index", "count")}
        current["status"] = status
        if status == "progress":
            current["message"] = detail.get("message")
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO agent_progress (hostname, detail, waiting, updated) VALUES (?, ?, NULL, ?) "
                "ON CONFLICT (hostname) DO UPDATE SET detail = excluded.detail, "
                "waiting = CASE WHEN excluded.detail = agent_progress.detail THEN waiting END, "
                "updated = excluded.updated",
                (hostname, json.dumps(current, sort_keys=True), time.time()),
            )

    def set_agent_waiting(self, hostname: str, waiting: dict[str, Any] | None) -> None:
        """What the node's barrier waits for (None: it waits for nothing)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO agent_progress (hostname, detail, waiting, updated) VALUES (?, '{}', ?, ?) "
                "ON CONFLICT (hostname) DO UPDATE SET waiting = excluded.waiting, updated = excluded.updated",
                (hostname, None if waiting is None else json.dumps(waiting, sort_keys=True), time.time()),
            )

    def clear_agent_waiting(self, hostname: str) -> None:
        self.set_agent_waiting(hostname, None)

    def agent_progress(self) -> dict[str, dict[str, Any]]:
        """hostname -> {step, title, kind, index, count, status, waiting}."""
        out = {}
        for row in self._conn().execute("SELECT * FROM agent_progress"):
            item = json.loads(row["detail"])
            item["waiting"] = json.loads(row["waiting"]) if row["waiting"] else None
            out[row["hostname"]] = item
        return out

    # -- DHCP leases -----------------------------------------------------------------------

    def save_lease(self, mac: str, ip: str, hostname: str | None, expires: float) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM leases WHERE ip = ? AND mac != ?", (ip, mac))
            conn.execute(
                "INSERT INTO leases (mac, ip, hostname, expires, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (mac) DO UPDATE SET ip = excluded.ip, hostname = excluded.hostname, "
                "expires = excluded.expires, updated = excluded.updated",
                (mac, ip, hostname, expires, time.time()),
            )

    def save_leases(self, leases: list[tuple[str, str, str | None, float]]) -> None:
        """Save many (mac, ip, hostname, expires) in one transaction: the DHCP server's group
        commit, so a burst of ACKs costs one commit instead of one each."""
        now = time.time()
        with self._tx() as conn:
            for mac, ip, hostname, expires in leases:
                conn.execute("DELETE FROM leases WHERE ip = ? AND mac != ?", (ip, mac))
                conn.execute(
                    "INSERT INTO leases (mac, ip, hostname, expires, updated) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (mac) DO UPDATE SET ip = excluded.ip, hostname = excluded.hostname, "
                    "expires = excluded.expires, updated = excluded.updated",
                    (mac, ip, hostname, expires, now),
                )

    def release_lease(self, mac: str) -> bool:
        with self._tx() as conn:
            return conn.execute("DELETE FROM leases WHERE mac = ?", (mac,)).rowcount > 0

    def leases(self) -> list[Lease]:
        rows = self._conn().execute("SELECT * FROM leases ORDER BY ip").fetchall()
        return [Lease(row["mac"], row["ip"], row["hostname"], row["expires"]) for row in rows]

    def lease_for(self, mac: str) -> Lease | None:
        row = self._conn().execute("SELECT * FROM leases WHERE mac = ?", (mac,)).fetchone()
        return Lease(row["mac"], row["ip"], row["hostname"], row["expires"]) if row else None

    # -- MACs seen on the wire but not in the inventory ------------------------------------

    def record_seen(self, mac: str, detail: dict[str, Any] | None = None) -> None:
        """Upsert one unknown MAC. The table keeps the MAX_SEEN_MACS most recently seen: a flood
        of random MACs (anyone on the segment can send one) must not grow it without end."""
        now = time.time()
        with self._tx() as conn:
            (count,) = conn.execute(
                "INSERT INTO seen_macs (mac, first_seen, last_seen, count, detail) VALUES (?, ?, ?, 1, ?) "
                "ON CONFLICT (mac) DO UPDATE SET last_seen = excluded.last_seen, count = count + 1, "
                "detail = excluded.detail RETURNING count",
                (mac, now, now, json.dumps(detail or {}, sort_keys=True)),
            ).fetchone()
            if count == 1 and next(self._seen_added) % SEEN_PRUNE_EVERY == 1:
                conn.execute("DELETE FROM seen_macs WHERE mac IN (SELECT mac FROM seen_macs "
                             "ORDER BY last_seen DESC LIMIT -1 OFFSET ?)", (MAX_SEEN_MACS,))

    def seen_macs_count(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM seen_macs").fetchone()[0]

    def seen_macs(self) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM seen_macs ORDER BY last_seen DESC").fetchall()
        return [{**dict(row), "detail": json.loads(row["detail"])} for row in rows]

    # -- TFTP transfer statistics ----------------------------------------------------------

    def record_transfer(
        self, peer: str, filename: str, nbytes: int, duration: float, retransmits: int,
        options: dict[str, Any], outcome: str,
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO transfers (ts, peer, filename, bytes, duration, retransmits, options, outcome) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), peer, filename, nbytes, duration, retransmits, json.dumps(options), outcome),
            )

    def transfer_totals(self) -> dict[str, dict[str, int]]:
        """Per outcome class (ok, timeout, error): transfers, bytes and retransmits."""
        rows = self._conn().execute(
            "SELECT CASE WHEN outcome LIKE 'error%' THEN 'error' ELSE outcome END AS kind, "
            "COUNT(*) AS transfers, SUM(bytes) AS bytes, SUM(retransmits) AS retransmits "
            "FROM transfers GROUP BY kind ORDER BY kind")
        return {row["kind"]: {"transfers": row["transfers"], "bytes": row["bytes"] or 0,
                              "retransmits": row["retransmits"] or 0} for row in rows}

    def transfers(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM transfers ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [{**dict(row), "options": json.loads(row["options"])} for row in rows]

    # -- aggregates for /metrics (read at scrape time: the store is the record) -------------

    def event_kind_counts(self, prefix: str) -> dict[str, int]:
        """How many events of each kind starting with `prefix` (e.g. "agent:")."""
        rows = self._conn().execute(
            "SELECT kind, COUNT(*) AS n FROM events WHERE kind >= ? AND kind < ? GROUP BY kind",
            (prefix, prefix + "\U0010ffff"),
        )
        return {row["kind"]: row["n"] for row in rows}

    def power_calls(self) -> list[tuple[str, bool, float]]:
        """(action, ok, elapsed seconds) of every recorded power call (`power:<action>` events)."""
        rows = self._conn().execute(
            "SELECT kind, json_extract(detail, '$.ok') AS ok, json_extract(detail, '$.elapsed') "
            "AS elapsed FROM events WHERE kind >= ? AND kind < ?", ("power:", "power:\U0010ffff"),
        )
        return [(row["kind"].removeprefix("power:"), bool(row["ok"]), float(row["elapsed"] or 0.0))
                for row in rows]

    def change_marker(self) -> str:
        """Changes whenever a node's state, events or agent progress change (the web page's
        live stream compares it instead of re-reading every node)."""
        row = self._conn().execute(
            "SELECT (SELECT MAX(id) FROM events), (SELECT MAX(state_since) FROM nodes), "
            "(SELECT MAX(updated) FROM agent_progress), (SELECT COUNT(*) FROM nodes)").fetchone()
        return "-".join(str(value or 0) for value in row)

    def waiting_count(self) -> int:
        """Nodes whose agent waits at a barrier now."""
        return self._conn().execute(
            "SELECT COUNT(*) FROM agent_progress WHERE waiting IS NOT NULL").fetchone()[0]
