"""Install blueprint: each install method's answer file, at its own route (`/ks/<host>`,
`/preseed/<host>`, ...: the routes come from the install-method table).

These pages carry the node's callback token, so each is served only to that node (its
inventory address or its current DHCP lease) or to the operator (operator token). A fetch
by the node itself is the sign that its installer runs (lifecycle event answer-fetched), when
the boot decision would serve it the installer now (BootService.answer_fetched).
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, request

from provisiond.boot.methods import METHODS
from provisiond.http import ctx, node_or_404
from provisiond.http.auth import own_node_or_operator
from provisiond.render import ServerInfo

bp = Blueprint("install", __name__)


def _serve(hostname: str, kind: str) -> Response:
    node = node_or_404(hostname)
    context = ctx()
    own, operator = own_node_or_operator(node, kind)
    actual, text = context.renderer.install_config(
        node, ServerInfo(url=context.url_base(), token=context.store.current_token(node.hostname),
                         agent_credential=context.store.agent_credential(node.hostname))
    )
    if actual != kind:
        abort(404, description=f"{node.hostname} installs {node.os_name}, which uses a {actual}, "
                               f"not a {kind}")
    if own and not operator:
        context.boot.answer_fetched(node, kind, request.remote_addr or "")
    return Response(text, mimetype="text/plain")


for _method in (m for m in METHODS.values() if m.template):  # the image method serves its own
    bp.add_url_rule(f"{_method.answer_route}/<string:hostname>", _method.name,
                    lambda hostname, kind=_method.name: _serve(hostname, kind))
