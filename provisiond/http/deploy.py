"""Deploy blueprint: what the image method's deploy ramdisk fetches and reports.

  GET  /images/ramdisk/<os>/<file>         the deploy ramdisk (vmlinuz, initrd.img), public
  GET  /deploy/<host>/env                  the node's settings as shell assignments: its token,
                                           disk, firmware, image URL and sha256. Served only to
                                           the node (its address or lease) or the operator; the
                                           node's fetch moves it to `installing`.
  GET  /deploy/<host>/layout.sh?disk_bytes=N   the layout script for the disk found (token)
  GET  /deploy/<host>/node.sh              identity + boot loader script (token)
  GET  /deploy/<host>/root.tar.zst         the role's root image (token)
  POST /deploy/<host>/report?phase=P&status=started|done|failed   one event per phase; the body
                                           is the phase's output; `failed` fails the node.
"""

from __future__ import annotations

import contextlib
import logging
import shlex

from flask import Blueprint, Response, abort, request

from provisiond.errors import UserError
from provisiond.http import ctx, is_ascii_number, node_or_404
from provisiond.http.agent import UNIT as AGENT_UNIT
from provisiond.http.agent import build_zipapp
from provisiond.http.auth import own_node_or_operator, require_node
from provisiond.http.files import send_asset
from provisiond.images.cache import Artifact, ImageCache
from provisiond.images.node_script import NodeIdentity, render_node_script
from provisiond.images.recipes import RecipeError, node_root_recipe, ramdisk_recipe
from provisiond.inventory import Node
from provisiond.lifecycle import Event, IllegalTransition, Source
from provisiond.logs import log_event

bp = Blueprint("deploy", __name__)
log = logging.getLogger("provisiond.deploy")
PHASE_STATUSES = ("started", "done", "failed")
OUTPUT_LIMIT = 8000  # bytes of a phase's output kept in its event


def _cache() -> ImageCache:
    return ImageCache(ctx().config.image_cache)


def _image_node(hostname: str) -> Node:
    node = node_or_404(hostname)
    if node.install_method != "image":
        abort(404, description=f"{node.hostname} installs with the installer, not by image "
                               "(install: image in the inventory selects the image method)")
    return node


def root_image(node: Node) -> Artifact | None:
    """The cached root image this provisiond built for the node's OS and role (its key)."""
    try:
        return _cache().served(node_root_recipe(node, ctx().inventory.site))
    except RecipeError:
        return None


def _fail(node: Node, reason: str, detail: dict) -> None:
    with contextlib.suppress(IllegalTransition):
        ctx().store.apply(node.hostname, Event.INSTALL_FAILED, Source.HTTP, reason=reason, detail=detail)
    log_event(log, "deploy-failed", host=node.hostname, reason=reason)


@bp.get("/images/ramdisk/<string:os_name>/<string:name>")
def ramdisk_file(os_name: str, name: str) -> Response:
    try:
        recipe = ramdisk_recipe(os_name)
    except RecipeError as exc:
        abort(404, description=str(exc))
    artifact = _cache().served(recipe)
    if artifact is None or name not in artifact.files:
        abort(404, description=f"no deploy ramdisk file {name} for {os_name} in {_cache().dir} "
                               "(build it: provisiond image build)")
    return send_asset(artifact.path / name)


@bp.get("/deploy/<string:hostname>/env")
def env(hostname: str) -> Response:
    node = _image_node(hostname)
    context = ctx()
    own, operator = own_node_or_operator(node, "deploy settings page")
    image = root_image(node)
    if image is None:
        reason = (f"no root image for {node.os_name}/{node.role} in {context.config.image_cache} "
                  f"(build it on the server: provisiond image build --role {node.role})")
        if own and not operator and context.boot.spec(node).install:
            _fail(node, reason, {"phase": "image-lookup"})
        abort(503, description=reason)
    if own and not operator:
        context.boot.answer_fetched(node, "deploy-env", request.remote_addr or "")
    info = image.files["root.tar.zst"]
    base = context.url_base()
    values = {
        "PROVISIOND_TOKEN": context.store.current_token(node.hostname),
        "DISK": f"/dev/{node.disk.device}",
        "FIRMWARE": node.firmware,
        "IMAGE_URL": f"{base}/deploy/{node.hostname}/root.tar.zst",
        "IMAGE_SHA256": info["sha256"],
        "IMAGE_BYTES": str(info["bytes"]),
        "IMAGE_KEY": image.key,
    }
    text = "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())
    return Response(text, mimetype="text/plain")


