"""How the CLI reads and changes a running server: straight from the store (--state-dir) or
over the JSON API (--server URL). Both give the same JSON shapes the API serves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from provisiond import nodes
from provisiond.config import Config
from provisiond.errors import UserError
from provisiond.inventory import Inventory, load_inventory
from provisiond.store import NodeRecord, Store, UnknownNode

if TYPE_CHECKING:
    import requests

TOKEN_ENV = "PROVISIOND_OPERATOR_TOKEN"


class Backend(Protocol):
    def nodes(self) -> list[dict[str, Any]]: ...
    def events(self, since: int = 0, host: str | None = None) -> list[dict[str, Any]]: ...
    def set_netboot(self, host: str, enabled: bool) -> dict[str, Any]: ...
    def discovered(self) -> list[dict[str, Any]]: ...
    def transfers(self, limit: int) -> dict[str, Any]: ...


class LocalBackend:
    """Reads and writes the store in --state-dir (SQLite WAL: safe beside a running server)."""

    def __init__(self, config: Config, inventory_given: bool) -> None:
        db = Path(config.state_dir) / Store.FILENAME
        if not db.exists():
            raise UserError(f"no provisiond store in {config.state_dir} ({db} is missing): pass the "
                            "--state-dir that `provisiond serve` uses, or --server URL")
        self.store = Store(db)
        self.inventory: Inventory | None = None
        try:
            self.inventory = load_inventory(config.inventory)
        except UserError:
            if inventory_given:
                raise

    def _record(self, host: str) -> NodeRecord:
        try:
            return self.store.node(host.lower())
        except UnknownNode:
            known = ", ".join(r.hostname for r in self.store.nodes()) or "none"
            raise UserError(f"{host} is not a node of this server (known: {known})") from None

    def nodes(self) -> list[dict[str, Any]]:
        return nodes.nodes_view(self.store, self.inventory)

    def events(self, since: int = 0, host: str | None = None) -> list[dict[str, Any]]:
        hostname = self._record(host).hostname if host else None
        return nodes.events_view(self.store, since=since, hostname=hostname)

    def set_netboot(self, host: str, enabled: bool) -> dict[str, Any]:
        record = nodes.set_netboot(self.store, self._record(host).hostname, enabled)
        return {"hostname": record.hostname, "state": record.state.value, "netboot": record.netboot}

    def discovered(self) -> list[dict[str, Any]]:
        return nodes.discovered_view(self.store)

    def transfers(self, limit: int) -> dict[str, Any]:
        return nodes.transfers_view(self.store, limit)


class HttpBackend:
    """The same over the API of a server (`--server http://10.213.0.1:8080`)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.session: requests.Session | None = None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests  # ~0.1 s to import: only for commands that talk to a server (--server)

        if self.session is None:
            self.session = requests.Session()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            reply = self.session.request(method, self.url + path, headers=headers, timeout=10, **kwargs)
        except requests.RequestException as exc:
            raise UserError(f"cannot reach provisiond at {self.url}: {type(exc).__name__}; is "
                            "`provisiond serve` running there? (check --server)") from None
        if reply.status_code >= 400:
            try:
                detail = reply.json().get("detail", reply.text)
            except ValueError:
                detail = reply.text.strip()
            hint = ""
            if reply.status_code in (401, 403):
                hint = (f" (give the operator token with --token, ${TOKEN_ENV}, or --state-dir "
                        "of the server)")
            raise UserError(f"{method} {self.url}{path}: {reply.status_code}: {detail}{hint}")
        return reply.json()

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/nodes")["nodes"])

    def events(self, since: int = 0, host: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"since": since}
        if host:
            params["host"] = host
        out: list[dict[str, Any]] = []
        while True:
            page = self._call("GET", "/api/v1/events", params=params)
            out += page["events"]
            if not page["events"]:
                return out
            params["since"] = page["last_id"]

    def set_netboot(self, host: str, enabled: bool) -> dict[str, Any]:
        return dict(self._call("PUT", f"/api/v1/nodes/{host}/netboot", json={"enabled": enabled}))

    def discovered(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/discovered")["discovered"])

    def transfers(self, limit: int) -> dict[str, Any]:
        return dict(self._call("GET", "/api/v1/tftp/transfers", params={"limit": limit}))


def operator_token_for(config: Config, given: str | None) -> str | None:
    """--token, else $PROVISIOND_OPERATOR_TOKEN, else the state dir's operator.token if readable."""
    if given:
        return given
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    try:
        return config.operator_token_file.read_text().strip() or None
    except OSError:
        return None
