"""Inventory schema: every field check, every cross-node check, every problem at once with its line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML, NODES_YAML, SITE_YAML
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisiond.errors import UserError
from provisiond.inventory import InventoryError, load_inventory, normalize_mac, parse_size


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    return [problem.format(path) for problem in caught.value.problems]


def test_valid_inventory_loads(inventory):
    assert [n.hostname for n in inventory.nodes] == ["controller", "compute1", "compute2"]
    controller = inventory.node("controller")
    assert controller.mac == "52:54:00:10:00:10"
    assert controller.os == "debian12"  # site default
    assert inventory.node("compute2").os == "rocky9"  # node override
    assert controller.fqdn == "controller.lab.example"
    assert controller.disk.size_bytes == 80_000_000_000
    assert inventory.node("compute1").disk.size_bytes == 488397168 * 512
    assert inventory.by_mac("52-54-00-10-00-11").hostname == "compute1"
    assert inventory.by_mac("not a mac") is None


def test_bmc_password_file_is_relative_to_the_inventory(inventory, tmp_path):
    bmc = inventory.node("controller").bmc
    assert bmc.password_file == tmp_path / "bmc.pass"
    assert bmc.password() == "secret-bmc-password"
    assert "secret-bmc-password" not in repr(bmc)


def test_bmc_password_from_environment(write_inventory, monkeypatch):
    text = (SITE_YAML + NODES_YAML).replace("password_file: bmc.pass}", "password_env: LAB_BMC_PW}", 1)
    monkeypatch.delenv("LAB_BMC_PW", raising=False)
    inventory = load_inventory(write_inventory(text))
    assert inventory.warnings == ("controller: bmc.password_env LAB_BMC_PW is not set here (power commands need it)",)
    monkeypatch.setenv("LAB_BMC_PW", "from-env")
    assert inventory.node("controller").bmc.password() == "from-env"
    monkeypatch.delenv("LAB_BMC_PW")
    with pytest.raises(UserError, match="LAB_BMC_PW is not set"):
        inventory.node("controller").bmc.password()


@pytest.mark.parametrize(
    "spelling",
    ["52:54:00:AB:cd:0f", "52-54-00-ab-cd-0f", "525400ABCD0F", "5254.00ab.cd0f", "52:54:0:ab:cd:f"],
)
def test_mac_spellings_are_normalised(spelling):
    assert normalize_mac(spelling) == "52:54:00:ab:cd:0f"


@pytest.mark.parametrize("bad", ["52:54:00:ab:cd", "52:54:00:ab:cd:0g", "52:54-00:ab:cd:0f", "", "x" * 17])
def test_malformed_macs_are_refused(bad):
    with pytest.raises(ValueError, match="is not a MAC address"):
        normalize_mac(bad)


def test_unquoted_mac_is_not_read_as_a_base60_number(write_inventory):
    # YAML 1.1 reads 52:54:00:10:00:10 as the integer 41135076010; the loader must not.
    inventory = load_inventory(write_inventory())
    assert inventory.nodes[0].mac == "52:54:00:10:00:10"


@pytest.mark.parametrize(
    ("text", "size"),
    [("80G", 80 * 10**9), ("250GB", 250 * 10**9), ("74.5GiB", int(74.5 * 2**30)),
     ("238475MiB", 238475 * 2**20), ("488397168s", 488397168 * 512), (1000, 1000), ("2T", 2 * 10**12)],
)
def test_disk_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["80Q", "big", "-5G", "0", True])
def test_bad_disk_sizes(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


BROKEN = LAB_SITE_YAML + """\
nodes:
  - hostname: controller
    mac: 52:54:00:10:00:10
    role: controller
    ip: 10.213.0.10
    disk: {device: sda, size: 20G}
    bmc: {address: 127.0.0.1, port: 6230, username: admin, password_file: missing.pass}
  - hostname: compute1
    mac: 52:54:00:10:00:10
    role: storage
    ip: 10.213.1.11
    os: windows
  - hostname: compute1
    mac: 52:54:00:zz:00:12
    role: compute
    ip: 10.213.0.10
  - hostname: compute3
    mac: 52:54:00:10:00:13
    role: compute
    ip: 10.213.0.1
    hostnmae: typo
  - hostname: compute4
    mac: 52:54:00:10:00:14
    role: compute
    ip: 10.213.0.14
    bmc: {address: 127.0.0.1, port: 6230, username: admin, password: hunter2}
