"""The store and the node state machine: transitions, events, tokens, leases, migrations."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from provisiond.lifecycle import Event, IllegalTransition, Source, State, installs, next_state
from provisiond.store import MIGRATIONS, Store, UnknownNode

A, B = "52:54:00:00:00:0a", "52:54:00:00:00:0b"


@pytest.fixture
def store(tmp_path):
    store = Store.in_state_dir(tmp_path)
    store.sync_nodes({"a": A, "b": B})
    return store


def test_the_happy_path_and_its_events(store):
    store.apply("a", Event.PROVISION, Source.OPERATOR, netboot=True)
    for event, source in [(Event.DHCP_BOOT_REQUEST, Source.DHCP), (Event.ANSWER_FETCHED, Source.HTTP),
                          (Event.INSTALL_STARTED, Source.HTTP),
                          (Event.INSTALL_FINISHED, Source.HTTP), (Event.AGENT_STARTED, Source.AGENT),
                          (Event.AGENT_STEP, Source.AGENT), (Event.AGENT_READY, Source.AGENT)]:
        store.apply("a", event, source)
    assert store.node("a").state is State.READY
    events = [e for e in store.events(hostname="a") if e.kind.startswith("state:")]
    assert [(e.kind, e.source) for e in events] == [
        ("state:powering-on", "operator"), ("state:pxe", "dhcp"), ("state:installing", "http"),
        ("state:installed", "http"), ("state:configuring", "agent"), ("state:ready", "agent")]
    assert [e.detail["from"] for e in events] == ["new", "powering-on", "pxe", "installing", "installed", "configuring"]
    assert [e.detail["event"] for e in events] == [
        "provision", "dhcp-boot-request", "answer-fetched", "install-finished", "agent-started",
        "agent-ready"]
    assert store.events(hostname="b") == []


def test_events_that_do_not_apply_are_refused_and_change_nothing(store):
    with pytest.raises(IllegalTransition, match=r"agent-ready does not apply to a new node \(a new node accepts: "):
        store.apply("a", Event.AGENT_READY, Source.AGENT)
    assert store.node("a").state is State.NEW and store.events() == []  # nothing changed
    assert not store.observe("a", Event.INSTALL_FINISHED, Source.HTTP)
    with pytest.raises(IllegalTransition):  # a refused install-finished keeps netboot as it was
        store.apply("a", Event.INSTALL_FINISHED, Source.HTTP, netboot=False)
    store.apply("a", Event.NETBOOT_ON, Source.OPERATOR, netboot=True)
    with pytest.raises(IllegalTransition):
        store.apply("a", Event.INSTALL_FINISHED, Source.HTTP, netboot=False)
    assert store.node("a").netboot is True
    store.apply("a", Event.PROVISION, Source.OPERATOR)
    store.apply("a", Event.POWER_FAILED, Source.IPMI, reason="power: timeout")
    with pytest.raises(IllegalTransition, match="a failed node accepts: agent-started, netboot-off, netboot-on, provision"):
        store.apply("a", Event.DHCP_BOOT_REQUEST, Source.DHCP)
    assert not store.observe("a", Event.DHCP_BOOT_REQUEST, Source.DHCP)  # an observation: ignored


def test_next_state_is_one_table():
    assert next_state(State.NEW, Event.DHCP_BOOT_REQUEST) is State.PXE
    assert next_state(State.READY, Event.PROVISION) is State.POWERING_ON
    assert next_state(State.INSTALLING, Event.NETBOOT_ON) is State.INSTALLING
    for state in (State.INSTALLED, State.CONFIGURING, State.READY, State.FAILED):
        assert next_state(state, Event.NETBOOT_ON) is State.NEW  # a reinstall is visible
    for state in State:
        assert next_state(state, Event.NETBOOT_OFF) is state
        assert installs(state, netboot=False) is False
    assert {s for s in State if installs(s, netboot=True)} == {
        State.NEW, State.POWERING_ON, State.PXE, State.INSTALLING}
    with pytest.raises(IllegalTransition):
        next_state(State.NEW, Event.DEADLINE)  # new has no deadline


def test_netboot_on_for_an_installed_node_is_an_explicit_state_change(store):
    for event in (Event.PROVISION, Event.INSTALL_STARTED):
        store.apply("a", event, Source.OPERATOR, netboot=True)
    store.apply("a", Event.INSTALL_FINISHED, Source.HTTP, netboot=False)
    assert (store.node("a").state, store.node("a").netboot) == (State.INSTALLED, False)
    record = store.set_netboot("a", True, Source.OPERATOR)
    assert (record.state, record.netboot) == (State.NEW, True)
    last = store.events(hostname="a")[-1]
    assert (last.kind, last.detail["from"], last.detail["event"]) == ("state:new", "installed", "netboot-on")
    store.apply("a", Event.INSTALL_STARTED, Source.HTTP)  # the reinstall's callbacks are accepted
    assert store.node("a").state is State.INSTALLING


def test_failed_keeps_its_reason_until_provision(store):
    store.apply("a", Event.PROVISION, Source.OPERATOR)
    store.apply("a", Event.DEADLINE, Source.TIMER, reason="timed out in pxe")
    assert store.node("a").reason == "timed out in pxe"
    store.apply("a", Event.PROVISION, Source.OPERATOR)
    assert (store.node("a").state, store.node("a").reason) == (State.POWERING_ON, None)


def test_an_agent_run_again_after_a_failure_takes_the_node_back_to_configuring(store):
    for event, source in ((Event.PROVISION, Source.OPERATOR), (Event.INSTALL_STARTED, Source.HTTP),
                          (Event.INSTALL_FINISHED, Source.HTTP), (Event.AGENT_STARTED, Source.AGENT)):
        store.apply("a", event, source)
    store.apply("a", Event.AGENT_FAILED, Source.AGENT, reason="step 252 of 258 (cells.discover-hosts) failed")
    assert store.node("a").state is State.FAILED
    store.apply("a", Event.AGENT_STARTED, Source.AGENT)  # the node rebooted; the agent resumes
    assert (store.node("a").state, store.node("a").reason) == (State.CONFIGURING, None)
    store.apply("a", Event.AGENT_READY, Source.AGENT)
    assert store.node("a").state is State.READY


def test_repeating_the_current_state_is_a_no_op(store):
    store.apply("a", Event.DHCP_BOOT_REQUEST, Source.DHCP)
    store.apply("a", Event.DHCP_BOOT_REQUEST, Source.DHCP)
    assert len(store.events(hostname="a")) == 1


def test_deadlines_fail_overdue_nodes(store):
    store.apply("a", Event.PROVISION, Source.OPERATOR)
    since = store.node("a").state_since
    assert store.expire_overdue({State.POWERING_ON: 60}, now=since + 30) == []
    assert store.expire_overdue({State.POWERING_ON: 60}, now=since + 61) == ["a"]
    node = store.node("a")
    assert (node.state, node.reason) == (State.FAILED, "timed out in powering-on")
    assert store.node("b").state is State.NEW  # new is not an active state: no deadline


def test_tokens_are_per_node_and_go_stale(store, tmp_path):
    token = store.current_token("a")
    assert store.current_token("a") == token
    assert store.verify_token("a", token)
    assert not store.verify_token("b", token)
    assert not store.verify_token("a", None) and not store.verify_token("a", "")
    assert not store.verify_token("a", "é" * 10)  # non-ASCII is a wrong token, not an error
    fresh = store.issue_token("a")
    assert fresh != token and store.verify_token("a", fresh) and not store.verify_token("a", token)
    # The database holds no usable token: only a generation number.
    dump = "\n".join(sqlite3.connect(store.path).iterdump())
    assert fresh not in dump and token not in dump
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(UnknownNode):
        store.issue_token("nope")


def test_sync_nodes_keeps_state_and_drops_removed_nodes(store):
    store.apply("a", Event.DHCP_BOOT_REQUEST, Source.DHCP)
    store.save_lease(B, "10.0.0.2", "b", expires=2e9)
    store.issue_token("b")
    store.sync_nodes({"a": A, "c": B})  # b removed, its MAC now belongs to c
    assert store.node("a").state is State.PXE
    assert [n.hostname for n in store.nodes()] == ["a", "c"]
    assert store.lease_for(B) is None and not store.verify_token("b", "x")
    assert store.events(hostname="b")[-1].kind == "removed"
    store.sync_nodes({"a": B, "c": A})  # MACs swapped between known nodes
    assert store.node_by_mac(A).hostname == "c" and store.node_by_mac(B).hostname == "a"


def test_leases_and_seen_macs(store):
    store.save_lease(A, "10.0.0.1", "a", expires=100.0)
    store.save_lease(B, "10.0.0.1", "b", expires=200.0)  # the address moved to another MAC
    assert [(lease.mac, lease.ip) for lease in store.leases()] == [(B, "10.0.0.1")]
    assert store.release_lease(B) and not store.release_lease(B)
    store.record_seen("02:00:00:00:00:01", {"arch": 7})
    store.record_seen("02:00:00:00:00:01", {"arch": 0})
    (seen,) = store.seen_macs()
    assert (seen["count"], seen["detail"]) == (2, {"arch": 0})


def test_unknown_macs_table_is_bounded_under_a_flood(store):
    from provisiond.store import MAX_SEEN_MACS, SEEN_PRUNE_EVERY

    flood = [f"02:{n >> 24 & 255:02x}:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}:00"
             for n in range(MAX_SEEN_MACS * 2)]
    for mac in flood:
        store.record_seen(mac)
    seen = store.seen_macs()
    assert MAX_SEEN_MACS <= len(seen) <= MAX_SEEN_MACS + SEEN_PRUNE_EVERY
    assert seen[0]["mac"] == flood[-1]  # the most recent are kept
    assert flood[0] not in {entry["mac"] for entry in seen}


def test_reopening_keeps_everything_and_migrations_apply_once(tmp_path, store):
    store.apply("a", Event.DHCP_BOOT_REQUEST, Source.DHCP)
    again = Store.in_state_dir(tmp_path)
    assert again.schema_version == len(MIGRATIONS)
    assert again.node("a").state is State.PXE and len(again.events()) == 1


def test_concurrent_writers_lose_nothing(store):
    def writer(n: int) -> None:
        for i in range(50):
            store.add_event("a", f"e{n}-{i}", Source.TFTP)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(store.events(limit=10_000)) == 400
