"""Agent blueprint: the agent itself (zipapp + systemd unit), manifests, step events, facts,
barriers and the layout check.

Node endpoints take the node's **agent credential** (not the install token, which dies with
the install): 401 without one, 403 with another node's. Nothing is read or changed before the
credential is checked. Secrets are resolved only into the node's own manifest; events are
stored with every site secret's value masked.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request

import agent as agent_package
from provisiond.errors import UserError
from provisiond.http import ctx, node_or_404
from provisiond.http.auth import require_credential, require_operator
from provisiond.layouts import LayoutError, plan_layout
from provisiond.lifecycle import Event, Source, State
from provisiond.logs import log_event
from provisiond.manifests import ManifestService
from provisiond.roles.barriers import evaluate_barrier
from provisiond.roles.layout_check import LayoutFactsError, check_layout
from provisiond.roles.schema import FACT_NAME
from provisiond.roles.secrets import MASK

bp = Blueprint("agent", __name__)
log = logging.getLogger("provisiond.http")

AGENT_STATUSES = ("run-started", "started", "progress", "ok", "changed", "failed", "run-finished")
UNIT = """\
[Unit]
Description=provisiond agent: finish this node from its role manifest
Wants=network-online.target
After=network-online.target
# Runs at every boot until the node is ready (the agent writes this file then).
ConditionPathExists=!/var/lib/provisiond-agent/done

[Service]
Type=simple
ExecStart=/usr/bin/python3 /usr/local/lib/provisiond-agent/provisiond-agent.pyz
Restart=on-abnormal
RestartSec=10
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
"""


def manifests() -> ManifestService:
    """One ManifestService per application (templates are read once)."""
    from flask import current_app

    service = current_app.extensions.get("provisiond-manifests")
    if service is None:
        context = ctx()
        service = ManifestService(context.inventory, list(context.config.templates))
        current_app.extensions["provisiond-manifests"] = service
    return service


def build_zipapp() -> bytes:
    """The agent package as one file that `python3 FILE` runs (PEP 441 zipapp), built in memory.

    Deterministic (fixed timestamps, sorted entries), so its digest changes only with the code.
    """
    root = Path(agent_package.__file__).resolve().parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        def add(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)

        add("__main__.py", b"from agent.cli import main\n\nraise SystemExit(main())\n")
        for path in sorted(root.rglob("*.py")):
            add(f"agent/{path.relative_to(root).as_posix()}", path.read_bytes())
    return b"#!/usr/bin/python3\n" + buffer.getvalue()


def require_agent(hostname: str) -> None:
    require_credential(hostname, ctx().store.verify_agent_credential,
                       f"{hostname}'s agent endpoints need its agent credential "
                       "(Authorization: Bearer <the contents of /etc/provisiond/agent.credential>)",
                       f"the credential is not {hostname}'s current agent credential")


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="expected a JSON object body (Content-Type: application/json)")
    return body


def _masked(text: str, values: dict[str, str]) -> str:
    for value in sorted(values.values(), key=len, reverse=True):
        if value:
            text = text.replace(value, MASK)
    return text


@bp.get("/agent/provisiond-agent.pyz")
def zipapp() -> Response:
    return Response(build_zipapp(), mimetype="application/zip")


@bp.get("/agent/provisiond-agent.service")
def unit() -> Response:
    return Response(UNIT, mimetype="text/plain")


@bp.get("/api/v1/nodes/<string:hostname>/manifest")
def manifest(hostname: str) -> Response:
    node = node_or_404(hostname)
    require_agent(node.hostname)
    try:
        body = manifests().for_node(node, ctx().url_base(), ctx().store.site_secret)
    except UserError as exc:
        # The inventory (or an operator's template) cannot give this node a manifest: that is
        # no server fault the agent should retry (409, not 5xx), and the node fails now with
        # the reason instead of sitting in `installed` until its deadline.
        reason = f"cannot make the manifest of {node.hostname}: {exc}"
        ctx().store.observe(node.hostname, Event.AGENT_FAILED, Source.HTTP, reason=reason)
        abort(409, description=f"{reason}; fix the inventory, then restart the agent")
    return jsonify(body)


@bp.post("/api/v1/nodes/<string:hostname>/agent-credential")
def issue_credential(hostname: str) -> Response:
    """Operator: a new agent credential for the node (the old one stops working)."""
    node = node_or_404(hostname)
    require_operator()
    credential = ctx().store.issue_agent_credential(node.hostname)
    ctx().store.add_event(node.hostname, "agent:credential-issued", Source.OPERATOR, {})
    return jsonify(hostname=node.hostname, credential=credential)


@bp.post("/api/v1/nodes/<string:hostname>/agent-events")
def agent_event(hostname: str) -> Response:
    """A step's progress; moves the node installed -> configuring -> ready | failed."""
    node = node_or_404(hostname)
    require_agent(node.hostname)
    body = _json_body()
    status = body.get("status")
    if status not in AGENT_STATUSES:
        abort(400, description=f"status must be one of {', '.join(AGENT_STATUSES)}, got {status!r}")
    store = ctx().store
    secrets = store.site_secrets()
    detail = {key: _masked(str(body[key]), secrets) if isinstance(body[key], str) else body[key]
              for key in ("step", "title", "kind", "index", "count", "message", "stderr")
              if body.get(key) not in (None, "")}
    if status == "run-started":
        store.observe(node.hostname, Event.AGENT_STARTED, Source.AGENT, detail={"steps": body.get("count")})
    store.add_event(node.hostname, f"agent:{status}", Source.AGENT, detail)
    if status not in ("run-started", "run-finished"):
        store.set_agent_progress(node.hostname, detail, status)
    if status == "failed":
        reason = (f"step {detail.get('index')} of {detail.get('count')} ({detail.get('step')}) failed: "
                  f"{detail.get('message', '')}")
        store.observe(node.hostname, Event.AGENT_FAILED, Source.AGENT, reason=reason)
    elif status == "run-finished":
        store.clear_agent_waiting(node.hostname)
        store.observe(node.hostname, Event.AGENT_READY, Source.AGENT)
    log_event(log, "agent", host=node.hostname, status=status, step=detail.get("step", ""))
    record = store.node(node.hostname)
    return jsonify(hostname=node.hostname, state=record.state.value)


