"""vagrant/Vagrantfile is valid for Vagrant with the libvirt provider (Debian's vagrant and
vagrant-libvirt), and `vagrant validate` really checks the provider's settings."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO, require_program


def validate(directory: Path, home: Path) -> subprocess.CompletedProcess[str]:
    vagrant = require_program("vagrant")
    env = {**os.environ, "VAGRANT_HOME": str(home), "VAGRANT_CHECKPOINT_DISABLE": "1"}
    return subprocess.run([vagrant, "validate"], cwd=directory, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_vagrantfile_validates(tmp_path: Path) -> None:
    result = validate(REPO / "vagrant", tmp_path / "vagrant-home")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Vagrantfile validated successfully" in result.stdout


def test_validate_catches_a_wrong_libvirt_setting(tmp_path: Path) -> None:
    copy = tmp_path / "vagrant"
    shutil.copytree(REPO / "vagrant", copy)
    text = (copy / "Vagrantfile").read_text()
    (copy / "Vagrantfile").write_text(text.replace("libvirt.mgmt_attach = false",
                                                   "libvirt.mgmt_attach = false\n        libvirt.no_such_setting = 1"))
    result = validate(copy, tmp_path / "vagrant-home")
    assert result.returncode != 0
    assert "no_such_setting" in result.stdout + result.stderr
