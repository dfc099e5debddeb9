"""The deploy ramdisk's side of the HTTP service: its iPXE script, its settings (served only
to the node), the layout and node scripts and the image (the node's token), phase reports
(a failed phase fails the node with the phase and output), with real artifact files in a
cache laid out by the builder's own publishing code."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML
from flask.testing import FlaskClient

from provisiond import nodes
from provisiond.config import Config
from provisiond.doctor.checks import Status
from provisiond.doctor.run import DoctorOptions, run_doctor
from provisiond.http import create_app
from provisiond.images import cache as image_cache
from provisiond.images.build import build_inputs
from provisiond.images.cache import ImageCache
from provisiond.images.recipes import ramdisk_recipe, root_recipe
from provisiond.inventory import InventoryError, load_inventory
from provisiond.lifecycle import State

INVENTORY = LAB_SITE_YAML + """\
  install: image
nodes:
  - {hostname: img1, mac: "52:54:00:16:00:11", role: compute, ip: 10.213.0.11, disk: {device: vda, size: 40GiB}}
  - {hostname: img2, mac: "52:54:00:16:00:12", role: compute, ip: 10.213.0.12, firmware: uefi,
     disk: {device: vda}}
  - {hostname: inst1, mac: "52:54:00:16:00:13", role: compute, ip: 10.213.0.13, install: installer,
     disk: {device: vda, size: 40GiB}}
  - {hostname: ctl1, mac: "52:54:00:16:00:14", role: controller, ip: 10.213.0.14, disk: {device: vda, size: 40GiB}}