def _fact_name(name: str) -> str:
    if not FACT_NAME.match(name):
        abort(400, description=f"fact name {name!r} must be lower-case letters, digits, '.', '_' or '-'")
    return name


@bp.get("/api/v1/nodes/<string:hostname>/facts/<string:name>")
def get_fact(hostname: str, name: str) -> Response:
    node = node_or_404(hostname)
    require_agent(node.hostname)
    fact = ctx().store.fact(node.hostname, _fact_name(name))
    if fact is None:
        abort(404, description=f"{node.hostname} has not reported {name}")
    return jsonify(hostname=node.hostname, name=name, value=fact)


@bp.put("/api/v1/nodes/<string:hostname>/facts/<string:name>")
def put_fact(hostname: str, name: str) -> Response:
    node = node_or_404(hostname)
    require_agent(node.hostname)
    body = _json_body()
    if "value" not in body:
        abort(400, description='expected {"value": <any JSON>}')
    ctx().store.set_fact(node.hostname, _fact_name(name), body["value"])
    ctx().store.add_event(node.hostname, "agent:fact", Source.AGENT, {"fact": name})
    return jsonify(hostname=node.hostname, name=name, value=body["value"])


@bp.get("/api/v1/facts")
def facts() -> Response:
    """Every reported fact: {fact: {host: value}} (no secrets: facts are names and states)."""
    return jsonify(facts=ctx().store.facts())


@bp.post("/api/v1/nodes/<string:hostname>/barrier")
def barrier(hostname: str) -> Response:
    """Evaluate a barrier for a waiting node, and remember what it waits for (status shows it)."""
    node = node_or_404(hostname)
    require_agent(node.hostname)
    body = _json_body()
    fact, nodes = body.get("fact"), body.get("nodes")
    if not isinstance(fact, str) or not isinstance(nodes, list) or not nodes or \
            not all(isinstance(name, str) for name in nodes):
        abort(400, description='expected {"fact": "...", "nodes": ["host", ...], "step": "..."}')
    names = [node_or_404(name).hostname for name in nodes]
    store = ctx().store
    failed = {record.hostname: record.reason or "failed" for record in store.nodes()
              if record.state is State.FAILED and record.hostname in names}
    status = evaluate_barrier(_fact_name(fact), names, store.fact_reporters(fact), failed)
    store.set_agent_waiting(node.hostname, status.as_json() if status.state == "waiting" else None)
    current_app.extensions["provisiond.metrics"].barrier_checks.labels(status.state).inc()
    return jsonify(status.as_json())


@bp.post("/api/v1/nodes/<string:hostname>/layout")
def layout(hostname: str) -> Response:
    """Compare the node's disk facts with its role's storage model."""
    node = node_or_404(hostname)
    require_agent(node.hostname)
    body = _json_body()
    try:
        model = plan_layout(node.role, node.disk.size_bytes, device=node.disk.device, uefi=node.uefi)
        problems = check_layout(model, body)
    except (LayoutError, LayoutFactsError) as exc:
        abort(400, description=f"layout check of {node.hostname}: {exc}")
    ctx().store.add_event(node.hostname, "agent:layout", Source.AGENT,
                          {"ok": not problems, "problems": problems})
    summary = (f"{len(model.volume_groups)} volume groups and their mounts match the {node.role} model"
               if not problems else "; ".join(problems))
    return jsonify(hostname=node.hostname, problems=problems, summary=summary)

