"""Image recipes and their cache: content keys, reuse, `image list` / `image rm`, clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from provisiond.cli import main
from provisiond.http.agent import build_zipapp
from provisiond.images import cache as image_cache
from provisiond.images.build import build, build_inputs
from provisiond.images.cache import ImageCache
from provisiond.images.recipes import RecipeError, ramdisk_recipe, root_recipe


def publish(cache: ImageCache, recipe, key: str, data: bytes = b"bytes") -> None:
    staging = cache.dir / f".staging-{recipe.name}-{key}"
    staging.mkdir(parents=True)
    (staging / "root.tar.zst").write_bytes(data)
    image_cache.publish(staging, [staging / "root.tar.zst"], recipe, key, cache, 0.0, {})


def test_keys_follow_content():
    compute, controller = root_recipe("debian12", "compute"), root_recipe("debian12", "controller")
    assert compute.key(b"x") == root_recipe("debian12", "compute").key(b"x")  # stable
    assert compute.key(b"x") != controller.key(b"x")  # role (and its package list)
    assert compute.key(b"x") != compute.key(b"y")  # build script / agent bytes
    assert compute.key() != root_recipe("debian12", "compute", mirror="http://mirror.lab/debian").key()
    assert "glusterfs-server" in compute.packages and "glusterfs-server" in controller.packages
    assert "glusterd.service" not in compute.services  # the agent's manifest starts it
    assert ramdisk_recipe("debian12").name == "ramdisk-debian12"
    assert compute.name == "root-debian12-compute"


def test_build_inputs_hold_the_ramdisk_scripts_but_not_the_agent():
    """The agent comes with the node script at deploy time: changing it rebuilds no image."""
    ramdisk = build_inputs(ramdisk_recipe("debian12"))
    init = (Path(__file__).resolve().parents[2] / "provisiond/images/ramdisk/init").read_bytes()
    assert init in ramdisk
    assert build_zipapp() not in build_inputs(root_recipe("debian12", "compute"))
    assert "provisiond-agent.service" not in root_recipe("debian12", "compute").services


def test_unsupported_os_or_role_is_a_clear_error():
    with pytest.raises(RecipeError, match=r"builds debian12 only, not 'rocky9' \(use the installer method"):
        root_recipe("rocky9", "compute")
    with pytest.raises(RecipeError, match="no root image for role 'storage'"):
        root_recipe("debian12", "storage")


def test_a_cached_build_is_reused_without_building(tmp_path):
    cache = ImageCache(tmp_path)
    recipe = root_recipe("debian12", "compute")
    key = recipe.key(*build_inputs(recipe))
    publish(cache, recipe, key)
    lines: list[str] = []
    artifact, built = build(recipe, cache, lines.append)
    assert not built and artifact.key == key
    assert lines == [f"root-debian12-compute: cached ({key[:12]})"]
    checksum = (artifact.path / "root.tar.zst.sha256").read_text()
    assert checksum == f"{hashlib.sha256(b'bytes').hexdigest()}  root.tar.zst\n"


def test_image_list_and_rm(tmp_path, capsys):
    cache = ImageCache(tmp_path / "cache")
    publish(cache, root_recipe("debian12", "compute"), "a" * 64)
    publish(cache, root_recipe("debian12", "controller"), "b" * 64, b"other")
    assert main(["image", "list", "--cache-dir", str(cache.dir)]) == 0
    out = capsys.readouterr().out
    assert "root-debian12-compute" in out and "aaaaaaaaaaaa" in out and "root-debian12-controller" in out
    assert main(["image", "rm", "--cache-dir", str(cache.dir), "bbbbbb"]) == 0
    assert "removed root-debian12-controller bbbbbbbbbbbb" in capsys.readouterr().out
    assert [a.name for a in cache.artifacts()] == ["root-debian12-compute"]
    assert main(["image", "rm", "--cache-dir", str(cache.dir), "nosuch"]) == 1
    assert "no build named or keyed nosuch" in capsys.readouterr().err
    assert main(["image", "rm", "--cache-dir", str(cache.dir), "root-debian12-compute"]) == 0
    assert main(["image", "list", "--cache-dir", str(cache.dir)]) == 0
    assert "no builds in" in capsys.readouterr().out


def test_image_build_without_roles_or_inventory_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["image", "build", "--cache-dir", str(tmp_path)]) == 1
    assert "name the roles to build (--role compute)" in capsys.readouterr().err


def test_image_prune_keeps_the_newest_builds_of_each_name(tmp_path, capsys):
    cache = ImageCache(tmp_path / "cache")
    compute, controller = root_recipe("debian12", "compute"), root_recipe("debian12", "controller")
    for index, key in enumerate(("a", "b", "c")):  # built one after another: c is the newest
        publish(cache, compute, key * 64)
        meta = cache.dir / compute.name / (key * 64) / "meta.json"
        meta.write_text(meta.read_text().replace('"built_at":', f'"built_at": {1000 + index}, "was":'))
    publish(cache, controller, "d" * 64)
    assert main(["image", "prune", "--keep", "2", "--cache-dir", str(cache.dir)]) == 0
    assert "removed root-debian12-compute aaaaaaaaaaaa" in capsys.readouterr().out
    assert [a.key[0] for a in cache.artifacts()] == ["c", "b", "d"]
    assert not (cache.dir / compute.name / ("a" * 64)).exists()
    assert main(["image", "prune", "--cache-dir", str(cache.dir)]) == 0  # default: keep the newest
    out = capsys.readouterr().out
    assert "removed root-debian12-compute bbbbbbbbbbbb" in out and "removed 1 build(s)" in out
    assert [(a.name, a.key[0]) for a in cache.artifacts()] == [(compute.name, "c"), (controller.name, "d")]
    # The build this code serves (its own key) stays, however old: another checkout sharing
    # the cache may have built newer ones under other keys.
    own = compute.key(*build_inputs(compute))
    publish(cache, compute, own)
    (cache.dir / compute.name / own / "meta.json").write_text(
        (cache.dir / compute.name / own / "meta.json").read_text().replace('"built_at":', '"built_at": 1, "was":'))
    assert main(["image", "prune", "--cache-dir", str(cache.dir)]) == 0
    assert "removed 0 build(s)" in capsys.readouterr().out
    assert cache.served(compute).key == own and cache.lookup(compute.name).key == "c" * 64
    assert main(["image", "prune", "--keep", "0", "--cache-dir", str(cache.dir)]) == 1
    assert "keep at least 1 build per name" in capsys.readouterr().err
    assert len(cache.artifacts()) == 3


def test_a_build_step_that_runs_too_long_is_a_clear_error():
    from provisiond.errors import UserError
    from provisiond.images.build import _run

    with pytest.raises(UserError, match=r"image build: sleep 5 \.\.\. did not finish in 1 s .*nothing was published"):
        _run(["sleep", "5"], print, timeout=1)
