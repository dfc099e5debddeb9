"""The command line as an operator uses it: exit codes, output, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def provisiond(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisiond", *args], capture_output=True, text=True, timeout=120,
        cwd=cwd, env=env, check=False,
    )


def test_render_kickstart_and_preseed(write_inventory):
    inventory = str(write_inventory())
    kickstart = provisiond("--inventory", inventory, "render", "kickstart", "compute1")
    assert kickstart.returncode == 0, kickstart.stderr
    assert "logvol /export/gluster --vgname=vg_gluster --name=lv_gluster --fstype=xfs" in kickstart.stdout
    preseed = provisiond("--inventory", inventory, "render", "preseed", "controller")
    assert preseed.returncode == 0, preseed.stderr
    assert "vg_name{ nova-volumes }" in preseed.stdout


def test_render_unknown_host_and_missing_inventory(write_inventory, tmp_path):
    result = provisiond("--inventory", str(write_inventory()), "render", "kickstart", "nope")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"provisiond: error: 'nope' is not in {tmp_path / 'inventory.yaml'} (known nodes: controller, compute1, compute2)"
    )
    result = provisiond("render", "kickstart", "compute1", cwd=tmp_path / "..")
    assert result.returncode == 1 and "inventory.yaml: file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_default_inventory_is_in_the_working_directory(write_inventory, tmp_path):
    write_inventory()
    result = provisiond("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("inventory.yaml: OK")


def test_layout_command(write_inventory):
    result = provisiond("layout", "--role", "compute", "--disk", "488397168s")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["lv_gluster", "216972", "/export/gluster", "xfs"] in rows
    assert ["sda3", "216974", "vg_gluster", "PV", "(LVM)"] in rows
    too_small = provisiond("layout", "--role", "controller", "--disk", "20G")
    assert too_small.returncode == 1
    assert "disk too small for the controller layout: it needs at least 25696 MiB" in too_small.stderr
    by_host = provisiond("--inventory", str(write_inventory()), "layout", "controller")
    rows = [line.split() for line in by_host.stdout.splitlines()]
    assert ["nova-volumes", "29996", "VG"] in rows and ["free", "29996", "(no", "logical", "volumes)"] in rows


def test_template_override_directory_must_exist(write_inventory, tmp_path):
    result = provisiond("--inventory", str(write_inventory()), "render", "preseed", "compute1",
                        "--templates", str(tmp_path / "nope"))
    assert result.returncode == 1 and "not a directory" in result.stderr


def test_agent_entry_point():
    result = subprocess.run([sys.executable, "-m", "agent", "--version"], capture_output=True, text=True,
                            timeout=60, cwd=REPO, check=False)
    assert result.returncode == 0 and result.stdout.startswith("provisiond-agent ")


def test_templates_ship_in_the_wheel_and_are_found_when_installed(tmp_path, write_inventory):
    """Installed from a wheel (not a checkout), the package still finds its templates and
    the native TFTP lock-step sender that hatch_build.py compiled into it."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(REPO)],
                   check=True, timeout=300, capture_output=True)
    wheel = next(wheels.glob("provisiond-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "provisiond/_data/kickstarts/rocky9.ks.j2" in names
    assert "provisiond/_data/preseeds/partials/partman.cfg.j2" in names
    assert "provisiond/tftp/_sender.so" in names
    assert "-py3-none-any" not in wheel.name  # a platform wheel: it carries compiled code
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = provisiond("--inventory", str(write_inventory()), "render", "kickstart", "compute1",
                        cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    probe = subprocess.run([sys.executable, "-c", "import provisiond.render as r; print(r.builtin_template_dirs()[0])"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=True)
    assert probe.stdout.strip() == str(target / "provisiond/_data/kickstarts")
    probe = subprocess.run([sys.executable, "-c", "import provisiond.tftp.native as n; print(n.load()._name)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=True)
    assert probe.stdout.strip() == str(target / "provisiond/tftp/_sender.so")


# Libraries only some commands need, each tens to hundreds of ms to import (pyroute2 took
# seconds of CPU under load and timed CLI tests out; pyghmi and qemu.qmp about 80 ms through
# the lab modules): none may load to parse a command line.
LAZY_LIBRARIES = ("pyroute2", "flask", "werkzeug", "requests", "urllib3", "waitress", "dns", "pyghmi",
                  "qemu")


def test_the_command_line_parses_without_loading_the_heavy_libraries() -> None:
    probe = ("import sys, runpy\n"
             "sys.argv = ['provisiond', '--help']\n"
             "try:\n    runpy.run_module('provisiond', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout  # the help was printed
    loaded = set(result.stdout.splitlines()[-1].split())
    assert loaded & set(LAZY_LIBRARIES) == set()
    assert "provisiond" in loaded


def test_status_against_an_unreachable_server_still_says_so() -> None:
    """requests is loaded when a command first talks to a server (see above)."""
    result = provisiond("status", "--server", "http://127.0.0.1:9")
    assert result.returncode != 0
    assert "cannot reach provisiond at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
