"""The systemd unit (systemd-analyze verify, and its install command) and the
provisiond.toml example that must match docs/serve.md."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import REPO, require_program

from provisiond.config import load_config
from provisiond.systemd_unit import render_unit


def verify(directory: Path, text: str) -> subprocess.CompletedProcess[str]:
    unit = directory / "provisiond.service"
    unit.write_text(text)
    return subprocess.run([require_program("systemd-analyze"), "verify", str(unit)],
                          capture_output=True, text=True, timeout=60)


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    text = render_unit(python=sys.executable)
    result = verify(tmp_path, text)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    for option in ("CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW", "StateDirectory=provisiond",
                   "RuntimeDirectory=provisiond", "ProtectSystem=strict", "NoNewPrivileges=yes"):
        assert option in text
    # The check is real: a misspelt option or a missing program is refused.
    broken = verify(tmp_path, text.replace("ProtectSystem=strict", "ProtectSystm=strict"))
    assert "Unknown key 'ProtectSystm'" in broken.stderr
    missing = verify(tmp_path, render_unit(python="/nonexistent/python3"))
    assert missing.returncode != 0 and "/nonexistent/python3" in missing.stderr


def test_install_command_writes_the_unit(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "provisiond.toml"
    config.parent.mkdir()
    config.write_text(f'[serve]\ninterfaces = ["br-prov"]\ntftp_root = "{tmp_path / "tftp"}"\n')
    units = tmp_path / "units"
    result = subprocess.run([sys.executable, "-m", "provisiond", "--config", str(config),
                             "systemd-unit", "--install", "--unit-dir", str(units)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = (units / "provisiond.service").read_text()
    assert f"ExecStart={sys.executable} -m provisiond --config {config} serve" in text
    assert f"ReadWritePaths=-{tmp_path}" in text and (tmp_path / "tftp").is_dir()
    assert "systemctl daemon-reload" in result.stdout
    absent = subprocess.run([sys.executable, "-m", "provisiond", "--config", str(tmp_path / "no.toml"),
                             "systemd-unit", "--install", "--unit-dir", str(units)],
                            capture_output=True, text=True, timeout=60)
    assert absent.returncode == 1 and "no.toml does not exist: write it first" in absent.stderr


def test_example_config_is_the_documented_one() -> None:
    docs = (REPO / "docs" / "serve.md").read_text()
    block = re.search(r"## provisiond.toml.*?```toml\n(.*?)```", docs, re.S)
    assert block is not None
    example = REPO / "examples" / "provisiond.toml"
    assert tomllib.loads(example.read_text()) == tomllib.loads(block.group(1))
    config = load_config(example)
    assert config.http_port == 8080 and config.tftp_root == Path("/srv/provisiond/tftp")
