"""Preseeds: the partman-auto expert recipe is decoded by the debian-installer's own parser
(partman-auto's decode_recipe) and compared item by item with the storage model; the rest of
the file is read the way debconf-set-selections reads it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import PAPER_COMPUTE_DISK, REPO, SITE_YAML, require_program

from provisiond.inventory import load_inventory
from provisiond.layouts import Layout, plan_layout
from provisiond.render import Renderer, ServerInfo, partman_mb

DECODER = REPO / "tests/tools/decode-recipe.sh"
RECIPES_SH = REPO / ".cache/partman-auto/lib/partman/lib/recipes.sh"

DEBIAN_NODES = """\
nodes:
  - {hostname: compute1, mac: "52:54:00:10:00:11", role: compute, ip: 10.213.0.11, disk: {size: COMPUTE_DISK}}
  - {hostname: controller, mac: "52:54:00:10:00:10", role: controller, ip: 10.213.0.10, disk: {size: 80G}}
  - {hostname: compute-40g, mac: "52:54:00:10:00:21", role: compute, ip: 10.213.0.21, disk: {device: vda, size: 40G}}
  - {hostname: controller-2t, mac: "52:54:00:10:00:22", role: controller, ip: 10.213.0.22, disk: {size: 2T}}
  - {hostname: compute-any, mac: "52:54:00:10:00:23", role: compute, ip: 10.213.0.23}
  - {hostname: controller-any, mac: "52:54:00:10:00:24", role: controller, ip: 10.213.0.24}
  - {hostname: compute-uefi, mac: "52:54:00:10:00:25", role: compute, ip: 10.213.0.25, firmware: uefi,
     disk: {device: nvme0n1, size: 250G}}
  - {hostname: controller-uefi, mac: "52:54:00:10:00:26", role: controller, ip: 10.213.0.26, firmware: uefi,
     disk: {size: 80G}}
""".replace("COMPUTE_DISK", str(PAPER_COMPUTE_DISK))
HOSTS = ["compute1", "controller", "compute-40g", "controller-2t", "compute-any", "controller-any",
         "compute-uefi", "controller-uefi"]


@pytest.fixture(scope="session")
def recipes_sh() -> Path:
    """partman-auto's recipes.sh, fetched from the Debian archive by make test if missing."""
    if not RECIPES_SH.exists():
        subprocess.run([str(REPO / "scripts/fetch-installer-parts.sh")], check=True, timeout=300)
    return RECIPES_SH


@pytest.fixture
def debian(write_inventory):
    return load_inventory(write_inventory(SITE_YAML + DEBIAN_NODES))


def preseed_values(text: str) -> dict[str, str]:
    """Answers as debconf-set-selections reads them: a trailing backslash joins the next line."""
    values: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        while line.endswith("\\"):
            line = line[:-1] + next(lines, "")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.match(r"^\s*(\S+)\s+(\S+)\s+(\S+)(?:\s(.*))?", line)
        assert match, f"not a preseed line: {line!r}"
        owner, question, _type, value = match.groups()
        key = f"{owner} {question}"
        assert key not in values, f"{key} answered twice"
        values[key] = value or ""
    return values


