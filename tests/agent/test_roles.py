"""The pure manifest model: step schema, generation per role, secrets' scopes, barriers."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML, NODES_YAML, SITE_YAML

from provisiond.inventory import load_inventory
from provisiond.manifests import ManifestService, manifest_environment
from provisiond.roles import SECRET_SCOPES, ManifestError, generate_manifest, validate_step
from provisiond.roles.barriers import evaluate_barrier
from provisiond.roles.secrets import mask_secrets, placeholder, resolve_secrets, secret_names

URL = "http://10.213.0.1:8080"

THREE_COMPUTES = LAB_SITE_YAML + """\
  gluster: {volume: vm-store, ping_timeout: 5}
  agent: {layout_check: false}
nodes:
  - {hostname: c1, mac: "52:54:00:00:00:01", role: compute, ip: 10.213.0.21}
  - {hostname: c2, mac: "52:54:00:00:00:02", role: compute, ip: 10.213.0.22}
  - {hostname: c3, mac: "52:54:00:00:00:03", role: compute, ip: 10.213.0.23}
"""


def ids(manifest: dict) -> list[str]:
    return [step["id"] for step in manifest["steps"]]


def test_controller_builds_the_volume_over_every_compute(inventory):
    service = ManifestService(inventory)
    manifest = service.manifest(inventory.node("controller"), URL)
    assert manifest["version"] == 1 and manifest["role"] == "controller" and manifest["os_family"] == "debian"
    assert ids(manifest) == [
        "layout.check", "gluster.hosts", "gluster.packages", "gluster.glusterd", "gluster.wait-bricks",
        "gluster.probe-compute1", "gluster.probe-compute2", "gluster.peers-in-cluster",
        "gluster.volume-create", "gluster.ping-timeout", "gluster.volume-start", "gluster.volume-ready",
        "gluster.mount",
    ]
    steps = {step["id"]: step for step in manifest["steps"]}
    assert steps["gluster.wait-bricks"]["nodes"] == ["compute1", "compute2"]
    # every GlusterFS node's name resolves (DNS, else a line appended to /etc/hosts)
    hosts = steps["gluster.hosts"]
    assert hosts["title"] == "Resolve the GlusterFS nodes' names (controller, compute1, compute2)"
    assert '"10.213.0.12 compute2.lab.example compute2"' in hosts["shell"] and ">> /etc/hosts" in hosts["shell"]
    assert hosts["unless"].startswith(hosts["shell"].split(";")[0]) and "exit 1" in hosts["unless"]
    assert steps["gluster.volume-create"]["argv"] == [
        "gluster", "--mode=script", "volume", "create", "vm-instances", "replica", "2",
        "compute1:/export/gluster/brick", "compute2:/export/gluster/brick",
    ]
    mount = steps["gluster.mount"]
    assert (mount["src"], mount["path"], mount["fstype"]) == ("compute1:/vm-instances", "/var/lib/nova/instances", "glusterfs")
    assert mount["options"] == "defaults,_netdev,backup-volfile-servers=compute2"


def test_compute_holds_a_brick_and_waits_for_the_volume(inventory):
    manifest = ManifestService(inventory).manifest(inventory.node("compute2"), URL)
    assert manifest["os_family"] == "rhel"  # compute2 runs rocky9
    assert ids(manifest) == [
        "layout.check", "gluster.hosts", "gluster.packages", "gluster.glusterd", "gluster.brick-fs",
        "gluster.brick-dir",
        "gluster.brick-ready", "gluster.wait-volume", "gluster.mount",
    ]
    steps = {step["id"]: step for step in manifest["steps"]}
    assert steps["gluster.packages"]["names"] == ["glusterfs-server", "glusterfs-fuse", "xfsprogs"]
    assert steps["gluster.wait-volume"]["nodes"] == ["controller"]
    assert steps["gluster.brick-ready"]["value"] == {"brick": "compute2:/export/gluster/brick"}
    assert steps["gluster.mount"]["src"] == "compute2:/vm-instances"  # its own glusterd first
    assert steps["gluster.mount"]["options"] == "defaults,_netdev,backup-volfile-servers=compute1"


def test_without_a_controller_the_first_compute_builds_with_site_settings(write_inventory):
    inventory = load_inventory(write_inventory(THREE_COMPUTES))
    service = ManifestService(inventory)
    first = service.manifest(inventory.node("c1"), URL)
    assert "layout.check" not in ids(first)
    steps = {step["id"]: step for step in first["steps"]}
    assert steps["gluster.volume-create"]["argv"][4:7] == ["vm-store", "replica", "3"]
    assert steps["gluster.ping-timeout"]["argv"][-1] == "5"
    assert "gluster.probe-c1" not in steps and {"gluster.probe-c2", "gluster.probe-c3"} <= steps.keys()
    assert steps["gluster.wait-bricks"]["nodes"] == ["c1", "c2", "c3"]
    assert ids(first).index("gluster.brick-ready") < ids(first).index("gluster.wait-bricks")
    other = service.manifest(inventory.node("c3"), URL)
    assert "gluster.volume-create" not in ids(other)
    assert {step["id"]: step for step in other["steps"]}["gluster.wait-volume"]["nodes"] == ["c1"]


def test_a_replica_that_does_not_divide_the_bricks_is_refused(write_inventory):
    inventory = load_inventory(write_inventory(THREE_COMPUTES.replace("ping_timeout: 5", "replica: 2")))
    with pytest.raises(Exception, match=r"replica 2 does not fit 3 compute node\(s\)"):
        ManifestService(inventory).manifest(inventory.node("c1"), URL)


def test_a_single_compute_makes_a_plain_volume(write_inventory):
    inventory = load_inventory(write_inventory(SITE_YAML + """\
