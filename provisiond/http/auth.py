"""Bearer tokens: node tokens for callbacks, the operator token for mutating endpoints."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from flask import abort, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Unauthorized

from provisiond.http import ctx
from provisiond.inventory import Node


def bearer_token() -> str | None:
    """The bearer token, or None. A token with non-ASCII characters cannot be valid (and
    hmac.compare_digest refuses such strings), so it reads as an empty, wrong token."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    value = value.strip()
    return value if value.isascii() else ""


def is_operator(token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(token or "", ctx().operator_token)


def require_operator() -> None:
    """401 without a token, 403 with a wrong one (no state is touched before this passes)."""
    token = bearer_token()
    if token is None:
        raise Unauthorized(description="this endpoint needs the operator token "
                           "(Authorization: Bearer <state-dir>/operator.token)",
                           www_authenticate=WWWAuthenticate("bearer"))
    if not is_operator(token):
        abort(403, description="the operator token is wrong")


def require_credential(hostname: str, verify: Callable[[str, str], bool], needs: str, wrong: str) -> None:
    """401 naming the credential a node's endpoint `needs`, 403 when `verify` refuses it (another
    node's, or stale after a reinstall): one rule for node tokens and agent credentials."""
    token = bearer_token()
    if token is None:
        raise Unauthorized(description=needs, www_authenticate=WWWAuthenticate("bearer"))
    if not (token and verify(hostname, token)):
        abort(403, description=f"{wrong} (another node's, or stale after a reinstall)")


def require_node(hostname: str) -> None:
    """The node's own current token; another node's or a stale one is refused."""
    require_credential(hostname, ctx().store.verify_token,
                       f"callbacks for {hostname} need its node token "
                       "(Authorization: Bearer <token from its kickstart/preseed>)",
                       f"the token is not {hostname}'s current token")


def own_node_or_operator(node: Node, what: str) -> tuple[bool, bool]:
    """(own, operator) for a page that carries the node's token (an answer file, the deploy
    settings): served only to the node itself (its inventory address or its current DHCP
    lease) or with the operator token; anyone else gets 403, naming what was asked."""
    context = ctx()
    peer = request.remote_addr or ""
    lease = context.store.lease_for(node.mac)
    own = peer == str(node.ip) or (lease is not None and lease.ip == peer)
    operator = is_operator(bearer_token())
    if not (own or operator):
        abort(403, description=f"the {what} of {node.hostname} is served only to that node "
                               f"({node.ip}) or with the operator token; {peer} is neither")
    return own, operator
