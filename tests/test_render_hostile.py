"""Hostile inventory values: every value that reaches a generated file is refused by `check`
when it could change that file's structure, and what passes renders into files that parse to
the same structure as with plain values (kickstart through pykickstart, preseed line by line,
manifests as YAML). A value that slips past validation is still refused at rendering."""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pykickstart.parser import KickstartParser
from pykickstart.version import RHEL9, makeVersion

from provisiond.errors import UserError
from provisiond.inventory import Inventory, InventoryError, load_inventory
from provisiond.manifests import ManifestService
from provisiond.render import Renderer, ServerInfo

BASE: dict[str, Any] = {
    "site": {
        "name": "lab", "domain": "lab.example", "network": "10.213.0.0/24",
        "gateway": "10.213.0.1", "server": "10.213.0.1", "dns": ["10.213.0.1"],
        "os": "debian12", "ntp": ["10.213.0.1", "ntp.lab.example"],
        "timezone": "UTC", "locale": "en_US.UTF-8", "keyboard": "us",
        "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5mQ2w1b3Z6 operator@lab"],
        "root_password_hash": "$6$" + "S4lt" * 4 + "$" + "h" * 86,
        "mirrors": {"debian12": "http://deb.debian.org/debian",
                    "rocky9": "https://dl.rockylinux.org/pub/rocky/9/BaseOS/x86_64/os"},
    },
    "nodes": [
        {"hostname": "deb1", "mac": "52:54:00:10:00:11", "role": "compute", "ip": "10.213.0.11",
         "disk": {"device": "sda", "size": "250G"}},
        {"hostname": "rocky1", "mac": "52:54:00:10:00:12", "role": "controller",
         "ip": "10.213.0.12", "os": "rocky9", "disk": {"device": "vda", "size": "80G"}},
    ],
}

INJECTIONS = [
    "x\n", "x\nd-i preseed/late_command string reboot", "x\r\n%pre\nreboot\n%end",
    "x --extra=1", "x\"; reboot; \"", "$(reboot)", "x`id`", "x'y", "x\\y", "x\x1b[2J", "x\x00",
]
# A key's comment is free text, carried quoted (kickstart) or shell-quoted (preseed): only
# what would end the line or the quoting is refused.
KEY_INJECTIONS = ["x\n", "x\r\n%pre\nreboot\n%end", "x\"; reboot; \"", "x\\y", "x\x1b[2J"]
# Where each value lives (a path into BASE) and what the test puts there.
FIELDS: list[tuple[str, ...]] = [
    ("site", "timezone"), ("site", "locale"), ("site", "keyboard"), ("site", "domain"),
    ("site", "ntp", 1), ("site", "mirrors", "debian12"), ("site", "mirrors", "rocky9"),
    ("site", "ssh_authorized_keys", 0), ("nodes", 0, "hostname"),
    ("nodes", 1, "disk", "device"), ("site", "root_password_hash"),
]


def put(data: dict[str, Any], where: tuple[str | int, ...], hostile: str) -> dict[str, Any]:
    """A copy with `hostile` appended to the working value at `where` (as a careless edit or
    a pasted value would: a trailing newline, an extra option, a second line)."""
    data = copy.deepcopy(data)
    target: Any = data
    for part in where[:-1]:
        target = target[part]
    target[where[-1]] = str(target[where[-1]]) + hostile.removeprefix("x")
    return data


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@pytest.mark.parametrize("where", FIELDS, ids=lambda w: ".".join(map(str, w)))
def test_check_refuses_values_that_would_change_a_generated_file(tmp_path: Path,
                                                                 where: tuple[str, ...]) -> None:
    for hostile in KEY_INJECTIONS if "ssh_authorized_keys" in where else INJECTIONS:
        data = put(BASE, where, hostile)
        with pytest.raises(InventoryError) as caught:
            load_inventory(write(tmp_path, data))
        # named by its field, or (a control character) by the line it is on
        assert any(p.field.startswith(str(where[0])) or p.line for p in caught.value.problems)


def render_all(inventory: Inventory) -> dict[str, str]:
    renderer = Renderer(inventory)
    server = ServerInfo("http://10.213.0.1:8080", "t0ken", "ag3nt")
    files = {
        "preseed": renderer.preseed(inventory.node("deb1"), server),
        "kickstart": renderer.kickstart(inventory.node("rocky1"), server),
    }
    manifests = ManifestService(inventory)
    for node in inventory.nodes:
        files[f"manifest-{node.hostname}"] = yaml.safe_dump(
            manifests.manifest(node, "http://10.213.0.1:8080"))
    return files


def preseed_questions(text: str) -> list[tuple[str, str, str]]:
    """(owner, question, type) of every d-i line: the structure of a preseed."""
    questions = []
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        owner, question, kind, *_ = [*line.split(None, 3), "", ""]
        questions.append((owner, question, kind))
    return questions


