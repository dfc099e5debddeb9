"""The web status page: every node's state and progress, a node's timeline, live by SSE.

Server-rendered with Jinja2 (templates in web_templates/, one small script and stylesheet in
web_static/, nothing fetched from elsewhere). Read-only, for the operator: the operator token
as a bearer header, or a session cookie set by the login form, whose value is an HMAC of the
token (the token itself never leaves the form). The page shows no secret: it is built from
the same views as the open JSON API (nodes_view, events_view) plus the node's facts.

Live updates: `/ui/stream` is a server-sent event stream that holds one of the HTTP worker's
threads, so it is bounded twice: at most `stream_slots(threads)` streams at once (a stream
beyond that is told to retry later and ends at once), and each stream ends after
STREAM_SECONDS (the browser reconnects by itself, resuming from its Last-Event-ID). Boot files
and the API keep the other threads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    send_from_directory,
    stream_with_context,
    url_for,
)

from provisiond import nodes as service
from provisiond.http import ctx, node_or_404
from provisiond.http.auth import bearer_token, is_operator
from provisiond.lifecycle import State
from provisiond.store import UnknownNode

bp = Blueprint("web", __name__, template_folder="web_templates")
STATIC = Path(__file__).with_name("web_static")
STATIC_FILES = ("page.js", "page.css")

COOKIE = "provisiond_session"
PHASES = [State.NEW, State.POWERING_ON, State.PXE, State.INSTALLING, State.INSTALLED,
          State.CONFIGURING, State.READY]
STREAM_SECONDS = 30.0  # one stream's life; the browser reconnects (a thread is never held long)
POLL_SECONDS = 1.0  # how often a stream looks for changes (one small query)
KEEPALIVE_SECONDS = 10.0  # a comment line: notices a browser that went away
RETRY_MS = 1000  # reconnect delay after a normal end
BUSY_RETRY_MS = 15000  # reconnect delay when every stream slot is taken
TIMELINE_LIMIT = 500


@bp.app_template_filter("age")
def age(seconds: float) -> str:
    """12s, 5m, 3h07m (as `provisiond status` prints it)."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@bp.app_template_filter("isotime")
def isotime(ts: float, separator: str = "T") -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(separator, "seconds").replace("+00:00", "Z")


