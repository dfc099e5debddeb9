"""Boot blueprint: per-node iPXE scripts, boot loaders and installer kernels/initrds."""

from __future__ import annotations

from flask import Blueprint, Response, abort, request

from provisiond.http import ctx
from provisiond.http.files import send_asset

bp = Blueprint("boot", __name__)


@bp.get("/boot/<string:mac>.ipxe")
def ipxe_script(mac: str) -> Response:
    """The boot decision as an iPXE script (install or boot local). `<mac>` as iPXE's ${net0/mac}."""
    script = ctx().boot.ipxe(mac, peer=request.remote_addr or "", base_url=ctx().url_base())
    if script is None:
        abort(404, description=f"{mac} is not a known MAC address (add the node to the inventory)")
    return Response(script, mimetype="text/plain")


@bp.get("/boot/<string:name>")
def loader(name: str) -> Response:
    """Boot loaders by name (ipxe.efi for UEFI HTTP boot, undionly.kpxe, ...)."""
    path = ctx().config.loaders.get(name)
    if path is None:
        known = ", ".join(sorted(ctx().config.loaders))
        abort(404, description=f"no boot loader named {name} (known: {known})")
    return send_asset(path)


@bp.get("/boot/<string:os_name>/<string:name>")
def installer_asset(os_name: str, name: str) -> Response:
    """The installer kernel and initrd of one OS, by their file names."""
    assets = ctx().config.assets.get(os_name)
    if assets is None:
        abort(404, description=f"no boot assets for os {os_name}")
    for path in (assets.kernel, assets.initrd):
        if path.name == name:
            return send_asset(path)
    abort(404, description=f"{os_name} has no boot asset {name} "
                           f"(have {assets.kernel.name}, {assets.initrd.name})")
