"""Where `serve` and its HTTP child keep their shared counters (no prometheus_client import
here: the directory must be set before that library is first imported)."""

from __future__ import annotations

import os
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def shared_dir(state_dir: Path) -> Path:
    """systemd's RuntimeDirectory (tmpfs, gone at stop) when it gives one, else
    `<state-dir>/metrics`."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return (Path(runtime) if runtime else Path(state_dir)) / "metrics"


def prepare_shared_dir(directory: Path) -> None:
    """Empty the directory (counters restart with the server, as Prometheus expects) and
    point prometheus_client at it; the HTTP child inherits the environment."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)