"""
IMG1 = {"REMOTE_ADDR": "10.213.0.11"}
IMG2 = {"REMOTE_ADDR": "10.213.0.12"}
IMAGE_BYTES = b"not really zstd, but real bytes with a real checksum" * 100


def publish(cache: ImageCache, recipe, files: dict[str, bytes], key: str | None = None) -> None:
    """A build of `recipe` in the cache, by default under the key this code gives it."""
    key = key or recipe.key(*build_inputs(recipe))
    staging = cache.dir / f".staging-{recipe.name}-{key}"
    staging.mkdir(parents=True)
    paths = []
    for name, data in files.items():
        (staging / name).write_bytes(data)
        paths.append(staging / name)
    image_cache.publish(staging, paths, recipe, key, cache, 0.0, {})


@pytest.fixture
def env(tmp_path: Path):
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    inventory = load_inventory(tmp_path / "inventory.yaml")
    config = replace(Config(inventory=tmp_path / "inventory.yaml", state_dir=tmp_path / "state"),
                     image_cache=tmp_path / "cache")
    config = replace(config, assets={**config.assets, "debian12": replace(config.assets["debian12"],
                                                                           cmdline="console=ttyS0")})
    cache = ImageCache(config.image_cache)
    publish(cache, ramdisk_recipe("debian12"), {"vmlinuz": b"kernel" * 10, "initrd.img": b"initrd" * 10})
    publish(cache, root_recipe("debian12", "compute"), {"root.tar.zst": IMAGE_BYTES})
    store = nodes.open_store(config.state_dir, inventory)
    app = create_app(config, inventory, store, base_url="http://10.213.0.1:8080")
    operator = {"Authorization": "Bearer " + config.operator_token_file.read_text().strip()}
    client = app.test_client()
    client.boot_service = app.extensions["provisiond"].boot  # type: ignore[attr-defined]
    return client, store, operator, cache


def netboot_on(client: FlaskClient, operator: dict, host: str) -> None:
    assert client.put(f"/api/v1/nodes/{host}/netboot", json={"enabled": True}, headers=operator).status_code == 200


def settings(client: FlaskClient, environ: dict) -> dict[str, str]:
    reply = client.get("/deploy/img1/env", environ_base=environ)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return dict(shlex.split(line)[0].split("=", 1) for line in reply.get_data(as_text=True).splitlines())


def test_image_node_boots_the_deploy_ramdisk(env):
    client, store, operator, _ = env
    netboot_on(client, operator, "img1")
    script = client.get("/boot/52:54:00:16:00:11.ipxe").get_data(as_text=True)
    assert ("kernel http://10.213.0.1:8080/images/ramdisk/debian12/vmlinuz initrd=initrd.img "
            "provisiond.url=http://10.213.0.1:8080 provisiond.host=img1 provisiond.mac=52:54:00:16:00:11 "
            "console=ttyS0") in script
    assert "initrd http://10.213.0.1:8080/images/ramdisk/debian12/initrd.img" in script
    assert store.current_token("img1") not in script  # the token never rides on a command line
    assert store.node("img1").state is State.PXE
    netboot_on(client, operator, "inst1")
    assert "preseed/inst1" in client.get("/boot/52:54:00:16:00:13.ipxe").get_data(as_text=True)
    assert client.get("/images/ramdisk/debian12/vmlinuz").data == b"kernel" * 10
    missing = client.get("/images/ramdisk/debian12/other")
    assert missing.status_code == 404 and b"provisiond image build" in missing.data
    # pxelinux / GRUB fetch the same files over TFTP by the same names.
    served = client.boot_service.tftp_responder("images/ramdisk/debian12/initrd.img", "10.213.0.11")
    assert isinstance(served, Path) and served.read_bytes() == b"initrd" * 10
    assert client.boot_service.tftp_responder("images/ramdisk/debian12/nosuch", "10.213.0.11") is None
    spec = client.boot_service.spec(client.boot_service.inventory.node("img1"))
    assert (spec.method, spec.kernel.tftp, spec.initrd.tftp) == (
        "image", "images/ramdisk/debian12/vmlinuz", "images/ramdisk/debian12/initrd.img")
    assert spec.answer_url == "http://10.213.0.1:8080/deploy/img1/env"


def test_settings_only_for_the_node_and_mark_installing(env):
    client, store, operator, _ = env
    settings(client, IMG1)
    assert store.node("img1").state is State.NEW  # netboot off: a fetch moves nothing
    netboot_on(client, operator, "img1")
    other = client.get("/deploy/img1/env", environ_base=IMG2)
    assert other.status_code == 403 and b"served only to that node" in other.data
    values = settings(client, IMG1)
    assert values["PROVISIOND_TOKEN"] == store.current_token("img1")
    assert values["IMAGE_SHA256"] == hashlib.sha256(IMAGE_BYTES).hexdigest()
    assert values["IMAGE_BYTES"] == str(len(IMAGE_BYTES))
    assert values["IMAGE_URL"] == "http://10.213.0.1:8080/deploy/img1/root.tar.zst"
    assert (values["DISK"], values["FIRMWARE"]) == ("/dev/vda", "bios")
    assert store.node("img1").state is State.INSTALLING
    assert client.get("/deploy/inst1/env", environ_base={"REMOTE_ADDR": "10.213.0.13"}).status_code == 404


def test_no_root_image_fails_the_node_with_the_command_to_run(env):
    client, store, operator, _ = env
    netboot_on(client, operator, "ctl1")  # installing now: the failure is the install's
    reply = client.get("/deploy/ctl1/env", environ_base={"REMOTE_ADDR": "10.213.0.14"})
    assert reply.status_code == 503
    record = store.node("ctl1")
    assert record.state is State.FAILED
    assert "provisiond image build --role controller" in record.reason


def test_scripts_and_image_need_the_nodes_token(env):
    client, store, _, _ = env
    token = {"Authorization": "Bearer " + store.current_token("img1")}
    wrong = {"Authorization": "Bearer " + store.current_token("img2")}
    for path in ("/deploy/img1/layout.sh", "/deploy/img1/node.sh", "/deploy/img1/root.tar.zst"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=wrong).status_code == 403
    layout = client.get("/deploy/img1/layout.sh?disk_bytes=42949672960", headers=token).get_data(as_text=True)
    assert 'DISK=${DISK:-/dev/vda}' in layout and "vg_gluster" in layout
    node = client.get("/deploy/img1/node.sh", headers=token).get_data(as_text=True)
    assert store.current_token("img1") in node and "grub-install --target=i386-pc" in node
    image = client.get("/deploy/img1/root.tar.zst", headers=token)
    assert image.status_code == 200 and image.data == IMAGE_BYTES
    part = client.get("/deploy/img1/root.tar.zst", headers={**token, "Range": "bytes=0-9"})
    assert part.status_code == 206 and part.data == IMAGE_BYTES[:10]


def test_layout_for_a_disk_of_unknown_size_and_a_too_small_disk(env):
    client, store, _, _ = env
    token = {"Authorization": "Bearer " + store.current_token("img2")}
    text = client.get("/deploy/img2/layout.sh?disk_bytes=32212254720", headers=token).get_data(as_text=True)
    assert "mklabel gpt" in text and "(30720 MiB)" in text
    assert client.get("/deploy/img2/layout.sh?disk_bytes=many", headers=token).status_code == 400
    small = client.get("/deploy/img2/layout.sh?disk_bytes=10000000000", headers=token)
    assert small.status_code == 409
    assert store.node("img2").state is State.FAILED
    assert "disk too small for the compute layout" in store.node("img2").reason
    token1 = {"Authorization": "Bearer " + store.current_token("img1")}
    assert client.get("/deploy/img1/layout.sh?disk_bytes=1000", headers=token1).status_code == 409
    assert "less than the inventory's disk.size" in store.node("img1").reason


def test_phase_reports_are_events_and_a_failure_fails_the_node(env):
    client, store, _, _ = env
    settings(client, IMG1)
    token = store.current_token("img1")
    auth = {"Authorization": f"Bearer {token}"}
    reply = client.post("/deploy/img1/report?phase=layout&status=done&uptime=12.5", headers=auth, data="ok\n")
    assert reply.status_code == 200
    event = [e for e in store.events(hostname="img1") if e.kind == "deploy:layout"][-1]
    assert event.detail["status"] == "done" and event.detail["uptime"] == 12.5
    assert client.post("/deploy/img1/report?phase=layout&status=maybe", headers=auth).status_code == 400
    assert client.post("/deploy/img1/report?phase=layout&status=done").status_code == 401
    output = f"curl -H 'Bearer {token}'\nimage checksum mismatch: got sha256 abc; nothing was written to the disk\n"
    client.post("/deploy/img1/report?phase=image-fetch&status=failed", headers=auth, data=output)
    record = store.node("img1")
    assert record.state is State.FAILED
    assert record.reason == ("deploy phase image-fetch failed: image checksum mismatch: got sha256 abc; "
                             "nothing was written to the disk")
    failed = [e for e in store.events(hostname="img1") if e.kind == "state:failed"][-1]
    assert failed.detail["phase"] == "image-fetch"
    assert token not in failed.detail["output"] and "<node token>" in failed.detail["output"]


def test_node_script_is_valid_shell_and_writes_the_identity(env, tmp_path):
    client, store, _, _ = env
    token = store.current_token("img1")
    text = client.get("/deploy/img1/node.sh", headers={"Authorization": f"Bearer {token}"}).get_data(as_text=True)
    assert subprocess.run(["sh", "-n", "-c", text], timeout=10).returncode == 0
    target = tmp_path / "target"
    target.mkdir()
    script = tmp_path / "node.sh"
    script.write_text(text)  # LAB_SITE_YAML has no root password hash: no chroot needed
    result = subprocess.run(["sh", str(script), "identity"], env={"TARGET": str(target), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (target / "etc/hostname").read_text() == "img1\n"
    network = (target / "etc/systemd/network/10-provisiond.network").read_text()
    assert "MACAddress=52:54:00:16:00:11" in network and "Address=10.213.0.11/24" in network
    assert "Gateway=10.213.0.1" in network
    assert (target / "etc/provisiond/node.token").read_text() == token + "\n"
    assert (target / "etc/provisiond/node.token").stat().st_mode & 0o777 == 0o600
    assert (target / "etc/provisiond/agent.conf").read_text() == "server_url=http://10.213.0.1:8080\nhostname=img1\n"
    credential = (target / "etc/provisiond/agent.credential")
    assert credential.read_text() == store.agent_credential("img1") + "\n"
    assert credential.stat().st_mode & 0o777 == 0o600
    assert "10.213.0.11\timg1.lab.example\timg1" in (target / "etc/hosts").read_text()
    assert (target / "etc/provisiond").stat().st_mode & 0o777 == 0o700
    # The agent comes with the node script (not baked into the image): the bytes served at /agent/.
    pyz = target / "usr/local/lib/provisiond-agent/provisiond-agent.pyz"
    assert pyz.read_bytes() == client.get("/agent/provisiond-agent.pyz").data
    assert (target / "etc/systemd/system/provisiond-agent.service").read_text() == \
        client.get("/agent/provisiond-agent.service").get_data(as_text=True)
    wants = target / "etc/systemd/system/multi-user.target.wants/provisiond-agent.service"
    assert os.readlink(wants) == "/etc/systemd/system/provisiond-agent.service"
    assert (target / "var/lib/provisiond-agent").stat().st_mode & 0o777 == 0o700
    usage = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=10)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_uefi_node_gets_grub_on_the_esp_with_the_removable_fallback(env):
    client, store, _, _ = env
    text = client.get("/deploy/img2/node.sh", headers={"Authorization": "Bearer " + store.current_token("img2")})
    body = text.get_data(as_text=True)
    assert "grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian" in body
    assert "--removable --no-nvram" in body and "i386-pc" not in body


def test_image_method_is_debian_only(tmp_path):
    (tmp_path / "inventory.yaml").write_text(INVENTORY + """\
  - {hostname: rocky1, mac: "52:54:00:16:00:19", role: compute, ip: 10.213.0.19, os: rocky9}
