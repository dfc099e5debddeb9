"""Hostile request parameters and bodies get a clear 4xx, never a 500, and what a client
sends never reaches the log raw."""

from __future__ import annotations

import io
import logging

import pytest
from flask.testing import FlaskClient

from provisiond.lifecycle import State
from provisiond.logs import KeyValueFormatter, log_event
from provisiond.store import Store
from provisiond.tftp.options import negotiate

pytest_plugins = ("serve_fixtures",)


@pytest.mark.parametrize("number", ["\u00b2", "\u0661\u0662", "\uff11", "1\u00b2", "-1", "1e3"])
def test_event_query_numbers_are_ascii_digits_only(client: FlaskClient, operator: dict[str, str],
                                                   number: str) -> None:
    for query in (f"since={number}", f"limit={number}"):
        reply = client.get(f"/api/v1/events?{query}", headers=operator)
        assert reply.status_code == 400, query
        assert "non-negative integers" in reply.json["detail"]


def test_deeply_nested_json_is_a_400(client: FlaskClient, store: Store,
                                     operator: dict[str, str]) -> None:
    nested = "[" * 20_000 + "]" * 20_000  # under the 64 KiB body limit
    auth = {"Authorization": f"Bearer {store.current_token('node1')}",
            "Content-Type": "application/json"}
    reply = client.post("/api/v1/nodes/node1/events", data=nested, headers=auth)
    assert reply.status_code == 400 and "JSON object" in reply.json["detail"]
    reply = client.put("/api/v1/nodes/node1/netboot", data=nested,
                       headers={**operator, "Content-Type": "application/json"})
    assert reply.status_code == 400
    # and the service goes on
    assert client.get("/api/v1/health").status_code == 200


def test_tftp_option_numbers_are_ascii_digits_only() -> None:
    for hostile in ("\u00b2", "\u0661\u0662", "1\u00b3"):
        chosen = negotiate({"blksize": hostile, "timeout": hostile, "tsize": hostile,
                            "windowsize": hostile}, size=1000)
        assert chosen.reply == {}


def test_control_characters_from_a_request_never_reach_the_log_raw(client: FlaskClient) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    logger = logging.getLogger("provisiond")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        client.get("/boot/%1b[2J%00%0d%0aforged=1%c2%9b.ipxe")
        log_event(logger, "probe", name="a\x1b]0;x\x07b\rc\u0085d")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    text = stream.getvalue()
    lines = text.splitlines()
    assert len(lines) == 2, text
    for raw in ("\x1b", "\x00", "\r", "\x07", "\u0085", "\x9b"):
        assert raw not in text
    assert "\\x1b[2J\\x00\\r\\nforged=1\\x9b" in lines[0]
    assert 'name="a\\x1b]0;x\\x07b\\rc\\x85d"' in lines[1]


def test_answer_file_fetch_moves_state_only_when_the_boot_would_install(
        client: FlaskClient, store: Store, operator: dict[str, str]) -> None:
    """From the node's own address, unauthenticated: the file is served, but with netboot off
    the node stays where it is; with netboot on the fetch is the install's first sign."""
    node1 = {"REMOTE_ADDR": "10.213.0.11"}
    assert store.node("node1").netboot is False
    reply = client.get("/preseed/node1", environ_base=node1)
    assert reply.status_code == 200
    assert store.node("node1").state is State.NEW
    client.put("/api/v1/nodes/node1/netboot", json={"enabled": True}, headers=operator)
    assert client.get("/preseed/node1", environ_base=node1).status_code == 200
    assert store.node("node1").state is State.INSTALLING
