"""The status page, /metrics, the discovery list and TFTP statistics through the WSGI app
(in-process; the browser, promtool and real traffic are in test_web_serve.py)."""

from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from provisiond import nodes as service
from provisiond.config import Config
from provisiond.http import web
from provisiond.lifecycle import Event, Source
from provisiond.store import Store

pytest_plugins = ("serve_fixtures",)


def sign_in(client: FlaskClient, config: Config) -> None:
    token = config.operator_token_file.read_text().strip()
    reply = client.post("/ui/login", data={"token": token, "next": "/ui/"})
    assert reply.status_code == 303 and reply.headers["Location"].endswith("/ui/")


def row(html: str, host: str) -> str:
    match = re.search(rf'<tr id="node-{host}".*?</tr>', html, re.S)
    assert match, f"no row for {host}"
    return match.group(0)


def test_page_needs_the_operator(client: FlaskClient, config: Config) -> None:
    reply = client.get("/ui/")
    assert reply.status_code == 303 and "/ui/login" in reply.headers["Location"]
    assert client.get("/ui/stream").status_code == 401
    wrong = client.post("/ui/login", data={"token": "not-the-token"})
    assert wrong.status_code == 403 and "not the operator token" in wrong.text
    assert "provisiond_session" not in wrong.headers.get("Set-Cookie", "")
    sign_in(client, config)
    assert client.get("/ui/").status_code == 200


def test_bearer_token_also_opens_the_page(client: FlaskClient, operator: dict[str, str]) -> None:
    reply = client.get("/ui/", headers=operator)
    assert reply.status_code == 200 and 'id="node-node1"' in reply.text


def test_login_redirects_only_on_this_server(client: FlaskClient, config: Config) -> None:
    token = config.operator_token_file.read_text().strip()
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        reply = client.post("/ui/login", data={"token": token, "next": target})
        assert reply.status_code == 303 and reply.headers["Location"] == "/ui/"


def test_rows_show_state_progress_and_reason(client: FlaskClient, config: Config,
                                             store: Store) -> None:
    sign_in(client, config)
    service.provision(store, "node1")
    store.observe("node1", Event.DHCP_BOOT_REQUEST, Source.DHCP)
    service.provision(store, "node3")
    service.power_failed(store, "node3", "power: timeout: BMC 10.0.0.3 did not answer")
    html = client.get("/ui/").text
    node1 = row(html, "node1")
    assert 'data-state="pxe"' in node1 and ">pxe</span>" in node1
    assert "2 of 6" in node1 and "state:pxe" in node1 and "(dhcp)" in node1
    node3 = row(html, "node3")
    assert "failed" in node3 and "BMC 10.0.0.3 did not answer" in node3
    assert "<caption>" in html and 'scope="col"' in html and 'lang="en"' in html
    # Nothing is fetched from another site: every src/href is a path on this server.
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith(("/", "#")), url


def test_node_page_has_timeline_facts_and_layout(client: FlaskClient, config: Config,
                                                 store: Store) -> None:
    sign_in(client, config)
    service.provision(store, "node2")
    store.set_fact("node2", "gluster.brick", {"path": "/bricks/b1"})
    store.add_event("node2", "agent:layout", Source.AGENT,
                    {"ok": False, "problems": ["vg0 is 10 GiB, the model wants 20 GiB"]})
    html = client.get("/ui/nodes/NODE2").text
    assert "<h1>node2</h1>" in html and "provision" in html
    assert "gluster.brick" in html and "/bricks/b1" in html
    assert "vg0 is 10 GiB, the model wants 20 GiB" in html
    assert client.get("/ui/nodes/nope").status_code == 404


def test_no_secret_on_any_page(client: FlaskClient, config: Config, store: Store,
                               app: Flask) -> None:
    """Tokens, agent credentials and site secrets are nowhere in the HTML or the stream."""
    sign_in(client, config)
    secrets = {config.operator_token_file.read_text().strip()}
    for host in ("node1", "node2", "node3"):
        service.provision(store, host)
        secrets |= {store.current_token(host), store.agent_credential(host)}
    secrets |= set(store.site_secrets().values())
    pages = [client.get("/ui/").text, client.get("/ui/login").text]
    pages += [client.get(f"/ui/nodes/{host}").text for host in ("node1", "node2", "node3")]
    stream = client.get("/ui/stream?since=old")
    pages.append(next(stream.response).decode() + next(stream.response).decode()
                 + next(stream.response).decode())
    stream.close()
    assert secrets and all(len(secret) >= 16 for secret in secrets)
    for page in pages:
        for secret in secrets:
            assert secret not in page
    cookie = client.get_cookie("provisiond_session")
    assert cookie is not None and cookie.value not in secrets and cookie.http_only


