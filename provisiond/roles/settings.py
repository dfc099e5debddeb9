"""Site settings for the agent phase: the `gluster:` and `agent:` sections of inventory.site.

Pure pydantic models (no I/O); the inventory loader validates them with file:line errors.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_VOLUME = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_PATH = re.compile(r"^[A-Za-z0-9._/-]+\Z")  # reaches manifests and fstab lines as it is


class GlusterSettings(BaseModel):
    """The replicated volume that holds /var/lib/nova/instances."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    volume: str = "vm-instances"
    # None: one replica per compute node (every brick holds every file).
    replica: int | None = Field(None, ge=1)
    # Seconds a client waits for a dead brick before going on. Gluster's default (42) stalls
    # writes 42-74 s when a node drops; 10 s stalls 10 s and still rides out short hiccups.
    ping_timeout: int = Field(10, ge=1, le=1800)
    brick_mount: str = "/export/gluster"
    mount: str = "/var/lib/nova/instances"

    @field_validator("volume")
    @classmethod
    def _volume(cls, value: str) -> str:
        if not _VOLUME.match(value):
            raise ValueError(f"{value!r} is not a GlusterFS volume name (letters, digits, '-', '_')")
        return value

    @field_validator("brick_mount", "mount")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value.rstrip("/") == "" or not _PATH.match(value):
            raise ValueError(f"{value!r} must be an absolute path below / (letters, digits "
                             "and . _ - /)")
        return value.rstrip("/")


class AgentSettings(BaseModel):
    """How the agents of this site behave."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The first step reports lsblk/vgs/lvs/findmnt and provisiond checks the storage model.
    # Off only where nodes are not installed by provisiond (e.g. test nodes in namespaces).
    layout_check: bool = True
    barrier_timeout: int = Field(3600, ge=1)
    barrier_poll: float = Field(2.0, gt=0, le=60)
