"""The agent blueprint through the real Flask app: credentials, manifests and their secrets,
step events and the node's state, facts, barriers, the layout check, the zipapp."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML
from flask import Flask
from flask.testing import FlaskClient

from provisiond.config import Config
from provisiond.http import create_app
from provisiond.inventory import load_inventory
from provisiond.lifecycle import Event, Source, State
from provisiond.nodes import open_store
from provisiond.roles import SECRET_SCOPES
from provisiond.store import Store

INVENTORY = LAB_SITE_YAML + """\
nodes:
  - {hostname: ctl, mac: "52:54:00:15:00:10", role: controller, ip: 10.213.0.10, disk: {device: vda, size: 80G}}
  - {hostname: c1, mac: "52:54:00:15:00:11", role: compute, ip: 10.213.0.11, disk: {device: vda, size: 40GiB}}
  - {hostname: c2, mac: "52:54:00:15:00:12", role: compute, ip: 10.213.0.12, disk: {device: vda, size: 40GiB}}
  - {hostname: r1, mac: "52:54:00:15:00:13", role: compute, ip: 10.213.0.13, os: rocky9}
"""
SECRET_PART = """\
- {id: db.url, kind: ini, title: Database URL, path: /etc/x/x.conf, section: database, option: connection,
   value: "mysql+pymysql://x:{{ secret('db-pass') }}@ctl/x"}
"""


@pytest.fixture
def site(tmp_path: Path) -> tuple[Flask, Store, Config]:
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    templates = tmp_path / "templates"
    (templates / "manifests").mkdir(parents=True)
    config = Config(inventory=tmp_path / "inventory.yaml", state_dir=tmp_path / "state", templates=(templates,))
    inventory = load_inventory(config.inventory)
    store = open_store(config.state_dir, inventory)
    app = create_app(config, inventory, store, base_url="http://10.213.0.1:8080")
    return app, store, config


@pytest.fixture
def client(site) -> FlaskClient:
    return site[0].test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def installed(store: Store, *hosts: str) -> None:
    for host in hosts:
        store.apply(host, Event.INSTALL_STARTED, Source.HTTP)
        store.apply(host, Event.INSTALL_FINISHED, Source.HTTP)


def test_manifest_needs_the_nodes_own_agent_credential(site, client):
    _, store, _ = site
    c1, c2 = store.agent_credential("c1"), store.agent_credential("c2")
    assert client.get("/api/v1/nodes/c1/manifest").status_code == 401
    assert client.get("/api/v1/nodes/c1/manifest", headers=bearer(c2)).status_code == 403
    assert client.get("/api/v1/nodes/c1/manifest", headers=bearer(store.current_token("c1"))).status_code == 403
    reply = client.get("/api/v1/nodes/c1/manifest", headers=bearer(c1))
    assert reply.status_code == 200
    assert reply.json["hostname"] == "c1" and reply.json["server"] == "http://10.213.0.1:8080"
    assert [s["id"] for s in reply.json["steps"]][:4] == ["layout.check", "gluster.hosts", "gluster.packages",
                                                             "gluster.glusterd"]
    # A new credential (netboot on for a reinstall) makes the old one stale.
    fresh = store.issue_agent_credential("c1")
    assert client.get("/api/v1/nodes/c1/manifest", headers=bearer(c1)).status_code == 403
    assert client.get("/api/v1/nodes/c1/manifest", headers=bearer(fresh)).status_code == 200


def test_the_credential_is_not_the_install_token_and_is_in_the_install_pages(site, client):
    _, store, config = site
    operator = bearer(config.operator_token_file.read_text().strip())
    preseed = client.get("/preseed/c1", headers=operator).get_data(as_text=True)
    credential, token = store.agent_credential("c1"), store.current_token("c1")
    assert credential != token
    assert f"echo {credential} > /target/etc/provisiond/agent.credential" in preseed
    assert "wget -q -T 60 -O /target/usr/local/lib/provisiond-agent/provisiond-agent.pyz " \
           "http://10.213.0.1:8080/agent/provisiond-agent.pyz" in preseed
    assert "in-target systemctl enable provisiond-agent.service" in preseed
    assert store.agent_credential("c2") not in preseed
    kickstart = client.get("/ks/r1", headers=operator).get_data(as_text=True)
    post = kickstart.split("%post --log=/root/provisiond-post.log", 1)[1].split("%end", 1)[0]
    assert "curl --fail --silent --show-error --max-time 60 -o /usr/local/lib/provisiond-agent/provisiond-agent.pyz" in post
    assert f"printf '%s\\n' {store.agent_credential('r1')} > /etc/provisiond/agent.credential" in post
    assert "systemctl enable provisiond-agent.service" in post


def test_a_manifest_that_cannot_be_made_fails_the_node_with_the_reason(tmp_path):
    """A site without compute nodes has no GlusterFS bricks: the controller's manifest cannot
    be made. That is the inventory's fault, not the server's: 409 (the agent stops retrying)
    and the node fails at once with the reason, instead of waiting out its deadline."""
    (tmp_path / "inventory.yaml").write_text(LAB_SITE_YAML + """\
