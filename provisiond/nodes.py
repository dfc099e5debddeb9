"""The nodes service: what the operator and the installer may do to a node, in one place.

The CLI (straight on the store), the HTTP API and `provision` all call these, so a node
changes the same way whoever asks: provision, netboot on/off, the installer's callbacks, and
the JSON views of nodes and events. Inventory-to-store sync happens here too (`open_store`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from provisiond.inventory import Inventory, Node
from provisiond.lifecycle import Event, Source
from provisiond.store import Event as StoredEvent
from provisiond.store import NodeRecord, Store

# The installer's callbacks (POST /api/v1/nodes/<host>/events).
CALLBACKS: dict[str, Event] = {
    "install-started": Event.INSTALL_STARTED,
    "install-finished": Event.INSTALL_FINISHED,
}


def sync(store: Store, inventory: Inventory) -> None:
    """Make the store's nodes match the inventory (state of known nodes kept)."""
    store.sync_nodes({node.hostname: node.mac for node in inventory.nodes})


def open_store(state_dir: Path, inventory: Inventory) -> Store:
    """The store in `state_dir`, synced with the inventory: the one place that syncs."""
    store = Store.in_state_dir(state_dir)
    sync(store, inventory)
    return store


# -- changes ------------------------------------------------------------------------------

def provision(store: Store, hostname: str) -> NodeRecord:
    """Mark a node for (re)install: a new token and agent credential (older ones go stale),
    netboot on, powering-on."""
    store.issue_token(hostname)
    store.issue_agent_credential(hostname)
    return store.apply(hostname, Event.PROVISION, Source.OPERATOR, netboot=True)


def power_failed(store: Store, hostname: str, reason: str) -> bool:
    """provision could not power the node on: it fails (if it still waits to power on)."""
    return store.observe(hostname, Event.POWER_FAILED, Source.IPMI, reason=reason)


def set_netboot(store: Store, hostname: str, enabled: bool) -> NodeRecord:
    """The operator's netboot on (a fresh token; a node past its install goes back to `new`,
    visibly) or off."""
    if enabled:
        store.issue_token(hostname)
        store.issue_agent_credential(hostname)
    return store.set_netboot(hostname, enabled, Source.OPERATOR)


def installer_callback(store: Store, hostname: str, kind: str, peer: str) -> NodeRecord:
    """An installer callback. install-finished turns netboot off in the same transaction, so
    a finished installer is never netbooted again and a refused callback changes nothing.

    Raises KeyError for an unknown kind, IllegalTransition when it does not apply.
    """
    event = CALLBACKS[kind]
    record = store.apply(hostname, event, Source.HTTP, detail={"peer": peer},
                         netboot=False if event is Event.INSTALL_FINISHED else None)
    # Every accepted callback is an event of its own (`events HOST`, the API, the web page),
    # also when it moves no state (install-started after the answer file was fetched).
    store.add_event(hostname, f"callback:{kind}", Source.HTTP,
                    {"peer": peer, "state": record.state.value})
    return record


# -- views (the API's JSON shapes; the CLI prints the same) ---------------------------------

def event_json(event: StoredEvent) -> dict[str, Any]:
    return {"id": event.id, "ts": event.ts, "host": event.hostname, "kind": event.kind,
            "source": event.source, "detail": event.detail}


def node_json(node: Node | None, record: NodeRecord, last: StoredEvent | None, now: float,
              agent: dict[str, Any] | None = None) -> dict[str, Any]:
    """A node as the API shows it (inventory fields are None when no inventory is at hand);
    `agent`: its agent's current step and what a barrier waits for (Store.agent_progress)."""
    return {
        "hostname": record.hostname, "mac": record.mac,
        "ip": str(node.ip) if node else None, "role": node.role if node else None,
        "os": node.os_name if node else None, "firmware": node.firmware if node else None,
        "state": record.state.value, "state_since": record.state_since,
        "age_seconds": round(max(0.0, now - record.state_since), 3),
        "netboot": record.netboot, "reason": record.reason,
        "last_event": event_json(last) if last else None,
        "agent": agent,
    }


def nodes_view(store: Store, inventory: Inventory | None) -> list[dict[str, Any]]:
    """Every node of the store, as node_json (with its inventory fields when there is one)."""
    now, latest, progress = time.time(), store.latest_events(), store.agent_progress()
    return [node_json(_inventory_node(inventory, r.hostname), r, latest.get(r.hostname), now,
                      progress.get(r.hostname)) for r in store.nodes()]


def node_view(store: Store, inventory: Inventory | None, hostname: str) -> dict[str, Any]:
    """One node as node_json (UnknownNode when the store does not have it)."""
    record = store.node(hostname)
    return node_json(_inventory_node(inventory, hostname), record,
                     store.latest_events().get(hostname), time.time(), store.agent_progress().get(hostname))


def _inventory_node(inventory: Inventory | None, hostname: str) -> Node | None:
    if inventory is None:
        return None
    return next((n for n in inventory.nodes if n.hostname == hostname), None)


def events_view(store: Store, since: int = 0, hostname: str | None = None,
                limit: int = 1000) -> list[dict[str, Any]]:
    return [event_json(e) for e in store.events(since=since, hostname=hostname, limit=limit)]


def discovered_view(store: Store) -> list[dict[str, Any]]:
    """The discovery list: MACs that asked DHCP but are not in the inventory, newest first,
    with what their DHCP request said (interface, message, vendor class, arch, host name)."""
    return store.seen_macs()


def transfers_view(store: Store, limit: int = 100) -> dict[str, Any]:
    """The last `limit` TFTP transfers (newest first) and totals per outcome over all."""
    return {"transfers": store.transfers(limit), "totals": store.transfer_totals()}
