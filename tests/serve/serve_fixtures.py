"""Fixtures for the serve tests: a small inventory, a config, the Flask app (names that
tests/conftest.py also defines carry a serve_ prefix: a conftest fixture would win).

Not a conftest.py: a second module named `conftest` would shadow tests/conftest.py for the
helpers that import it. Test modules import the fixtures they use from here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML
from flask import Flask
from flask.testing import FlaskClient

from provisiond.config import Config
from provisiond.http import create_app
from provisiond.inventory import Inventory, load_inventory
from provisiond.nodes import open_store
from provisiond.store import Store

INVENTORY = LAB_SITE_YAML + """\
nodes:
  - hostname: node1
    mac: 52:54:00:13:00:11
    role: controller
    ip: 10.213.0.11
    disk: {device: vda, size: 40GiB}
  - hostname: node2
    mac: 52-54-00-13-00-12
    role: compute
    ip: 10.213.0.12
    os: rocky9
    firmware: uefi
    disk: {device: vda, size: 40GiB}
  - hostname: node3
    mac: 52:54:00:13:00:13
    role: compute
    ip: 10.213.0.13
    disk: {device: vda, size: 40GiB}
"""

NODE1_MAC = "52:54:00:13:00:11"
NODE1_IP = "10.213.0.11"


def write_inventory(directory: Path, text: str = INVENTORY) -> Path:
    path = directory / "inventory.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def serve_inventory_path(tmp_path: Path) -> Path:
    return write_inventory(tmp_path)


@pytest.fixture
def serve_inventory(serve_inventory_path: Path) -> Inventory:
    return load_inventory(serve_inventory_path)


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    """Small stand-ins for kernels so range tests know every byte (real files, real reads)."""
    directory = tmp_path / "assets"
    directory.mkdir()
    (directory / "linux").write_bytes(bytes(range(256)) * 40)
    (directory / "initrd.gz").write_bytes(b"initrd" * 1000)
    return directory


@pytest.fixture
def config(tmp_path: Path, serve_inventory_path: Path, assets: Path) -> Config:
    base = Config(inventory=serve_inventory_path, state_dir=tmp_path / "state")
    debian = base.assets["debian12"]
    return replace(base, assets={**base.assets, "debian12": replace(
        debian, kernel=assets / "linux", initrd=assets / "initrd.gz", cmdline="console=ttyS0")})


@pytest.fixture
def store(config: Config, serve_inventory: Inventory) -> Store:
    return open_store(config.state_dir, serve_inventory)


@pytest.fixture
def app(config: Config, serve_inventory: Inventory, store: Store) -> Flask:
    return create_app(config, serve_inventory, store, base_url="http://10.213.0.1:8080")


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def operator(config: Config, app: Flask) -> dict[str, str]:
    return {"Authorization": "Bearer " + config.operator_token_file.read_text().strip()}
