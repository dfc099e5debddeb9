"""Property-based fuzzing, bounded budget, of the parsers that hostile input reaches and that
had no fuzz test yet: TFTP option negotiation, the inventory loader (any text, and hostile
values in every site field that reaches a template), the log formatter (every event one
line). (DHCP and TFTP
packets: tests/dhcp/test_dhcp_packet.py, tests/tftp/test_tftp_packet.py; every HTTP route:
schemathesis in tests/serve/test_serve_openapi.py.)"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import yaml
from conftest import NODES_YAML, SITE_YAML
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisiond.inventory import Inventory, InventoryError, load_inventory
from provisiond.logs import KeyValueFormatter
from provisiond.tftp.options import MAX_BLKSIZE, MAX_WINDOWSIZE, negotiate

BUDGET = settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow])
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
OPTION_NAMES = st.sampled_from(["blksize", "timeout", "tsize", "windowsize", "x", ""])


@BUDGET
@given(st.dictionaries(OPTION_NAMES | st.text(max_size=8), st.text(max_size=12), max_size=6),
       st.integers(min_value=0, max_value=2**40))
def test_tftp_negotiation_never_fails_and_answers_only_what_it_understood(
        requested: dict[str, str], size: int) -> None:
    chosen = negotiate(requested, size)
    assert set(chosen.reply) <= set(requested) & {"blksize", "timeout", "tsize", "windowsize"}
    assert all(value.isascii() and value.isdigit() for value in chosen.reply.values())
    assert 8 <= chosen.blksize <= MAX_BLKSIZE and 1 <= chosen.windowsize <= MAX_WINDOWSIZE


@BUDGET
@given(st.text(max_size=400))
def test_inventory_loader_on_any_text_gives_an_inventory_or_a_clear_error(
        tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    try:
        load_inventory(path)
    except InventoryError as exc:
        assert exc.problems and str(path) in str(exc)


FIELDS = ["name", "domain", "timezone", "locale", "keyboard", "ntp", "mirrors",
          "root_password_hash", "ssh_authorized_keys", "os", "install"]


@BUDGET
@given(st.sampled_from(FIELDS), st.text(max_size=60))
def test_hostile_site_values_are_refused_or_carry_no_control_character(
        tmp_path: Path, field: str, value: str) -> None:
    (tmp_path / "bmc.pass").write_text("secret-bmc-password\n")
    site = yaml.safe_load(SITE_YAML)
    site["site"][field] = {"ntp": [value], "ssh_authorized_keys": [value],
                           "mirrors": {"debian12": value}}.get(field, value)
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(site) + NODES_YAML)
    try:
        inventory = load_inventory(path)
    except InventoryError as exc:
        assert exc.problems
        return
    assert isinstance(inventory, Inventory)
    assert not [text for text in strings(inventory.site.model_dump()) if CONTROL.search(text)]


def strings(value: object) -> list[str]:
    """Every string inside a dumped model (keys and values, at any depth)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in strings(key) + strings(item)]
    if isinstance(value, list | tuple):
        return [text for item in value for text in strings(item)]
    return []


@BUDGET
@given(st.text(max_size=80), st.text(max_size=80))
def test_one_log_line_per_event_whatever_the_values(message: str, value: str) -> None:
    logger = logging.getLogger("provisiond.fuzz")
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, (), None,
                               extra={"fields": {"event": "probe", "value": value}})
    line = KeyValueFormatter().format(record)
    assert not CONTROL.search(line)  # one line, no terminal escapes