def decode(recipes_sh: Path, tmp_path: Path, recipe: str, label: str = "msdos") -> tuple[str, list[dict]]:
    path = tmp_path / "expert_recipe"
    path.write_text(recipe + "\n")
    result = subprocess.run(
        ["sh", str(DECODER), str(recipes_sh), str(path), label], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    name = lines[0].removeprefix("NAME ")
    items = []
    for line in lines[1:]:
        if not line.strip():
            continue
        minimum, factor, maximum, fs, rest = [*line.split(None, 4), ""][:5]
        options = {key: value.strip() for key, value in re.findall(r"(\$?[a-z_]+)\{([^}]*)\}", rest)}
        items.append({"min": int(minimum), "factor": int(factor), "max": int(maximum), "fs": fs, **options})
    return name, items


def expected_items(layout: Layout) -> list[dict]:
    """What the recipe is meant to say, item by item, straight from the storage model."""
    items = []
    for part in layout.data_partitions:
        size = partman_mb(part.size_mib or part.min_mib)
        item = {"min": size, "factor": size, "max": -1 if part.grow else size}
        if part.kind == "primary":
            item["$primary"] = ""
        if part.fstype == "efi":
            # partman rewrites a file-system word outside its list to ext2; for method{ efi }
            # the word is unused (Debian's own recipes write "free" here too).
            item.update({"fs": "ext2", "method": "efi", "$iflabel": "gpt", "$reusemethod": "", "format": ""})
        elif part.is_pv:
            item.update({"fs": "ext2", "method": "lvm", "vg_name": part.vg})
        else:
            item.update({"fs": part.fstype, "method": "format", "format": "", "use_filesystem": "",
                         "filesystem": part.fstype, "mountpoint": part.mount})
            if part.mount == "/boot":
                item["$bootable"] = ""
        items.append(item)
    for vg in layout.volume_groups:
        for lv in vg.logical_volumes:
            size = partman_mb(lv.size_mib or 4)
            item = {"min": size, "factor": size, "max": -1 if lv.grow else size,
                    "$lvmok": "", "in_vg": vg.name, "lv_name": lv.name, "format": ""}
            if lv.is_swap:
                item.update({"fs": "linux-swap", "method": "swap"})
            else:
                item.update({"fs": lv.fstype, "method": "format", "use_filesystem": "",
                             "filesystem": lv.fstype, "mountpoint": lv.mount})
            items.append(item)
    return items


@pytest.mark.parametrize("host", HOSTS)
def test_recipe_decoded_by_partman_is_the_model(debian, recipes_sh, tmp_path, host):
    node = debian.node(host)
    layout = plan_layout(node.role, node.disk.size_bytes, device=node.disk.device, uefi=node.uefi)
    values = preseed_values(Renderer(debian).preseed(node))
    name, items = decode(recipes_sh, tmp_path, values["d-i partman-auto/expert_recipe"], layout.label)
    assert name == f"provisiond-{node.role}"
    assert items == expected_items(layout)
    # Every volume group of the role is created: each has a PV item naming it.
    assert {item["vg_name"] for item in items if "vg_name" in item} == {vg.name for vg in layout.volume_groups}
    assert values["d-i partman-auto/method"] == "lvm"
    assert values["d-i partman-auto/disk"] == f"/dev/{layout.device}"
    assert values["d-i partman-partitioning/choose_label"] == layout.label


def test_brick_is_xfs_and_nova_volumes_has_no_lv(debian, recipes_sh, tmp_path):
    recipe = preseed_values(Renderer(debian).preseed(debian.node("compute1")))["d-i partman-auto/expert_recipe"]
    _, items = decode(recipes_sh, tmp_path, recipe)
    brick = next(item for item in items if item.get("lv_name") == "lv_gluster")
    assert (brick["fs"], brick["filesystem"], brick["mountpoint"], brick["in_vg"]) == ("xfs", "xfs", "/export/gluster", "vg_gluster")

    recipe = preseed_values(Renderer(debian).preseed(debian.node("controller")))["d-i partman-auto/expert_recipe"]
    _, items = decode(recipes_sh, tmp_path, recipe)
    assert any(item.get("vg_name") == "nova-volumes" for item in items)
    assert not any(item.get("in_vg") == "nova-volumes" for item in items)
    images = next(item for item in items if item.get("lv_name") == "lv_images")
    assert images["mountpoint"] == "/var/lib/glance/images"


def test_the_decoder_is_the_installers_and_catches_what_it_should(recipes_sh, tmp_path):
    """The pitfalls the comparison exists for: partman silently drops a last item without its
    final '.', and rewrites an unknown file system to ext2."""
    good = "x :: 500 500 500 ext4 method{ format } . 1000 1000 1000 xfs method{ format } ."
    assert [item["fs"] for item in decode(recipes_sh, tmp_path, good)[1]] == ["ext4", "xfs"]
    assert len(decode(recipes_sh, tmp_path, good.rstrip(" ."))[1]) == 1
    assert decode(recipes_sh, tmp_path, good.replace("xfs", "XFS"))[1][1]["fs"] == "ext2"


def test_preseed_syntax_accepted_by_debconf(debian, tmp_path):
    checker = require_program("debconf-set-selections")
    for host in HOSTS:
        path = tmp_path / f"{host}.cfg"
        path.write_text(Renderer(debian).preseed(debian.node(host), ServerInfo("http://10.213.0.1:8080", "t0ken")))
        result = subprocess.run([checker, "-c", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and not result.stderr, result.stderr


def test_node_settings(debian):
    node = debian.node("compute1")
    values = preseed_values(Renderer(debian).preseed(node, ServerInfo("http://10.213.0.1:8080", "t0ken")))
    assert values["d-i netcfg/disable_autoconfig"] == "true"
    assert values["d-i netcfg/get_ipaddress"] == "10.213.0.11"
    assert values["d-i netcfg/get_netmask"] == "255.255.255.0"
    assert values["d-i netcfg/get_gateway"] == "10.213.0.1"
    assert values["d-i netcfg/get_nameservers"] == "10.213.0.1"
    assert values["d-i netcfg/get_hostname"] == "compute1"
    assert values["d-i netcfg/get_domain"] == "lab.example"
    assert values["d-i passwd/root-password-crypted"].startswith("$6$NTD9RTgBuEBLAtYO$")
    assert "d-i passwd/root-password" not in values  # never a clear-text password
    assert values["d-i clock-setup/ntp-server"] == "10.213.0.1"
    late = values["d-i preseed/late_command"]
    assert "echo 'server 10.213.0.1 iburst' >> /target/etc/chrony/sources.d/provisiond.sources" in late
    assert "echo 'server ntp.lab.example iburst'" in late
    assert "ssh-ed25519 AAAAC3" in late and "/target/root/.ssh/authorized_keys" in late
    assert "/target/etc/provisiond/node.token" in late
    assert '"event": "install-finished"' in late
    assert '"event": "install-started"' in values["d-i preseed/early_command"]
    assert "http://10.213.0.1:8080/api/v1/nodes/compute1/events" in late


def test_late_command_is_valid_shell(debian):
    values = preseed_values(Renderer(debian).preseed(debian.node("controller"), ServerInfo("http://s:8080", "t")))
    for key in ("d-i preseed/late_command", "d-i preseed/early_command"):
        result = subprocess.run(["sh", "-n", "-c", values[key]], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, (key, result.stderr)


def test_no_secrets_without_a_server(debian):
    text = Renderer(debian).preseed(debian.node("compute1"))
    assert "Authorization" not in text and "node.token" not in text