@bp.get("/deploy/<string:hostname>/layout.sh")
def layout_script(hostname: str) -> Response:
    node = _image_node(hostname)
    require_node(node.hostname)
    raw = request.args.get("disk_bytes")
    disk_bytes = None
    if raw is not None:
        if not is_ascii_number(raw):
            abort(400, description=f"disk_bytes must be a whole number of bytes, got {raw!r}")
        disk_bytes = int(raw)
        declared = node.disk.size_bytes
        if declared is not None and disk_bytes < declared:
            reason = (f"the disk /dev/{node.disk.device} has {disk_bytes} bytes, less than the "
                      f"inventory's disk.size ({declared} bytes)")
            _fail(node, reason, {"phase": "layout-fetch"})
            abort(409, description=reason)
        if declared is not None:
            disk_bytes = None  # plan the inventory's size (the paper's tables on the paper's disks)
    try:
        text = ctx().renderer.deploy_script(node, disk_bytes)
    except UserError as exc:
        _fail(node, str(exc), {"phase": "layout-fetch"})
        abort(409, description=str(exc))
    return Response(text, mimetype="text/plain")


@bp.get("/deploy/<string:hostname>/node.sh")
def node_script(hostname: str) -> Response:
    node = _image_node(hostname)
    require_node(node.hostname)
    context = ctx()
    site = context.inventory.site
    home = context.inventory.network(node)  # the node's own network (its gateway, DNS, NTP)
    identity = NodeIdentity(
        hostname=node.hostname, domain=node.domain, mac=node.mac, ip=str(node.ip),
        prefixlen=home.network.prefixlen, gateway=str(home.gateway), firmware=node.firmware,
        server_url=context.url_base(), token=context.store.current_token(node.hostname),
        agent_credential=context.store.agent_credential(node.hostname),
        agent_zipapp=build_zipapp(), agent_unit=AGENT_UNIT,
        dns=[str(server) for server in home.dns], ntp=list(home.ntp),
        root_password_hash=site.root_password_hash, ssh_authorized_keys=list(site.ssh_authorized_keys),
    )
    return Response(render_node_script(identity), mimetype="text/plain")


@bp.get("/deploy/<string:hostname>/root.tar.zst")
def image_file(hostname: str) -> Response:
    node = _image_node(hostname)
    require_node(node.hostname)
    image = root_image(node)
    if image is None:
        abort(404, description=f"no root image for {node.os_name}/{node.role} (provisiond image build)")
    return send_asset(image.path / "root.tar.zst")


@bp.post("/deploy/<string:hostname>/report")
def report(hostname: str) -> Response:
    node = _image_node(hostname)
    require_node(node.hostname)
    phase = request.args.get("phase", "")
    status = request.args.get("status", "")
    if not phase or not phase.replace("-", "").isalnum() or len(phase) > 40 or status not in PHASE_STATUSES:
        abort(400, description=f"expected ?phase=NAME&status={'|'.join(PHASE_STATUSES)}")
    output = request.get_data(as_text=True)[-OUTPUT_LIMIT:]
    token = ctx().store.current_token(node.hostname)
    output = output.replace(token, "<node token>")
    output = output.replace(ctx().store.agent_credential(node.hostname), "<agent credential>")
    detail: dict = {"phase": phase, "status": status, "peer": request.remote_addr or ""}
    uptime = request.args.get("uptime")
    if uptime:
        with contextlib.suppress(ValueError):
            detail["uptime"] = float(uptime)
    if status == "failed":
        detail["output"] = output
        last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "no output")
        _fail(node, f"deploy phase {phase} failed: {last.strip()[:300]}", detail)
    else:
        ctx().store.add_event(node.hostname, f"deploy:{phase}", Source.HTTP, detail)
    log_event(log, "deploy-phase", host=node.hostname, phase=phase, status=status)
    record = ctx().store.node(node.hostname)
    return Response(f"{node.hostname} {phase} {status}: node {record.state.value}\n", mimetype="text/plain")
