"""The pure parts: record sets wanted, the plan against a zone's contents, update messages,
the TSIG key file, the inventory's dns_update section."""

from __future__ import annotations

import textwrap
from ipaddress import IPv4Address, IPv4Network

import dns.tsig
import pytest
from conftest import LAB_SITE_YAML

from provisiond.dns.records import Change, desired, marker, plan, update_message
from provisiond.dns.settings import KeyFileError, default_reverse_zone, parse_key_file
from provisiond.inventory import InventoryError, load_inventory

ZONE, REVERSE = "lab.example", "0.213.10.in-addr.arpa"
MARK = marker("lab")
SECRET = "dGhpcy1pcy1hLXRlc3Qtc2VjcmV0LW9mLTMyLWJ5dGVzIQ=="


def wanted(*hosts: tuple[str, str]):
    return desired(((f"{h}.{ZONE}", IPv4Address(ip)) for h, ip in hosts), [ZONE], [REVERSE])


def test_wanted_records_and_a_plan_from_an_empty_zone():
    the_plan = plan(wanted(("node1", "10.213.0.11")), {}, "lab")
    assert [c.describe() for c in the_plan.changes] == [
        "add node1.lab.example A 10.213.0.11", "add 11.0.213.10.in-addr.arpa PTR node1.lab.example."]


def test_in_sync_plans_nothing_and_moves_and_removals_are_planned():
    zone = {ZONE: {"node1.lab.example": {"A": frozenset({"10.213.0.11"}), "TXT": frozenset({MARK})},
                   "gone.lab.example": {"A": frozenset({"10.213.0.9"}), "TXT": frozenset({MARK})},
                   "ns1.lab.example": {"A": frozenset({"10.213.0.1"})}},
            REVERSE: {"11.0.213.10.in-addr.arpa": {"PTR": frozenset({"node1.lab.example."}),
                                                   "TXT": frozenset({MARK})}}}
    assert [c.describe() for c in plan(wanted(("node1", "10.213.0.11"), ("gone", "10.213.0.9")), zone, "lab").changes] == [
        "add 9.0.213.10.in-addr.arpa PTR gone.lab.example."]
    changes = plan(wanted(("node1", "10.213.0.12")), zone, "lab").changes
    assert [c.describe() for c in changes] == [
        "update node1.lab.example A 10.213.0.11 -> 10.213.0.12",
        "add 12.0.213.10.in-addr.arpa PTR node1.lab.example.",
        "remove 11.0.213.10.in-addr.arpa PTR node1.lab.example.",
        "remove gone.lab.example A 10.213.0.9"]  # ns1 (no marker) is never touched


def test_another_sites_names_and_unmarked_names_are_left_alone():
    zone = {ZONE: {"node1.lab.example": {"A": frozenset({"10.213.0.50"})},
                   "other.lab.example": {"A": frozenset({"10.213.0.7"}), "TXT": frozenset({marker("b")})}}}
    result = plan(wanted(("node1", "10.213.0.11")), zone, "lab")
    assert result.conflicts == ("node1.lab.example exists without provisiond's marker (A records); left alone",)
    assert [c.name for c in result.changes] == ["11.0.213.10.in-addr.arpa"]


def test_nodes_outside_the_zones_are_problems_not_records():
    result = desired([("node1.other.example", IPv4Address("192.0.2.5"))], [ZONE], [REVERSE])
    assert result.record_sets == ()
    assert result.problems == ("node1.other.example is outside the zone lab.example (no A record)",
                               "192.0.2.5 is outside the reverse zones 0.213.10.in-addr.arpa (no PTR record for node1.other.example)")


def test_update_messages_carry_prerequisites():
    key = dns.tsig.Key("k", SECRET, "hmac-sha256")
    add = update_message(Change(ZONE, "node1.lab.example", "A", (), ("10.213.0.11",)), "lab", 300, key)
    text = add.to_text()
    assert ";PREREQ\nnode1.lab.example. NONE ANY\n" in text  # prerequisite: the name is not in use
    assert 'node1.lab.example. 300 IN TXT "heritage=provisiond,site=lab"' in text
    move = update_message(Change(ZONE, "node1.lab.example", "A", ("10.213.0.11",), ("10.213.0.12",), owned=True),
                          "lab", 300, key).to_text()
    assert "node1.lab.example. 0 IN A 10.213.0.11" in move  # prerequisite: the old value held
    assert "node1.lab.example. ANY A" in move and "node1.lab.example. 300 IN A 10.213.0.12" in move


def test_a_marked_name_without_its_record_gets_it_back():
    """After a half-done add (marker there, A missing) the add requires the marker, not an unused name."""
    zone = {ZONE: {"node1.lab.example": {"TXT": frozenset({MARK})}}}
    (change,) = [c for c in plan(wanted(("node1", "10.213.0.11")), zone, "lab").changes if c.zone == ZONE]
    assert change.kind == "add" and change.owned
    text = update_message(change, "lab", 300, dns.tsig.Key("k", SECRET, "hmac-sha256")).to_text()
    assert 'node1.lab.example. 0 IN TXT "heritage=provisiond,site=lab"' in text.split(";UPDATE")[0]
    assert "NONE ANY" not in text


def test_reverse_zone_defaults_follow_the_octet_boundary():
    assert default_reverse_zone(IPv4Network("10.213.0.0/24")) == "0.213.10.in-addr.arpa"
    assert default_reverse_zone(IPv4Network("10.213.0.0/22")) == "213.10.in-addr.arpa"
    assert default_reverse_zone(IPv4Network("10.0.0.0/8")) == "10.in-addr.arpa"


def test_key_file_is_parsed_and_its_errors_never_quote_the_secret():
    key = parse_key_file(f'key "prov-key" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n')
    assert (key.name, key.algorithm) == ("prov-key", "hmac-sha256")
    assert SECRET not in repr(key)
    for text, expected in [("", "found no"), (f'key "k" {{ secret "{SECRET}"; }};', "algorithm missing"),
                           (f'key "k" {{ algorithm hmac-foo; secret "{SECRET}"; }};', "unknown"),
                           ('key "k" { algorithm hmac-sha256; secret "not base64!"; };', "not base64")]:
        with pytest.raises(KeyFileError, match=expected) as info:
            parse_key_file(text)
        assert SECRET not in str(info.value)


def test_inventory_checks_the_key_file_with_file_and_line(tmp_path):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(LAB_SITE_YAML + textwrap.dedent("""\
          dns_update:
            server: 127.0.0.1
            key_file: tsig.key
            reverse_zones: [lab.example]
        nodes:
          - {hostname: node1, mac: '52:54:00:10:00:11', role: compute, ip: 10.213.0.11}
        """))
    dns_update = LAB_SITE_YAML.count("\n") + 1  # its line in the file
    with pytest.raises(InventoryError) as info:
        load_inventory(inventory)
    assert (f"inventory.yaml:{dns_update + 3}: site.dns_update.reverse_zones: 'lab.example' is not a "
            "reverse zone") in str(info.value)
    text = inventory.read_text().replace("    reverse_zones: [lab.example]\n", "")
    inventory.write_text(text)
    with pytest.raises(InventoryError) as info:
        load_inventory(inventory)
    assert (f"inventory.yaml:{dns_update + 2}: site.dns_update.key_file: {tmp_path}/tsig.key: No such file "
            "or directory") in str(info.value)
    (tmp_path / "tsig.key").write_text(f'key "k" {{ algorithm hmac-sha256; secret "{SECRET}"; }};\n')
    site = load_inventory(inventory).site
    assert site.dns_update is not None and site.dns_update.key_file == tmp_path / "tsig.key"