def stream_slots(threads: int) -> int:
    """Streams allowed at once in one worker: a quarter of its threads (at least one)."""
    return max(1, threads // 4)


def _session_value() -> str:
    """The cookie's value: derived from the operator token, so the token is never stored by
    the browser, and rotating the token ends every session."""
    return hmac.new(ctx().operator_token.encode(), b"provisiond web session v1",
                    hashlib.sha256).hexdigest()


def _signed_in() -> bool:
    if is_operator(bearer_token()):
        return True
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and cookie.isascii() and hmac.compare_digest(cookie, _session_value())


def _require_page() -> Response | None:
    """None when signed in, else the way to the login form."""
    if _signed_in():
        return None
    return redirect(url_for("web.login", next=request.full_path.rstrip("?")), code=303)


def _safe_next(target: str | None) -> str:
    """Only a path on this server (no open redirect to another site)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return url_for("web.index")
    parts = urlsplit(target)
    return url_for("web.index") if parts.scheme or parts.netloc else target


# -- views --------------------------------------------------------------------------------

def phase(node: dict[str, Any]) -> dict[str, Any]:
    """Where a node is on the way to ready: "n of m" phases, and the agent's step if any."""
    state = State(node["state"])
    index = len(PHASES) - 1 if state is State.READY else (
        PHASES.index(state) if state in PHASES else 0)
    agent = node.get("agent") or {}
    waiting = agent.get("waiting") or {}
    return {
        "index": index, "count": len(PHASES) - 1,
        "step": agent.get("step") and {
            "index": agent.get("index"), "count": agent.get("count"), "name": agent.get("step"),
            "status": agent.get("status"),
        },
        "waiting": waiting.get("missing") and {"fact": waiting.get("fact"),
                                                "missing": waiting.get("missing")},
    }


def _rows() -> list[dict[str, Any]]:
    return [dict(node, phase=phase(node)) for node in service.nodes_view(ctx().store, ctx().inventory)]


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = {state.value: 0 for state in State}
    for row in rows:
        counts[row["state"]] += 1
    return counts


@bp.get("/ui/static/<string:name>")
def static(name: str) -> Response:
    """The page's own script and stylesheet (the only files the browser loads)."""
    if name not in STATIC_FILES:
        abort(404, description=f"no file {name} here")
    return send_from_directory(STATIC, name, max_age=300)


@bp.get("/")
def root() -> Response:
    return redirect(url_for("web.index"), code=302)


@bp.get("/ui/")
def index() -> Response | str:
    if (refused := _require_page()) is not None:
        return refused
    rows = _rows()
    return render_template("nodes.html", nodes=rows, counts=_counts(rows), now=time.time(),
                           marker=ctx().store.change_marker())


@bp.get("/ui/nodes/<string:hostname>")
def node(hostname: str) -> Response | str:
    if (refused := _require_page()) is not None:
        return refused
    item = node_or_404(hostname)
    store = ctx().store
    try:
        view = service.node_view(store, ctx().inventory, item.hostname)
    except UnknownNode:
        abort(404, description=f"{hostname} is not in the store yet (restart serve to sync)")
    events = store.events(hostname=item.hostname, limit=100_000)[-TIMELINE_LIMIT:]
    layout = next((e for e in reversed(events) if e.kind == "agent:layout"), None)
    facts = {name: value for name, by_host in store.facts().items()
             for host, value in by_host.items() if host == item.hostname}
    return render_template("node.html", node=dict(view, phase=phase(view)),
                           events=[service.event_json(e) for e in reversed(events)],
                           layout=layout.detail if layout else None, facts=facts, now=time.time())


@bp.route("/ui/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=target, error=None)
    token = request.form.get("token", "").strip()
    if not token.isascii() or not is_operator(token):
        return render_template("login.html", next=target,
                               error="That is not the operator token of this server."), 403
    response = redirect(target, code=303)
    response.set_cookie(COOKIE, _session_value(), httponly=True, samesite="Strict",
                        secure=request.is_secure, path="/")
    return response


@bp.post("/ui/logout")
def logout() -> Response:
    response = redirect(url_for("web.login"), code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- live updates -------------------------------------------------------------------------

def _sse(event: str, data: str, event_id: str | None = None) -> str:
    lines = [f"event: {event}"] + [f"data: {line}" for line in data.splitlines() or [""]]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    return "\n".join(lines) + "\n\n"


def _changed(rows: list[dict[str, Any]]) -> Iterator[str]:
    now = time.time()
    for row in rows:
        yield _sse("node", render_template("_row.html", node=row, now=now))


def _slots() -> threading.BoundedSemaphore:
    slots = current_app.extensions.get("provisiond.web.streams")
    if slots is None:
        slots = threading.BoundedSemaphore(stream_slots(ctx().config.http_threads))
        current_app.extensions["provisiond.web.streams"] = slots
    return slots


@bp.get("/ui/stream")
def stream() -> Response:
    """Rows that changed since the browser's last marker, as `node` events (rendered <tr>),
    and the state counts as a `summary` event."""
    if not _signed_in():
        abort(401, description="sign in at /ui/login (or send the operator token)")
    slots = _slots()
    if not slots.acquire(blocking=False):
        return Response(f"retry: {BUSY_RETRY_MS}\n: busy, retry later\n\n",
                        mimetype="text/event-stream", headers={"Cache-Control": "no-store"})
    since = request.headers.get("Last-Event-ID") or request.args.get("since", "")

    def fingerprint(row: dict[str, Any]) -> str:
        return json.dumps({k: v for k, v in row.items() if k != "age_seconds"}, sort_keys=True,
                          default=str)

    def events() -> Iterator[str]:
        try:
            marker = ctx().store.change_marker()
            rows = _rows()
            seen = {row["hostname"]: fingerprint(row) for row in rows}
            yield f"retry: {RETRY_MS}\n\n"
            if marker != since:  # the page (or the last stream) is older: send every row
                yield from _changed(rows)
                yield _sse("summary", json.dumps(_counts(rows)), event_id=marker)
            deadline = time.monotonic() + STREAM_SECONDS
            quiet_since = time.monotonic()
            while time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
                current = ctx().store.change_marker()
                if current != marker:
                    rows = _rows()
                    changed = [row for row in rows if seen.get(row["hostname"]) != fingerprint(row)]
                    seen = {row["hostname"]: fingerprint(row) for row in rows}
                    yield from _changed(changed)
                    yield _sse("summary", json.dumps(_counts(rows)), event_id=current)
                    marker = current
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    quiet_since = time.monotonic()
        finally:
            slots.release()

    return Response(stream_with_context(events()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