nodes:
  - {hostname: solo, mac: "52:54:00:00:00:01", role: compute, ip: 10.213.0.21}
"""))
    steps = {s["id"]: s for s in ManifestService(inventory).manifest(inventory.node("solo"), URL)["steps"]}
    assert steps["gluster.volume-create"]["argv"] == [
        "gluster", "--mode=script", "volume", "create", "vm-instances", "solo:/export/gluster/brick"]
    assert "gluster.peers-in-cluster" not in steps and steps["gluster.mount"]["options"] == "defaults,_netdev"


@pytest.mark.parametrize(("raw", "message"), [
    ({"id": "x", "kind": "nope", "title": "t"}, "unknown kind 'nope'"),
    ({"id": "Bad Id", "kind": "file", "title": "t"}, "id 'Bad Id' must be"),
    ({"id": "x", "kind": "file", "title": "t", "path": "/a"}, "content is required"),
    ({"id": "x", "kind": "file", "title": "t", "path": "rel", "content": ""}, "must be an absolute path"),
    ({"id": "x", "kind": "file", "title": "t", "path": "/a", "content": "", "mode": "rw"}, "must be octal"),
    ({"id": "x", "kind": "command", "title": "t"}, "exactly one of argv"),
    ({"id": "x", "kind": "command", "title": "t", "argv": ["a"], "shell": "b"}, "exactly one of argv"),
    ({"id": "x", "kind": "command", "title": "t", "argv": "ls"}, "argv must be a list"),
    ({"id": "x", "kind": "barrier", "title": "t", "fact": "f", "nodes": []}, "nodes must be a non-empty list"),
    ({"id": "x", "kind": "service", "title": "t", "name": "s", "state": "on"}, "state must be one of started, stopped"),
    ({"id": "x", "kind": "service", "title": "t", "name": "s", "bogus": 1}, "unknown field 'bogus'"),
    ({"id": "x", "kind": "packages", "title": " "}, "title is missing"),
    ({"id": "x", "kind": "report", "title": "t"}, "fact is required"),
    ({"id": "x", "kind": "mount", "title": "t", "src": "a", "path": "/m", "fstype": "xfs", "check_writable": "yes"},
     "check_writable must be true or false"),
])
def test_bad_steps_are_refused_naming_step_and_field(raw, message):
    with pytest.raises(ManifestError, match=message):
        validate_step(raw, "test")


def test_defaults_are_filled_in():
    step = validate_step({"id": "c", "kind": "command", "title": "t", "shell": "true"})
    assert (step["timeout"], step["retries"], step["creates"], step["unless"], step["changes"]) == (600, 0, None, None, True)


def test_an_operator_template_overrides_a_part_by_name(tmp_path: Path, inventory):
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "layout.yaml.j2").write_text(
        "- {id: site.motd, kind: file, title: Site banner, path: /etc/motd, content: \"{{ site.name }}\\n\"}\n")
    manifest = ManifestService(inventory, [tmp_path]).manifest(inventory.node("compute1"), URL)
    assert manifest["steps"][0] == {"id": "site.motd", "kind": "file", "title": "Site banner", "path": "/etc/motd",
                                    "content": "lab\n", "state": "file", "mode": None, "owner": None, "group": None}


def test_a_broken_template_names_the_file_and_line(tmp_path: Path, inventory):
    (tmp_path / "layout.yaml.j2").write_text("- id: x\n  kind: file\n  title: {{ oops(\n")
    with pytest.raises(Exception, match=r"layout.yaml.j2:3"):
        ManifestService(inventory, [tmp_path]).manifest(inventory.node("compute1"), URL)
    (tmp_path / "layout.yaml.j2").write_text("- id: a\n  kind: report\n  title: t\n  fact: f\n" * 2)
    with pytest.raises(Exception, match=r"step 2: id 'a' is used twice \(also step 1\)"):
        ManifestService(inventory, [tmp_path]).manifest(inventory.node("compute1"), URL)


def test_secrets_stay_in_their_role_and_are_masked(tmp_path: Path, inventory, monkeypatch):
    monkeypatch.setitem(SECRET_SCOPES, "db-root", frozenset({"controller"}))
    (tmp_path / "layout.yaml.j2").write_text(
        "- {id: db.conf, kind: ini, title: DB URL, path: /etc/x.conf, section: database, option: connection,"
        " value: \"mysql://root:{{ secret('db-root') }}@controller/x\"}\n")
    env = manifest_environment([tmp_path])
    controller = generate_manifest(env, inventory, inventory.node("controller"), URL).as_json()
    assert secret_names(controller) == {"db-root"}
    assert controller["steps"][0]["value"] == "mysql://root:${secret:db-root}@controller/x"
    assert mask_secrets(controller)["steps"][0]["value"] == "mysql://root:********@controller/x"
    assert resolve_secrets(controller, {"db-root": "s3cret"})["steps"][0]["value"] == "mysql://root:s3cret@controller/x"
    with pytest.raises(ManifestError, match=r"secret\(s\) db-root may not be given to a compute node"):
        generate_manifest(env, inventory, inventory.node("compute1"), URL)
    with pytest.raises(ValueError, match="secret name"):
        placeholder("Not OK")


def test_barrier_met_waiting_failed():
    waiting = evaluate_barrier("brick", ["a", "b", "c"], ["a"], {})
    assert (waiting.state, waiting.missing) == ("waiting", ("b", "c"))
    assert waiting.message == "waiting for brick from b, c"
    assert evaluate_barrier("brick", ["a", "b"], ["b", "a", "z"], {}).state == "met"
    dead = evaluate_barrier("brick", ["a", "b", "c"], ["a"], {"c": "step 2 of 6 gluster.glusterd failed: boom"})
    assert dead.state == "failed" and dead.failed == {"c": "step 2 of 6 gluster.glusterd failed: boom"}
    assert "c failed: step 2 of 6 gluster.glusterd failed: boom" in dead.message
    # A node that reported before it failed still counts: its brick is there.
    assert evaluate_barrier("brick", ["a"], ["a"], {"a": "later step"}).state == "met"


def test_manifests_for_a_whole_site_are_pure_and_repeatable(write_inventory):
    inventory = load_inventory(write_inventory(SITE_YAML + NODES_YAML))
    service = ManifestService(inventory)
    first = [service.manifest(node, URL) for node in inventory.nodes]
    assert first == [service.manifest(node, URL) for node in inventory.nodes]
