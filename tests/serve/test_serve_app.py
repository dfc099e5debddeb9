"""The HTTP application through its WSGI interface: boot scripts, installer pages, callbacks,
tokens, operator actions, ranges and error answers."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from flask.testing import FlaskClient

from provisiond.config import Config
from provisiond.http import create_app
from provisiond.inventory import Inventory
from provisiond.lifecycle import Event, Source, State
from provisiond.store import Store

pytest_plugins = ("serve_fixtures",)

NODE1 = {"REMOTE_ADDR": "10.213.0.11"}
NODE3 = {"REMOTE_ADDR": "10.213.0.13"}


def token_in(text: str) -> str:
    match = re.search(r"Bearer ([0-9a-f]{64})", text)
    assert match, "no callback token in the rendered page"
    return match.group(1)


def netboot_on(client: FlaskClient, operator: dict[str, str], host: str) -> None:
    reply = client.put(f"/api/v1/nodes/{host}/netboot", json={"enabled": True}, headers=operator)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.json["netboot"] is True


def test_ipxe_script_installs_while_netboot_on_and_marks_pxe(
    client: FlaskClient, operator: dict[str, str], store: Store
) -> None:
    netboot_on(client, operator, "node1")
    for spelling in ("52:54:00:13:00:11", "52-54-00-13-00-11", "52:54:00:13:00:11".upper()):
        reply = client.get(f"/boot/{spelling}.ipxe")
        assert reply.status_code == 200
        script = reply.get_data(as_text=True)
        assert script.startswith("#!ipxe\n")
        assert "kernel http://10.213.0.1:8080/boot/debian12/linux initrd=initrd.gz" in script
        assert "url=http://10.213.0.1:8080/preseed/node1" in script
        assert "netcfg/get_ipaddress=10.213.0.11" in script
        assert "netcfg/get_netmask=255.255.255.0 netcfg/get_gateway=10.213.0.1" in script
        assert "console=ttyS0" in script
        assert "initrd http://10.213.0.1:8080/boot/debian12/initrd.gz" in script
    assert store.node("node1").state is State.PXE
    pxe = [e for e in store.events(hostname="node1") if e.kind == "state:pxe"]
    assert len(pxe) == 1 and pxe[0].source == "http"


def test_ipxe_script_for_rocky_uses_kickstart_and_static_ip(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    netboot_on(client, operator, "node2")
    script = client.get("/boot/52:54:00:13:00:12.ipxe").get_data(as_text=True)
    assert "inst.ks=http://10.213.0.1:8080/ks/node2" in script
    assert "ip=10.213.0.12::10.213.0.1:255.255.255.0:node2.lab.example:bootnet:none" in script
    assert "ifname=bootnet:52:54:00:13:00:12" in script


def test_ipxe_script_boots_local_when_netboot_off(client: FlaskClient, store: Store) -> None:
    script = client.get("/boot/52:54:00:13:00:11.ipxe").get_data(as_text=True)
    assert "sanboot --no-describe --drive 0x80" in script
    assert "kernel" not in script
    assert store.node("node1").state is State.NEW  # a local boot is no sign of an install


def test_unknown_or_malformed_mac_is_404(client: FlaskClient) -> None:
    assert client.get("/boot/52:54:00:99:99:99.ipxe").status_code == 404
    reply = client.get("/boot/not-a-mac.ipxe")
    assert reply.status_code == 404
    assert "not a known MAC" in reply.get_data(as_text=True)


def test_preseed_only_for_the_node_itself(
    client: FlaskClient, operator: dict[str, str], store: Store
) -> None:
    netboot_on(client, operator, "node1")
    other = client.get("/preseed/node1", environ_base=NODE3)
    assert other.status_code == 403
    assert "served only to that node" in other.get_data(as_text=True)
    assert store.node("node1").state is State.NEW
    # The operator may read it (and reading it is no sign of an install).
    seen = client.get("/preseed/node1", headers=operator)
    assert seen.status_code == 200 and store.node("node1").state is State.NEW
    own = client.get("/preseed/node1", environ_base=NODE1)
    assert own.status_code == 200
    text = own.get_data(as_text=True)
    assert token_in(text) == store.current_token("node1")
    assert "/api/v1/nodes/node1/events" in text
    assert store.node("node1").state is State.INSTALLING
    assert client.get("/ks/node1", environ_base=NODE1).status_code == 404  # debian: preseed only
    assert client.get("/preseed/nosuch", environ_base=NODE1).status_code == 404


def test_kickstart_for_rocky_node(client: FlaskClient, store: Store) -> None:
    reply = client.get("/ks/node2", environ_base={"REMOTE_ADDR": "10.213.0.12"})
    assert reply.status_code == 200
    assert token_in(reply.get_data(as_text=True)) == store.current_token("node2")


def test_lease_address_counts_as_the_node(client: FlaskClient, store: Store) -> None:
    store.save_lease("52:54:00:13:00:11", "10.213.0.99", "node1", expires=2e9)
    assert client.get("/preseed/node1", environ_base={"REMOTE_ADDR": "10.213.0.99"}).status_code == 200


def test_callbacks_walk_the_node_and_turn_netboot_off(
    client: FlaskClient, operator: dict[str, str], store: Store
) -> None:
    netboot_on(client, operator, "node1")
    client.get("/boot/52:54:00:13:00:11.ipxe")
    token = token_in(client.get("/preseed/node1", environ_base=NODE1).get_data(as_text=True))
    auth = {"Authorization": f"Bearer {token}"}
    started = client.post("/api/v1/nodes/node1/events", json={"event": "install-started"}, headers=auth)
    assert started.status_code == 200 and started.json["state"] == "installing"
    finished = client.post("/api/v1/nodes/node1/events", json={"event": "install-finished"}, headers=auth)
    assert finished.status_code == 200
    assert finished.json == {"hostname": "node1", "state": "installed", "netboot": False}
    again = client.post("/api/v1/nodes/node1/events", json={"event": "install-finished"}, headers=auth)
    assert again.status_code == 200  # the installer's retries are harmless
    assert "sanboot" in client.get("/boot/52:54:00:13:00:11.ipxe").get_data(as_text=True)
    kinds = [e.kind for e in store.events(hostname="node1")]
    assert kinds == ["netboot:on", "state:pxe", "state:installing", "callback:install-started",
                     "netboot:off", "state:installed", "callback:install-finished",
                     "callback:install-finished"]


def test_refused_callbacks_change_nothing(
    client: FlaskClient, operator: dict[str, str], store: Store
) -> None:
    netboot_on(client, operator, "node1")
    netboot_on(client, operator, "node3")
    stale = store.current_token("node1")
    netboot_on(client, operator, "node1")  # a new install cycle: the old token is stale
    others = store.current_token("node3")
    before = (store.node("node1"), store.events())
    body = {"event": "install-finished"}
    url = "/api/v1/nodes/node1/events"
    assert client.post(url, json=body).status_code == 401
    assert client.post(url, json=body).headers["WWW-Authenticate"].lower().startswith("bearer")
    assert client.post(url, json=body, headers={"Authorization": "Basic eDp5"}).status_code == 401
    assert client.post(url, json=body, headers={"Authorization": f"Bearer {others}"}).status_code == 403
    assert client.post(url, json=body, headers={"Authorization": f"Bearer {stale}"}).status_code == 403
    assert client.post(url, json=body, headers=operator).status_code == 403
    assert (store.node("node1"), store.events()) == before


def test_callback_body_errors(client: FlaskClient, store: Store) -> None:
    auth = {"Authorization": f"Bearer {store.current_token('node1')}"}
    url = "/api/v1/nodes/node1/events"
    for body, message in (({"event": "install-exploded"}, "event must be one of"),
                          ({}, "event must be one of"), ([], "JSON object")):
        reply = client.post(url, json=body, headers=auth)
        assert reply.status_code == 400
        assert message in reply.json["detail"]
    reply = client.post(url, data="{not json", headers={**auth, "Content-Type": "application/json"})
    assert reply.status_code == 400
    # From `new`, install-finished skips `installing`: the state machine says no, clearly,
    # and the refused callback changes nothing (netboot stays on).
    store.set_netboot("node1", True, Source.OPERATOR)
    before = store.node("node1")
    reply = client.post(url, json={"event": "install-finished"}, headers=auth)
    assert reply.status_code == 409
    assert "install-finished does not apply to a new node" in reply.json["detail"]
    assert store.node("node1") == before


def test_operator_netboot_needs_the_operator_token(
    client: FlaskClient, operator: dict[str, str], store: Store
) -> None:
    url = "/api/v1/nodes/node1/netboot"
    assert client.put(url, json={"enabled": True}).status_code == 401
    bad = {"Authorization": "Bearer " + store.current_token("node1")}
    assert client.put(url, json={"enabled": True}, headers=bad).status_code == 403
    assert store.node("node1").netboot is False
    assert client.put(url, json={"enabled": "yes"}, headers=operator).status_code == 400
    assert client.put("/api/v1/nodes/zzz/netboot", json={"enabled": True}, headers=operator).status_code == 404


def test_nodes_and_events_api(client: FlaskClient, operator: dict[str, str], store: Store) -> None:
    netboot_on(client, operator, "node1")
    client.get("/boot/52:54:00:13:00:11.ipxe")
    nodes = client.get("/api/v1/nodes").json["nodes"]
    assert [n["hostname"] for n in nodes] == ["node1", "node2", "node3"]
    node1 = client.get("/api/v1/nodes/node1").json
    assert node1["state"] == "pxe" and node1["netboot"] is True and node1["ip"] == "10.213.0.11"
    assert node1["last_event"]["kind"] == "state:pxe"
    assert client.get("/api/v1/nodes/nosuch").status_code == 404
    everything = client.get("/api/v1/events").json
    first = everything["events"][0]["id"]
    later = client.get(f"/api/v1/events?since={first}").json
    assert [e["id"] for e in later["events"]] == [e["id"] for e in everything["events"][1:]]
    assert later["last_id"] == everything["last_id"]
    assert client.get("/api/v1/events?host=node1").json["events"][-1]["kind"] == "state:pxe"
    assert client.get("/api/v1/events?since=-1").status_code == 400
    assert client.get("/api/v1/events?since=abc").status_code == 400


def test_assets_whole_and_ranges(client: FlaskClient, config: Config) -> None:
    data = config.assets["debian12"].kernel.read_bytes()
    whole = client.get("/boot/debian12/linux")
    assert whole.status_code == 200 and whole.data == data
    assert whole.headers["Accept-Ranges"] == "bytes"
    part = client.get("/boot/debian12/linux", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.data == data[100:1100]
    assert part.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
    tail = client.get("/boot/debian12/linux", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.data == data[-10:]
    bad = client.get("/boot/debian12/linux", headers={"Range": f"bytes={len(data) + 5}-"})
    assert bad.status_code == 416 and bad.headers["Content-Range"] == f"bytes */{len(data)}"
    assert client.get("/boot/debian12/initrd.gz").data == config.assets["debian12"].initrd.read_bytes()
    assert client.get("/boot/debian12/vmlinuz").status_code == 404
    assert client.get("/boot/plan9/linux").status_code == 404
    assert client.get("/boot/undionly.kpxe").data == config.loaders["undionly.kpxe"].read_bytes()
    assert client.get("/boot/nothing.efi").status_code == 404


def test_missing_asset_file_is_a_clear_404(client: FlaskClient, config: Config) -> None:
    config.assets["debian12"].kernel.unlink()
    reply = client.get("/boot/debian12/linux")
    assert reply.status_code == 404 and "provisiond.toml" in reply.get_data(as_text=True)


def test_api_errors_are_json(client: FlaskClient) -> None:
    reply = client.delete("/api/v1/nodes")
    assert reply.status_code == 405 and reply.json["error"] == "Method Not Allowed"


def test_timeout_fails_the_node(store: Store, client: FlaskClient, operator: dict[str, str]) -> None:
    netboot_on(client, operator, "node1")
    client.get("/boot/52:54:00:13:00:11.ipxe")
    since = store.node("node1").state_since
    assert store.expire_overdue({State.PXE: 60}, now=since + 61) == ["node1"]
    node = client.get("/api/v1/nodes/node1").json
    assert node["state"] == "failed" and node["reason"] == "timed out in pxe"
    store.apply("node1", Event.PROVISION, Source.OPERATOR)
    assert store.node("node1").reason is None


def test_host_header_must_be_plain_when_no_base_url(
    config: Config, serve_inventory: Inventory, store: Store
) -> None:
    client = create_app(config, serve_inventory, store).test_client()
    store.set_netboot("node1", True, Source.OPERATOR)
    good = client.get("/boot/52:54:00:13:00:11.ipxe", headers={"Host": "10.213.0.1:8080"})
    assert "url=http://10.213.0.1:8080/preseed/node1" in good.get_data(as_text=True)
    bad = client.get("/boot/52:54:00:13:00:11.ipxe", headers={"Host": "x y=z"})
    assert bad.status_code == 400


def test_non_ascii_tokens_are_refused_not_crashed(client: FlaskClient, store: Store) -> None:
    weird = {"Authorization": "Bearer caf\u00e9"}
    reply = client.post("/api/v1/nodes/node1/events", json={"event": "install-started"}, headers=weird)
    assert reply.status_code == 403
    assert client.put("/api/v1/nodes/node1/netboot", json={"enabled": True}, headers=weird).status_code == 403
    assert client.get("/preseed/node1", headers=weird).status_code == 403
    assert store.node("node1").state is State.NEW and store.node("node1").netboot is False


def test_if_range_and_head(client: FlaskClient, config: Config) -> None:
    data = config.assets["debian12"].kernel.read_bytes()
    etag = client.get("/boot/debian12/linux").headers["ETag"]
    same = client.get("/boot/debian12/linux", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert same.status_code == 206 and same.data == data[:10]
    changed = client.get("/boot/debian12/linux", headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert changed.status_code == 200 and changed.data == data
    head = client.head("/boot/debian12/linux")
    assert head.status_code == 200 and head.data == b"" and head.content_length == len(data)


def test_operator_templates_override_the_builtin_ones(
    config: Config, serve_inventory: Inventory, store: Store, tmp_path: Path
) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "debian12.cfg.j2").write_text("# site preseed for {{ node.hostname }}\n")
    client = create_app(replace(config, templates=(tmp_path / "mine",)), serve_inventory, store,
                        base_url="http://10.213.0.1:8080").test_client()
    reply = client.get("/preseed/node1", environ_base=NODE1)
    assert reply.get_data(as_text=True) == "# site preseed for node1\n"


def test_netboot_on_after_install_is_a_visible_reinstall(
    client: FlaskClient, operator: dict[str, str], store: Store
) -> None:
    netboot_on(client, operator, "node1")
    token = token_in(client.get("/preseed/node1", environ_base=NODE1).get_data(as_text=True))
    auth = {"Authorization": f"Bearer {token}"}
    for event in ("install-started", "install-finished"):
        assert client.post("/api/v1/nodes/node1/events", json={"event": event}, headers=auth).status_code == 200
    reply = client.put("/api/v1/nodes/node1/netboot", json={"enabled": True}, headers=operator)
    assert reply.json == {"hostname": "node1", "state": "new", "netboot": True}
    last = client.get("/api/v1/events?host=node1").json["events"][-1]
    assert (last["kind"], last["detail"]["from"], last["detail"]["event"]) == (
        "state:new", "installed", "netboot-on")
    # The reinstall runs through: a fresh token, and the installer's callbacks are accepted.
    token = token_in(client.get("/preseed/node1", environ_base=NODE1).get_data(as_text=True))
    auth = {"Authorization": f"Bearer {token}"}
    started = client.post("/api/v1/nodes/node1/events", json={"event": "install-started"}, headers=auth)
    assert started.status_code == 200 and started.json["state"] == "installing"