"""


def test_every_problem_is_reported_at_once_with_lines(write_inventory):
    path = write_inventory(BROKEN)
    found = problems_of(path)
    expected = [
        (14, "nodes[0].disk.size", "disk too small for the controller layout: it needs at least 25696 MiB"),
        (15, "nodes[0].bmc.password_file", "missing.pass does not exist"),
        (18, "nodes[1].role", "unknown role 'storage' (expected one of: compute, controller)"),
        (20, "nodes[1].os", "unknown os 'windows' (expected one of: debian12, rocky9)"),
        (21, "nodes[2].hostname", "duplicate hostname compute1 (also nodes[1], line 16)"),
        (22, "nodes[2].mac", "'52:54:00:zz:00:12' is not a MAC address"),
        (26, "nodes[3].mac", None),  # must NOT appear: compute3's MAC is fine
        (17, "nodes[1].mac", "duplicate mac 52:54:00:10:00:10 (also nodes[0], line 10)"),
        (19, "nodes[1].ip", "10.213.1.11 is outside the site network 10.213.0.0/24"),
        (24, "nodes[2].ip", "duplicate ip 10.213.0.10 (also nodes[0], line 10)"),
        (28, "nodes[3].ip", "10.213.0.1 is provisiond's own address (site.server) and the gateway (site.gateway)"),
        (29, "nodes[3].hostnmae", "unknown field 'hostnmae' (did you mean 'hostname'?)"),
        (34, "nodes[4].bmc", "clear-text 'password' is not accepted"),
        (34, "nodes[4].bmc", "duplicate bmc 127.0.0.1:6230 (also nodes[0], line 10)"),
    ]
    for line, field, message in expected:
        prefix = f"{path}:{line}: {field}: "
        matching = [p for p in found if p.startswith(prefix)]
        if message is None:
            assert not matching, matching
        else:
            assert any(message in p for p in matching), (prefix, message, found)
    # Problems in one node do not hide problems in others, and they come in file order.
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == sorted(lines)
    # The clear-text password is not echoed back.
    assert not any("hunter2" in p for p in found)


def test_duplicate_mac_ip_and_bmc(write_inventory):
    text = SITE_YAML + NODES_YAML + """\
  - hostname: compute9
    mac: 52-54-00-10-00-11
    role: compute
    ip: 10.213.0.12
    bmc: {address: 127.0.0.1, port: 6231, username: admin, password_file: bmc.pass}