def kickstart_structure(text: str) -> list[str]:
    """The first word of every line, once pykickstart has parsed the file without error."""
    KickstartParser(makeVersion(RHEL9)).readKickstartFromString(text)
    return [line.split()[0] for line in text.splitlines() if line.strip()]


# The most awkward values that are valid: each must come out exactly, in place.
AWKWARD = {
    ("site", "timezone"): "America/Argentina/ComodRivadavia",
    ("site", "locale"): "sr_RS.UTF-8@latin",
    ("site", "keyboard"): "fr-latin9",
    ("site", "ntp", 1): "a-b.c-d.example",
    ("site", "mirrors", "debian12"): "http://m.example:8080/a%20b/~u/d+e,f=g:h@i/debian",
    ("site", "mirrors", "rocky9"): "https://m.example/x%2Fy/~z/os",
    ("site", "ssh_authorized_keys", 0): "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 it's me; $(not run) `x` & | <>",
}


def test_awkward_valid_values_render_into_files_of_the_same_structure(tmp_path: Path) -> None:
    plain = render_all(load_inventory(write(tmp_path, BASE)))
    data = copy.deepcopy(BASE)
    for where, value in AWKWARD.items():
        target: Any = data
        for part in where[:-1]:
            target = target[part]
        target[where[-1]] = value
    awkward_inventory = load_inventory(write(tmp_path, data))
    awkward = render_all(awkward_inventory)
    assert preseed_questions(awkward["preseed"]) == preseed_questions(plain["preseed"])
    assert "d-i time/zone string America/Argentina/ComodRivadavia\n" in awkward["preseed"]
    assert kickstart_structure(awkward["kickstart"]) == kickstart_structure(plain["kickstart"])
    parser = KickstartParser(makeVersion(RHEL9))
    parser.readKickstartFromString(awkward["kickstart"])
    assert parser.handler.timezone.timezone == "America/Argentina/ComodRivadavia"
    assert parser.handler.lang.lang == "sr_RS.UTF-8@latin"
    assert parser.handler.url.url == AWKWARD[("site", "mirrors", "rocky9")]
    assert [key.key for key in parser.handler.sshkey.dataList()] == [
        AWKWARD[("site", "ssh_authorized_keys", 0)]]
    for name in plain:
        if name.startswith("manifest-"):
            assert yaml.safe_load(awkward[name]).keys() == yaml.safe_load(plain[name]).keys()


def test_a_value_that_slips_past_validation_is_refused_at_rendering(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, BASE))
    site = inventory.site.model_copy(update={"timezone": "UTC\nd-i preseed/late_command string reboot"})
    broken = Inventory(inventory.path, site, inventory.nodes)
    with pytest.raises(UserError, match="control character"):
        Renderer(broken).preseed(broken.node("deb1"))
    with pytest.raises(UserError, match="control character"):
        Renderer(broken).kickstart(broken.node("rocky1"))


def test_alias_bomb_and_recursive_alias_are_clear_errors_at_once(tmp_path: Path) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for number in range(1, 9):
        name, below = chr(ord("a") + number), chr(ord("a") + number - 1)
        levels.append(f"{name}: &{name} [{', '.join([f'*{below}'] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")
    started = time.monotonic()
    with pytest.raises(InventoryError, match="alias bomb"):
        load_inventory(bomb)
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("site: &site {name: lab, again: *site}\nnodes: []\n")
    with pytest.raises(InventoryError, match="recursive alias") as caught:
        load_inventory(recursive)
    assert caught.value.problems[0].line == 1
    assert time.monotonic() - started < 60  # bound, not a timing claim: the old walk never ended


def test_low_findings(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["nodes"][0]["mac"] = 5254001000  # what an unquoted 005254001000 ... reads as
    (tmp_path / "dir.pass").mkdir()
    (tmp_path / "long.pass").write_text("x" * 21 + "\n")
    data["nodes"][1]["bmc"] = {"address": "10.0.0.5", "username": "admin",
                               "password_file": "dir.pass"}
    with pytest.raises(InventoryError) as caught:
        load_inventory(write(tmp_path, data))
    text = str(caught.value)
    assert "read this MAC as the number 5254001000" in text and "quotes" in text
    assert "is a directory" in text
    data["nodes"][1]["bmc"]["password_file"] = "long.pass"
    data["nodes"][0]["mac"] = "52:54:00:10:00:11"
    with pytest.raises(InventoryError, match="IPMI passwords are at most 20 bytes"):
        load_inventory(write(tmp_path, data))
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"site:\n  name: caf\xe9\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert caught.value.problems[0].line == 2 and "not UTF-8" in str(caught.value)