def test_stream_sends_changed_rows(client: FlaskClient, config: Config, store: Store,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(web, "STREAM_SECONDS", 5.0)
    sign_in(client, config)
    marker = store.change_marker()
    reply = client.get(f"/ui/stream?since={marker}")
    assert reply.mimetype == "text/event-stream"
    chunks = iter(reply.response)
    assert next(chunks).decode().startswith("retry:")
    service.provision(store, "node2")
    text = next(chunks).decode()
    assert text.startswith("event: node\n") and 'id="node-node2"' in text
    assert 'data-state="powering-on"' in text
    summary = next(chunks).decode()
    assert summary.startswith("event: summary\n") and '"powering-on": 1' in summary
    assert f"id: {store.change_marker()}" in summary
    reply.close()


def test_streams_are_bounded(app: Flask, config: Config, operator: dict[str, str]) -> None:
    """Beyond the slots a stream is told to come back later and ends at once, so boot files
    and the API keep the worker's other threads (each stream in its own thread, as in the
    gthread worker)."""
    slots = web.stream_slots(config.http_threads)
    assert 1 <= slots <= config.http_threads // 4
    running = threading.Barrier(slots + 1, timeout=20)
    finish = threading.Event()

    def hold() -> None:
        reply = app.test_client().get("/ui/stream", headers=operator)
        next(iter(reply.response))  # the stream holds its slot once it runs
        running.wait()
        finish.wait(20)
        reply.close()

    holders = [threading.Thread(target=hold) for _ in range(slots)]
    for thread in holders:
        thread.start()
    running.wait()
    busy = app.test_client().get("/ui/stream", headers=operator)
    assert busy.get_data(as_text=True).startswith(f"retry: {web.BUSY_RETRY_MS}")
    finish.set()
    for thread in holders:
        thread.join(20)
    again = app.test_client().get("/ui/stream", headers=operator)
    assert next(iter(again.response)).decode() == f"retry: {web.RETRY_MS}\n\n"
    again.close()


def test_metrics_text_format(client: FlaskClient, store: Store) -> None:
    service.provision(store, "node1")
    store.add_event("node1", "power:pxe-boot", Source.IPMI, {"ok": True, "elapsed": 0.7})
    store.add_event("node3", "power:pxe-boot", Source.IPMI, {"ok": False, "elapsed": 12.0})
    store.add_event("node1", "agent:ok", Source.AGENT, {"step": "hostname"})
    client.get("/api/v1/nodes")
    reply = client.get("/metrics")
    assert reply.status_code == 200 and reply.mimetype == "text/plain"
    text = reply.text
    assert 'provisiond_nodes{state="powering-on"} 1.0' in text
    assert 'provisiond_nodes{state="new"} 2.0' in text
    assert 'provisiond_power_calls_total{action="pxe-boot",result="ok"} 1.0' in text
    assert 'provisiond_power_calls_total{action="pxe-boot",result="failed"} 1.0' in text
    assert 'provisiond_power_call_seconds_bucket{action="pxe-boot",le="1.0"} 1.0' in text
    assert 'provisiond_power_call_seconds_count{action="pxe-boot"} 2.0' in text
    assert 'provisiond_agent_reports_total{status="ok"} 1.0' in text
    assert ('provisiond_http_requests_total{method="GET",route="/api/v1/nodes",status="200"} 1.0'
            in text)


def test_discovery_list_and_transfers_in_the_api(client: FlaskClient, store: Store) -> None:
    store.record_seen("52:54:00:99:00:01", {"interface": "eth0", "message": "DISCOVER",
                                            "vendor_class": "PXEClient:Arch:00007"})
    store.record_transfer("10.213.0.11:2000", "ipxe.efi", 1000, 0.5, 2, {"blksize": 1468}, "ok")
    store.record_transfer("10.213.0.12:2001", "undionly.kpxe", 0, 5.0, 5, {}, "timeout")
    store.record_transfer("10.213.0.12:2002", "nope", 0, 0.0, 0, {}, "error: file not found")
    seen = client.get("/api/v1/discovered").json["discovered"]
    assert [item["mac"] for item in seen] == ["52:54:00:99:00:01"]
    assert seen[0]["detail"]["vendor_class"] == "PXEClient:Arch:00007" and seen[0]["count"] == 1
    stats = client.get("/api/v1/tftp/transfers?limit=2").json
    assert [t["filename"] for t in stats["transfers"]] == ["nope", "undionly.kpxe"]
    assert stats["totals"] == {"error": {"transfers": 1, "bytes": 0, "retransmits": 0},
                               "ok": {"transfers": 1, "bytes": 1000, "retransmits": 2},
                               "timeout": {"transfers": 1, "bytes": 0, "retransmits": 5}}
    bad = client.get("/api/v1/tftp/transfers?limit=0")
    assert bad.status_code == 400 and "limit must be an integer from 1 to" in bad.json["detail"]


def test_barrier_waits_are_counted_and_shown(client: FlaskClient, config: Config,
                                             store: Store) -> None:
    credential = store.issue_agent_credential("node1")
    auth = {"Authorization": f"Bearer {credential}"}
    body = {"fact": "gluster-brick-ready", "nodes": ["node2", "node3"], "step": "volume"}
    reply = client.post("/api/v1/nodes/node1/barrier", json=body, headers=auth)
    assert reply.status_code == 200 and reply.json["state"] == "waiting"
    text = client.get("/metrics").text
    assert 'provisiond_barrier_checks_total{result="waiting"} 1.0' in text
    assert "provisiond_barrier_waiting_nodes 1.0" in text
    sign_in(client, config)
    node1 = row(client.get("/ui/").text, "node1")
    assert "waiting for gluster-brick-ready from node2, node3" in node1