"""
    path = write_inventory(text)
    found = "\n".join(problems_of(path))
    assert "nodes[3].mac: duplicate mac 52:54:00:10:00:11 (also nodes[1], line 20)" in found
    assert "nodes[3].ip: duplicate ip 10.213.0.12 (also nodes[2], line 26)" in found
    assert "nodes[3].bmc: duplicate bmc 127.0.0.1:6231 (also nodes[1], line 20)" in found


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (("network: 10.213.0.0/24", "network: 10.213.0.5/24"), "site.network", "has host bits set; did you mean 10.213.0.0/24?"),
        (("gateway: 10.213.0.1", "gateway: 10.99.0.1"), "site", "gateway 10.99.0.1 is outside the site network"),
        (("domain: lab.example", "domain: lab_example!"), "site.domain", "is not a DNS domain name"),
        (("os: debian12", "os: debian13"), "site.os", "unknown os 'debian13'"),
        (("root_password_hash: $6$", "root_password_hash: plain$6$"), "site.root_password_hash", "not a crypt(3) password hash"),
        (("    - ssh-ed25519", "    - not-a-key"), "site.ssh_authorized_keys", "entry 0 is not an OpenSSH public key line"),
        (("ip: 10.213.0.11", "ip: 10.213.0.300"), "nodes[1].ip", "'10.213.0.300' is not an IPv4 address"),
        (("ip: 10.213.0.11", "ip: 10.213.0.255"), "nodes[1].ip", "is the broadcast address"),
        (("ip: 10.213.0.11", "ip: 192.168.0.11"), "nodes[1].ip", "is outside the site network 10.213.0.0/24"),
        (("hostname: compute1", "hostname: compute1.lab"), "nodes[1].hostname", "is not a valid host name"),
        (("firmware", "firmware"), None, None),
        (("port: 6231", "port: 70000"), "nodes[1].bmc.port", "less than or equal to 65535"),
        (("size: 250G", "size: huge"), "nodes[2].disk.size", "is not a size"),
        (("    role: compute\n    ip: 10.213.0.11", "    ip: 10.213.0.11"), "nodes[1].role", "required field is missing"),
    ],
)
def test_field_errors(write_inventory, change, field, message):
    text = (SITE_YAML + NODES_YAML).replace(*change, 1)
    path = write_inventory(text)
    if field is None:
        load_inventory(path)  # an unchanged inventory loads
        return
    found = problems_of(path)
    assert any(f": {field}: " in p and message in p for p in found), found
    assert all(p.startswith(f"{path}:") for p in found)


def test_clear_text_root_password_is_refused(write_inventory):
    text = SITE_YAML.replace("root_password_hash:", "root_password: hunter2\n  old_hash:") + NODES_YAML
    found = problems_of(write_inventory(text))
    assert any("clear-text 'root_password' is not accepted" in p for p in found)
    assert not any("hunter2" in p for p in found)


def test_unreadable_and_empty_password_files(write_inventory, tmp_path):
    path = write_inventory()
    (tmp_path / "bmc.pass").write_text("")
    assert any("bmc.pass is empty" in p for p in problems_of(path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("site: [unclosed\n", "YAML syntax error"),
        ("- just\n- a list\n", "expected a mapping with 'site' and 'nodes'"),
        ("", "expected a mapping with 'site' and 'nodes'"),
        (SITE_YAML + "nodes: {a: 1}\n", "nodes: must be a list of nodes"),
        (SITE_YAML + "nodes:\n  - just-a-name\n", "each node must be a mapping"),
        (SITE_YAML, "nodes: required list is missing or empty"),
        (NODES_YAML, "site: required section is missing"),
        (SITE_YAML + NODES_YAML + "extra: 1\n", "extra: unknown top-level key"),
        (SITE_YAML.replace("  os: debian12\n", "  os: debian12\n  os: rocky9\n") + NODES_YAML, "duplicate key (first at line 8)"),
    ],
)
def test_structural_errors(write_inventory, text, message):
    found = problems_of(write_inventory(text))
    assert any(message in p for p in found), found


def test_missing_file(tmp_path):
    with pytest.raises(InventoryError, match="file not found"):
        load_inventory(tmp_path / "nope.yaml")


def test_select_nodes(inventory):
    assert [n.hostname for n in inventory.select(role="compute")] == ["compute1", "compute2"]
    assert len(inventory.select(all_nodes=True)) == 3
    with pytest.raises(UserError, match="known nodes: controller, compute1, compute2"):
        inventory.select(["nope"])
    with pytest.raises(UserError, match="no nodes selected"):
        inventory.select()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisiond", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_check_command_ok_and_broken(write_inventory, tmp_path):
    good = run_cli("--inventory", str(write_inventory()), "check")
    assert good.returncode == 0, good.stderr
    assert "OK: site lab, 3 nodes (2 compute, 1 controller)" in good.stdout

    bad = run_cli("--inventory", str(write_inventory(BROKEN, name="broken.yaml")), "check")
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert f"{tmp_path / 'broken.yaml'}: 13 problems" in bad.stderr
    assert bad.stderr.count(str(tmp_path / "broken.yaml") + ":") == 14


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.text(max_size=400))
def test_no_traceback_on_any_input(write_inventory, garbage):
    """Whatever the file holds, loading gives an inventory or an InventoryError, nothing else."""
    path = write_inventory(garbage)
    try:
        load_inventory(path)
    except InventoryError as exc:
        assert exc.problems


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(["hostname", "mac", "role", "ip", "os", "firmware", "disk", "bmc"]),
    value=st.one_of(st.none(), st.integers(), st.text(max_size=30), st.lists(st.integers(), max_size=3),
                    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
)
def test_no_traceback_on_any_field_value(write_inventory, field, value):
    import yaml

    document = yaml.safe_load(SITE_YAML + NODES_YAML)
    document["nodes"][1][field] = value
    path = write_inventory(yaml.safe_dump(document))
    try:
        load_inventory(path)
    except InventoryError as exc:
        assert exc.problems


def test_no_usable_root_password_is_shipped_and_hashes_are_checked(tmp_path: Path,
                                                                  write_inventory) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "inventory.yaml"
    assert "root_password_hash:" not in "\n".join(
        line for line in example.read_text().splitlines() if not line.lstrip().startswith("#"))
    published = "$6$provisiond$6KhYCcDgaCvt2ucy47P9O9gTFjurbch32HEhMRmpUatPuZXsaRtutSYzSv1WqRTQhidPnJnCijc7RevpsX/fF."
    assert published not in SITE_YAML
    current = SITE_YAML.split("root_password_hash: ", 1)[1].split("\n", 1)[0]
    for broken in (current[:-1], current + "x", "$6$salt$tooshort", "$6$" + "a" * 17 + "$" + "b" * 86,
                   "$1$abc$" + "x" * 21, "$2b$1$" + "x" * 53, "$6$ab$" + "!" * 86):
        text = SITE_YAML.replace(current, broken) + NODES_YAML
        with pytest.raises(InventoryError, match=r"not a crypt\(3\) password hash"):
            load_inventory(write_inventory(text))
    md5 = "$1$8salt8ab$" + "Q" * 22
    inventory = load_inventory(write_inventory(SITE_YAML.replace(current, md5) + NODES_YAML))
    assert any("MD5-crypt" in warning for warning in inventory.warnings)
    yescrypt = "$y$j9T$" + "s" * 22 + "$" + "h" * 43
    inventory = load_inventory(write_inventory(SITE_YAML.replace(current, yescrypt) + NODES_YAML))
    assert inventory.site.root_password_hash == yescrypt and not inventory.warnings