nodes:
  - {hostname: ctl, mac: "52:54:00:15:00:10", role: controller, ip: 10.213.0.10, disk: {device: vda, size: 80G}}
""")
    config = Config(inventory=tmp_path / "inventory.yaml", state_dir=tmp_path / "state")
    inventory = load_inventory(config.inventory)
    store = open_store(config.state_dir, inventory)
    client = create_app(config, inventory, store, base_url="http://10.213.0.1:8080").test_client()
    installed(store, "ctl")
    reply = client.get("/api/v1/nodes/ctl/manifest", headers=bearer(store.agent_credential("ctl")))
    assert reply.status_code == 409
    assert "at least one compute node" in reply.json["detail"] and "fix the inventory" in reply.json["detail"]
    record = store.node("ctl")
    assert record.state is State.FAILED and "cannot make the manifest of ctl" in record.reason


def test_a_nodes_manifest_holds_only_its_roles_secrets_resolved_and_render_masks_them(site, client, monkeypatch):
    _, store, config = site
    monkeypatch.setitem(SECRET_SCOPES, "db-pass", frozenset({"controller"}))
    part = config.templates[0] / "manifests" / "layout.yaml.j2"
    part.write_text("{% if role == 'controller' %}" + SECRET_PART + "{% endif %}")
    value = store.site_secret("db-pass")
    reply = client.get("/api/v1/nodes/ctl/manifest", headers=bearer(store.agent_credential("ctl")))
    assert reply.json["steps"][0]["value"] == f"mysql+pymysql://x:{value}@ctl/x"
    assert reply.json["mask"] == [value]
    compute = client.get("/api/v1/nodes/c1/manifest", headers=bearer(store.agent_credential("c1")))
    assert value not in compute.get_data(as_text=True) and "mask" not in compute.json
    # The template may not hand a controller secret to a compute node: the manifest is refused.
    part.write_text(SECRET_PART)
    refused = client.get("/api/v1/nodes/c1/manifest", headers=bearer(store.agent_credential("c1")))
    assert refused.status_code == 409 and "db-pass may not be given to a compute node" in refused.json["detail"]
    assert value not in refused.get_data(as_text=True)
    # A secret that leaks into a step's message is masked before it is stored.
    part.write_text("{% if role == 'controller' %}" + SECRET_PART + "{% endif %}")
    installed(store, "ctl")
    client.post("/api/v1/nodes/ctl/agent-events", headers=bearer(store.agent_credential("ctl")),
                json={"status": "failed", "step": "db.url", "index": 1, "count": 1,
                      "message": f"mysql: access denied for x:{value}", "stderr": f"uri {value}"})
    stored = json.dumps([e.detail for e in store.events(hostname="ctl")]) + (store.node("ctl").reason or "")
    assert value not in stored and "access denied for x:********" in stored


def test_render_manifest_masks_secrets(site, monkeypatch, capsys):
    from provisiond.cli import main

    _, store, config = site
    monkeypatch.setitem(SECRET_SCOPES, "db-pass", frozenset({"controller"}))
    (config.templates[0] / "layout.yaml.j2").write_text(SECRET_PART)
    code = main(["--inventory", str(config.inventory), "--state-dir", str(config.state_dir), "render", "manifest",
                 "ctl", "--templates", str(config.templates[0])])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["steps"][0]["value"] == "mysql+pymysql://x:********@ctl/x"
    assert store.site_secret("db-pass") not in json.dumps(printed)


def test_events_move_the_node_and_show_the_current_step(site, client):
    _, store, _ = site
    installed(store, "c1")
    auth = bearer(store.agent_credential("c1"))

    def post(**body):
        reply = client.post("/api/v1/nodes/c1/agent-events", headers=auth, json=body)
        assert reply.status_code == 200, reply.json
        return reply.json["state"]

    assert post(status="run-started", count=3) == "configuring"
    assert post(status="started", step="a", title="A", kind="file", index=1, count=3) == "configuring"
    assert post(status="changed", step="a", title="A", kind="file", index=1, count=3) == "configuring"
    assert post(status="started", step="b", title="B", kind="barrier", index=2, count=3) == "configuring"
    node = client.get("/api/v1/nodes/c1").json
    assert node["agent"]["index"] == 2 and node["agent"]["count"] == 3 and node["agent"]["step"] == "b"
    assert post(status="run-finished", count=3) == "ready"
    kinds = [e.kind for e in store.events(hostname="c1")]
    assert kinds[kinds.index("state:configuring"):] == [
        "state:configuring", "agent:run-started", "agent:started", "agent:changed", "agent:started",
        "agent:run-finished", "state:ready"]
    bad = client.post("/api/v1/nodes/c1/agent-events", headers=auth, json={"status": "bogus"})
    assert bad.status_code == 400 and "status must be one of" in bad.json["detail"]


def test_a_failed_step_fails_the_node_with_step_and_reason(site, client):
    _, store, _ = site
    installed(store, "c2")
    auth = bearer(store.agent_credential("c2"))
    client.post("/api/v1/nodes/c2/agent-events", headers=auth, json={"status": "run-started", "count": 4})
    client.post("/api/v1/nodes/c2/agent-events", headers=auth, json={
        "status": "failed", "step": "gluster.glusterd", "title": "Start glusterd", "kind": "service",
        "index": 2, "count": 4, "message": "glusterd: exited with status 64", "stderr": "unrecognized option"})
    node = store.node("c2")
    assert node.state is State.FAILED
    assert node.reason == "step 2 of 4 (gluster.glusterd) failed: glusterd: exited with status 64"


def test_facts_and_barriers_fail_at_once_for_a_dead_node(site, client):
    _, store, _ = site
    installed(store, "ctl", "c1", "c2")
    auth = {host: bearer(store.agent_credential(host)) for host in ("ctl", "c1", "c2")}
    body = {"fact": "gluster-brick-ready", "nodes": ["c1", "c2"], "step": "gluster.wait-bricks"}

    waiting = client.post("/api/v1/nodes/ctl/barrier", headers=auth["ctl"], json=body).json
    assert waiting["state"] == "waiting" and waiting["missing"] == ["c1", "c2"]
    assert client.get("/api/v1/nodes/ctl/facts/gluster-brick-ready", headers=auth["ctl"]).status_code == 404
    assert client.put("/api/v1/nodes/c1/facts/gluster-brick-ready", headers=auth["c1"],
                      json={"value": {"brick": "c1:/export/gluster/brick"}}).status_code == 200
    # Only a node itself reports its facts.
    assert client.put("/api/v1/nodes/c2/facts/gluster-brick-ready", headers=auth["c1"],
                      json={"value": {}}).status_code == 403
    waiting = client.post("/api/v1/nodes/ctl/barrier", headers=auth["ctl"], json=body).json
    assert waiting["missing"] == ["c2"] and waiting["have"] == ["c1"]
    shown = client.get("/api/v1/nodes/ctl").json["agent"]["waiting"]
    assert shown["missing"] == ["c2"] and shown["fact"] == "gluster-brick-ready"

    store.apply("c2", Event.AGENT_FAILED, Source.AGENT, reason="step 2 of 6 (gluster.glusterd) failed: boom")
    failed = client.post("/api/v1/nodes/ctl/barrier", headers=auth["ctl"], json=body).json
    assert failed["state"] == "failed" and failed["failed"] == {"c2": "step 2 of 6 (gluster.glusterd) failed: boom"}
    assert "c2 failed: step 2 of 6 (gluster.glusterd) failed: boom" in failed["message"]
    assert client.get("/api/v1/facts").json["facts"] == {
        "gluster-brick-ready": {"c1": {"brick": "c1:/export/gluster/brick"}}}
    bad = client.post("/api/v1/nodes/ctl/barrier", headers=auth["ctl"], json={"fact": "x", "nodes": ["nobody"]})
    assert bad.status_code == 404


def test_many_waiters_all_pass_when_the_fact_arrives(site):
    """Twenty concurrent waiters (threads, each with its own connection) see the barrier met."""
    app, store, _ = site
    installed(store, "ctl", "c1", "c2")
    auth = {host: bearer(store.agent_credential(host)) for host in ("ctl", "c1", "c2")}
    body = {"fact": "gluster-volume-ready", "nodes": ["ctl"]}
    results: list[str] = []
    reported = threading.Event()

    def waiter(host: str) -> None:
        client = app.test_client()
        for _ in range(2000):
            state = client.post(f"/api/v1/nodes/{host}/barrier", headers=auth[host], json=body).json["state"]
            if state != "waiting":
                results.append(state)
                return
            reported.wait(0.01)
        results.append("gave up")

    threads = [threading.Thread(target=waiter, args=(("c1", "c2")[i % 2],)) for i in range(20)]
    for thread in threads:
        thread.start()
    app.test_client().put("/api/v1/nodes/ctl/facts/gluster-volume-ready", headers=auth["ctl"], json={"value": {}})
    reported.set()
    for thread in threads:
        thread.join(30)
    assert results == ["met"] * 20


def test_layout_endpoint_names_what_is_missing(site, client):
    _, store, _ = site
    auth = bearer(store.agent_credential("c1"))
    facts = {"lsblk": {"blockdevices": []}, "vgs": {"report": [{"vg": []}]},
             "lvs": {"report": [{"lv": []}]}, "findmnt": {"filesystems": []}}
    reply = client.post("/api/v1/nodes/c1/layout", headers=auth, json=facts).json
    assert any(p.startswith("volume group vg_gluster is missing") for p in reply["problems"])
    real = json.loads((Path(__file__).parent / "data" / "compute-vda-40GiB-no-vg_gluster.json").read_text())
    reply = client.post("/api/v1/nodes/c1/layout", headers=auth, json=real).json  # c1: 40 GiB on vda
    assert reply["problems"] == ["volume group vg_gluster is missing (the compute model puts it on vda3; "
                                 "found: vg_base)"]
    whole = json.loads((Path(__file__).parent / "data" / "compute-vda-40GiB.json").read_text())
    assert client.post("/api/v1/nodes/c1/layout", headers=auth, json=whole).json["problems"] == []
    assert store.events(hostname="c1")[-1].detail == {"ok": True, "problems": []}
    bad = client.post("/api/v1/nodes/c1/layout", headers=auth, json={"lsblk": {}})
    assert bad.status_code == 400 and "layout check of c1" in bad.json["detail"]


def test_the_zipapp_runs_with_a_plain_python(site, client, tmp_path):
    reply = client.get("/agent/provisiond-agent.pyz")
    assert reply.status_code == 200
    pyz = tmp_path / "agent.pyz"
    pyz.write_bytes(reply.data)
    assert client.get("/agent/provisiond-agent.pyz").data == reply.data  # deterministic
    out = subprocess.run(["/usr/bin/python3", "-I", str(pyz), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("provisiond-agent ")
    unit = client.get("/agent/provisiond-agent.service").get_data(as_text=True)
    assert "After=network-online.target" in unit and "ConditionPathExists=!/var/lib/provisiond-agent/done" in unit


def test_status_shows_the_step_n_of_m_and_what_a_barrier_waits_for(site, client, capsys):
    from provisiond.cli import main

    _, store, config = site
    installed(store, "ctl")
    auth = bearer(store.agent_credential("ctl"))
    client.post("/api/v1/nodes/ctl/agent-events", headers=auth, json={"status": "run-started", "count": 14})
    client.post("/api/v1/nodes/ctl/agent-events", headers=auth, json={
        "status": "started", "step": "gluster.wait-bricks", "title": "Wait", "kind": "barrier", "index": 6,
        "count": 14})
    client.post("/api/v1/nodes/ctl/barrier", headers=auth, json={"fact": "gluster-brick-ready", "nodes": ["c1", "c2"]})
    code = main(["--inventory", str(config.inventory), "--state-dir", str(config.state_dir), "status", "--json"])
    shown = {n["hostname"]: n for n in json.loads(capsys.readouterr().out)["nodes"]}["ctl"]
    assert code == 0 and shown["state"] == "configuring"
    from provisiond.cli.status_cmds import agent_step

    assert agent_step(shown) == "6/14 gluster.wait-bricks (started), waiting for gluster-brick-ready from c1, c2"
    assert main(["--inventory", str(config.inventory), "--state-dir", str(config.state_dir), "status"]) == 0
    table = capsys.readouterr().out
    assert "6/14" in table and "gluster.wait-bricks" in table
