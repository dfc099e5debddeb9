"""The local journal: which steps are done, so a reboot or a crash resumes where it stopped.

One JSON file in the agent's state directory, replaced atomically (write, fsync, rename) after
every change. A step is keyed by its id and a digest of its fields: when provisiond changes a
step, the new version runs again. It also counts the changes that file/ini steps made to
each path, and which of them each service has restarted for, so a crash between a change and
the restart loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

DONE = ("ok", "changed")


def step_digest(step: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(step, sort_keys=True).encode()).hexdigest()[:16]


class Journal:
    FILENAME = "journal.json"

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, self.FILENAME)
        self.data: dict[str, Any] = {"steps": {}, "changes": {}, "restarted": {}}
        if os.path.exists(self.path):
            with open(self.path) as handle:
                loaded = json.load(handle)
            if isinstance(loaded, dict):
                self.data.update(loaded)

    def _save(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        temporary = self.path + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(self.data, handle, sort_keys=True, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def status(self, step: dict[str, Any]) -> str | None:
        """The recorded status of this exact step (None when it changed or never ran)."""
        entry = self.data["steps"].get(step["id"])
        if entry and entry.get("digest") == step_digest(step):
            return entry.get("status")
        return None

    def is_done(self, step: dict[str, Any]) -> bool:
        return self.status(step) in DONE

    def record(self, step: dict[str, Any], status: str, message: str = "") -> None:
        self.data["steps"][step["id"]] = {"digest": step_digest(step), "status": status,
                                          "message": message, "ts": time.time()}
        self._save()

    def mark_changed(self, path: str) -> None:
        """A file/ini step changed `path`: services watching it restart once for this change."""
        changes = self.data.setdefault("changes", {})
        changes[path] = changes.get(path, 0) + 1
        self._save()

    def changed_since_restart(self, service: str, paths: list[str]) -> list[str]:
        seen = self.data.setdefault("restarted", {}).get(service, {})
        changes = self.data.setdefault("changes", {})
        return [path for path in paths if changes.get(path, 0) > seen.get(path, 0)]

    def restarted(self, service: str, paths: list[str]) -> None:
        changes = self.data.setdefault("changes", {})
        seen = self.data.setdefault("restarted", {}).setdefault(service, {})
        for path in paths:
            seen[path] = changes.get(path, 0)
        self._save()

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self._save()

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)