""")
    with pytest.raises(InventoryError, match=r"install: the image method installs debian12 only, not rocky9"):
        load_inventory(tmp_path / "inventory.yaml")
    (tmp_path / "inventory.yaml").write_text(INVENTORY.replace("install: installer", "install: floppy"))
    with pytest.raises(InventoryError, match="install"):
        load_inventory(tmp_path / "inventory.yaml")


def test_only_the_build_with_this_codes_key_is_served(env):
    """A newer build of the same name by other code sharing the cache (another checkout, an
    older or newer provisiond) is neither served nor offered: its bytes are not ours."""
    client, store, _, cache = env
    publish(cache, ramdisk_recipe("debian12"), {"vmlinuz": b"other kernel", "initrd.img": b"other"}, key="f" * 64)
    publish(cache, root_recipe("debian12", "compute"), {"root.tar.zst": b"other image"}, key="e" * 64)
    assert cache.lookup("root-debian12-compute").key == "e" * 64  # the newest ...
    assert client.get("/images/ramdisk/debian12/vmlinuz").data == b"kernel" * 10  # ... is not served
    served = client.boot_service.tftp_responder("images/ramdisk/debian12/initrd.img", "10.213.0.11")
    assert isinstance(served, Path) and served.read_bytes() == b"initrd" * 10
    values = settings(client, IMG1)
    assert values["IMAGE_SHA256"] == hashlib.sha256(IMAGE_BYTES).hexdigest()
    token = {"Authorization": "Bearer " + store.current_token("img1")}
    assert client.get("/deploy/img1/root.tar.zst", headers=token).data == IMAGE_BYTES
    cache.remove("root-debian12-compute")
    publish(cache, root_recipe("debian12", "compute"), {"root.tar.zst": b"other image"}, key="e" * 64)
    reply = client.get("/deploy/img1/env", environ_base=IMG1)
    assert reply.status_code == 503 and b"provisiond image build --role compute" in reply.data


def test_doctor_counts_only_the_builds_this_code_serves(env, tmp_path):
    """doctor agrees with serve: a build of the name by other code (its key) is not this one's."""
    cache = env[3]
    publish(cache, root_recipe("debian12", "controller"), {"root.tar.zst": b"other image"}, key="d" * 64)
    config = replace(Config(inventory=tmp_path / "inventory.yaml", state_dir=tmp_path / "state"),
                     image_cache=cache.dir)
    report = run_doctor(config, DoctorOptions(skip=frozenset({"port", "bmc", "dns", "answers"})))
    images = {r.subject: r for r in report.results if r.check == "assets" and r.subject.startswith(("root-", "ram"))}
    assert images["ramdisk-debian12"].status is Status.OK
    assert images["root-debian12-compute"].status is Status.OK
    controller = images["root-debian12-controller"]
    assert controller.status is Status.FAIL and controller.fix == "run `provisiond image build`"
    assert "only by other code" in controller.message and "needed by ctl1" in controller.message
