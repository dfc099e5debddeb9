"""API blueprint: nodes and events as JSON, installer callbacks, operator actions, OpenAPI.

Reads are open (no secrets in them). Callbacks need the node's own current token; operator
actions need the operator token. Authentication runs before anything is read or changed, so
a refused request changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request

from provisiond import nodes as service
from provisiond.doctor.run import run_doctor
from provisiond.http import ctx, is_ascii_number, node_or_404
from provisiond.http.auth import require_node, require_operator
from provisiond.http.openapi import document
from provisiond.lifecycle import IllegalTransition
from provisiond.logs import log_event
from provisiond.metrics import CONTENT_TYPE
from provisiond.store import UnknownNode

bp = Blueprint("api", __name__)
log = logging.getLogger("provisiond.http")

MAX_EVENTS = 1000
MAX_EVENT_ID = 2**62


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="expected a JSON object body (Content-Type: application/json)")
    return body


@bp.get("/api/openapi.json")
def openapi() -> Response:
    return jsonify(document())


@bp.get("/api/v1/health")
def health() -> Response:
    return jsonify(status="ok", schema=ctx().store.schema_version, instance=ctx().instance)


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text format (open like the other reads: counts, no secrets)."""
    body = current_app.extensions["provisiond.metrics"].exposition(ctx().store)
    return Response(body, content_type=CONTENT_TYPE)


@bp.get("/api/v1/discovered")
def discovered() -> Response:
    """MACs that asked DHCP but are not in the inventory, newest first (the discovery list)."""
    return jsonify(discovered=service.discovered_view(ctx().store))


@bp.get("/api/v1/tftp/transfers")
def tftp_transfers() -> Response:
    """The last TFTP transfers (newest first) and totals per outcome."""
    limit_text = request.args.get("limit", "100")
    if not limit_text.isdigit() or not 0 < int(limit_text) <= MAX_EVENTS:
        abort(400, description=f"limit must be an integer from 1 to {MAX_EVENTS}")
    return jsonify(service.transfers_view(ctx().store, int(limit_text)))


@bp.get("/api/v1/nodes")
def nodes() -> Response:
    return jsonify(nodes=service.nodes_view(ctx().store, ctx().inventory))


@bp.get("/api/v1/nodes/<string:hostname>")
def node(hostname: str) -> Response:
    item = node_or_404(hostname)
    try:
        return jsonify(service.node_view(ctx().store, ctx().inventory, item.hostname))
    except UnknownNode:
        abort(404, description=f"{hostname} is not in the store yet (restart serve to sync)")


@bp.get("/api/v1/events")
def events() -> Response:
    since_text = request.args.get("since", "0")
    limit_text = request.args.get("limit", str(MAX_EVENTS))
    if not is_ascii_number(since_text) or not is_ascii_number(limit_text):
        abort(400, description="since and limit must be non-negative integers (event ids/counts)")
    since, limit = int(since_text), int(limit_text)
    if since > MAX_EVENT_ID or limit > MAX_EVENTS:
        abort(400, description=f"since is at most {MAX_EVENT_ID}, limit at most {MAX_EVENTS}")
    host = request.args.get("host")
    if host is not None:
        host = node_or_404(host).hostname
    items = service.events_view(ctx().store, since=since, hostname=host, limit=limit)
    return jsonify(events=items, last_id=items[-1]["id"] if items else since)


@bp.post("/api/v1/nodes/<string:hostname>/events")
def callback(hostname: str) -> tuple[Response, int] | Response:
    """Installer callbacks; `install-finished` turns netboot off so the node boots local."""
    item = node_or_404(hostname)
    require_node(item.hostname)
    body = _json_body()
    kind = body.get("event")
    if not isinstance(kind, str) or kind not in service.CALLBACKS:
        abort(400, description=f"event must be one of {', '.join(service.CALLBACKS)}, got {kind!r}")
    peer = request.remote_addr or ""
    try:
        record = service.installer_callback(ctx().store, item.hostname, kind, peer)
    except IllegalTransition as exc:
        log_event(log, "callback-refused", host=item.hostname, callback=kind, reason=str(exc))
        abort(409, description=f"{kind} for {item.hostname}: {exc}")
    log_event(log, "callback", host=item.hostname, callback=kind, peer=peer,
              state=record.state.value)
    return jsonify(hostname=item.hostname, state=record.state.value, netboot=record.netboot)


@bp.put("/api/v1/nodes/<string:hostname>/netboot")
def netboot(hostname: str) -> Response:
    """Operator: netboot on (a fresh token for the next install: older ones go stale) or off."""
    item = node_or_404(hostname)
    require_operator()
    enabled = _json_body().get("enabled")
    if not isinstance(enabled, bool):
        abort(400, description='expected {"enabled": true|false}')
    record = service.set_netboot(ctx().store, item.hostname, enabled)
    log_event(log, "netboot", host=item.hostname, enabled=enabled)
    return jsonify(hostname=item.hostname, state=record.state.value, netboot=record.netboot)


@bp.get("/api/v1/doctor")
def doctor() -> Response:
    """Operator: the preflight report, as `provisiond doctor --json` prints it (it probes the
    segment for DHCP servers and asks every BMC, so it takes seconds)."""
    require_operator()
    return jsonify(run_doctor(ctx().config).json())
