"""The HTTP service: boot scripts, installer answers, boot assets, callbacks and the JSON API.

`create_app` builds the Flask application around one Context (inventory, store, config,
boot files, renderer). Blueprints: `boot` (iPXE scripts, loaders, kernels), `install`
(each install method's answer file), `api` (nodes, events, callbacks, operator actions, OpenAPI),
`agent` (the agent's zipapp, manifests, step events, facts, barriers, layout check), `web`
(the operator's status page, live by server-sent events); `/metrics` for Prometheus. It is
served by waitress (see provisiond.serve and provisiond.http.wsgi), never by Flask's development server.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, current_app, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from provisiond.boot.service import BootService
from provisiond.config import Config
from provisiond.errors import UserError
from provisiond.inventory import Inventory, Node, load_inventory
from provisiond.logs import log_event
from provisiond.render import Renderer
from provisiond.store import Store

log = logging.getLogger("provisiond.http")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]{1,5})?\Z|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?\Z")


@dataclass
class Context:
    """What every request handler needs; one per application."""

    config: Config
    inventory: Inventory
    store: Store
    boot: BootService
    renderer: Renderer
    operator_token: str
    base_url: str | None = None
    instance: str = ""

    def url_base(self) -> str:
        """The server's base URL as nodes reach it (configured, else from the request's Host,
        which then must be a plain host[:port]: it is written into boot scripts)."""
        if self.base_url:
            return self.base_url.rstrip("/")
        if not _HOST.match(request.host):
            abort(400, description="the Host header is not a host name or address with a port")
        return request.host_url.rstrip("/")


def operator_token(path: Path) -> str:
    """The operator token (created 0600 on first use); the CLI reads the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x") as handle:
            path.chmod(0o600)
            handle.write(secrets.token_urlsafe(32) + "\n")
    except FileExistsError:
        pass
    return path.read_text().strip()


def is_ascii_number(text: str) -> bool:
    """A non-negative whole number in ASCII digits: str.isdigit() alone also takes "²" (which
    int() refuses) and other scripts' digits."""
    return text.isascii() and text.isdigit()


class _JsonProvider(DefaultJSONProvider):
    """Flask's JSON, with a body nested too deeply for the parser refused like any bad JSON
    (400), not a RecursionError (500)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def ctx() -> Context:
    return current_app.extensions["provisiond"]


def node_or_404(hostname: str) -> Node:
    """The inventory node by host name (any case), or a 404 that names the problem."""
    try:
        return ctx().inventory.node(hostname)
    except UserError:
        abort(404, description=f"{hostname} is not in the inventory")


def create_app(
    config: Config,
    inventory: Inventory | None = None,
    store: Store | None = None,
    base_url: str | None = None,
    instance: str = "",
) -> Flask:
    """Build the application. Inventory and store default to the config's paths (the store is
    synced with the inventory by whoever opens it: `serve`, or nodes.open_store); `instance`
    is echoed by the health check so `serve` knows it reached its own child."""
    inventory = inventory if inventory is not None else load_inventory(config.inventory)
    store = store if store is not None else Store.in_state_dir(config.state_dir)
    app = Flask("provisiond", static_folder=None)
    app.json = _JsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.extensions["provisiond"] = Context(
        config=config, inventory=inventory, store=store,
        boot=BootService(inventory, store, config, base_url or ""),
        renderer=Renderer(inventory, list(config.templates)), operator_token=operator_token(config.operator_token_file),
        base_url=base_url, instance=instance,
    )

    from provisiond.http import agent, api, boot, deploy, install, web
    from provisiond.metrics import Metrics

    app.extensions["provisiond.metrics"] = metrics = Metrics()

    app.register_blueprint(boot.bp)
    app.register_blueprint(install.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(agent.bp)
    app.register_blueprint(deploy.bp)
    app.register_blueprint(web.bp)

    @app.before_request
    def _start() -> None:
        g.started = time.monotonic()

    @app.after_request
    def _log(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "(no route)"
        metrics.http(route, request.method, response.status_code)
        log_event(
            log, "http", method=request.method, path=request.path, status=response.status_code,
            peer=request.remote_addr or "", bytes=response.content_length or 0,
            ms=round((time.monotonic() - g.get("started", time.monotonic())) * 1000, 1),
        )
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int] | Response:
        """JSON errors for the API, plain text for firmware and installers."""
        code = exc.code or 500
        if request.path.startswith("/api/"):
            body = jsonify(error=exc.name, detail=exc.description)
        else:
            body = Response(f"{code} {exc.name}: {exc.description}\n", mimetype="text/plain")
        response = exc.get_response()
        for key, value in response.headers.items():
            if key.lower() not in ("content-type", "content-length"):
                body.headers[key] = value
        return body, code

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error="Internal Server Error", detail="see the server log"), 500

    return app
