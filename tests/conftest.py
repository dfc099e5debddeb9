"""Shared test fixtures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def require_root() -> None:
    """Skip (with the reason) where the capability is truly absent: not root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces / bridges / privileged ports)")


def require_program(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        pytest.skip(f"{name} is not installed (make test installs it from deps/apt/)")
    return path
