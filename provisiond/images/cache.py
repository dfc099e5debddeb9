"""The artifact cache of the image method: one directory per build, named by content key.

    <cache>/<name>/<key>/   the artifact files, a <file>.sha256 beside each, meta.json
    <cache>/debs/           .deb files debootstrap downloaded (reused by the next build)

The build with this provisiond's own content key is the one served (another checkout or
version sharing the cache builds under other keys). Kept apart from the build code: the build
code is part of every content key, the cache's bookkeeping is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from provisiond.images.recipes import Recipe, RecipeError, ramdisk_recipe


@dataclass(frozen=True)
class Artifact:
    """One cached build: its directory holds the files, their .sha256 and meta.json."""

    name: str
    key: str
    path: Path
    meta: dict

    @property
    def files(self) -> dict[str, dict]:
        return self.meta.get("files", {})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ImageCache:
    """The artifact cache: <dir>/<name>/<key>/ per build; served: the build with our own key."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def artifacts(self) -> list[Artifact]:
        found = []
        if not self.dir.is_dir():
            return found
        for meta_path in sorted(self.dir.glob("*/*/meta.json")):
            with contextlib.suppress(OSError, ValueError):
                meta = json.loads(meta_path.read_text())
                found.append(Artifact(meta["name"], meta["key"], meta_path.parent, meta))
        return sorted(found, key=lambda a: (a.name, -a.meta.get("built_at", 0)))

    def lookup(self, name: str, key: str | None = None) -> Artifact | None:
        """The build of `name` with `key`, or (no key) the newest build of `name`."""
        for artifact in self.artifacts():
            if artifact.name == name and (key is None or artifact.key == key):
                return artifact
        return None

    def served(self, recipe: Recipe) -> Artifact | None:
        """The build this provisiond serves for `recipe`: the one with its own content key (a
        newer build by other code, sharing the cache, is not it)."""
        from provisiond.images.build import build_inputs  # build.py imports this module

        return self.lookup(recipe.name, recipe.key(*build_inputs(recipe)))

    def ramdisk_file(self, served_path: str) -> Path | None:
        """The cached file behind `images/ramdisk/<os>/<file>` (a TFTP name), or None."""
        parts = served_path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["images", "ramdisk"]:
            return None
        try:
            artifact = self.served(ramdisk_recipe(parts[2]))
        except RecipeError:
            return None
        if artifact is None or parts[3] not in artifact.files:
            return None
        return artifact.path / parts[3]

    def remove(self, what: str) -> list[Artifact]:
        """Remove every build whose name is `what` or whose key starts with `what` (6+ chars)."""
        gone = [a for a in self.artifacts() if a.name == what or (len(what) >= 6 and a.key.startswith(what))]
        self._delete(gone)
        return gone

    def prune(self, keep: int, protect: frozenset[str] = frozenset()) -> list[Artifact]:
        """Remove all but the `keep` newest builds of every name, and never a build whose key
        is in `protect` (the ones this provisiond serves); returns what was removed. Each rebuild
        after a change of a recipe, the build code or the ramdisk's scripts leaves the previous
        build behind (~70-190 MB each)."""
        if keep < 1:
            raise ValueError("keep at least the newest build of each name")
        seen: dict[str, int] = {}
        gone = []
        for artifact in self.artifacts():  # newest first per name
            seen[artifact.name] = seen.get(artifact.name, 0) + 1
            if seen[artifact.name] > keep and artifact.key not in protect:
                gone.append(artifact)
        self._delete(gone)
        return gone

    @staticmethod
    def _delete(artifacts: list[Artifact]) -> None:
        for artifact in artifacts:
            shutil.rmtree(artifact.path)
            with contextlib.suppress(OSError):
                artifact.path.parent.rmdir()


def publish(staging: Path, files: list[Path], recipe: Recipe, key: str, cache: ImageCache,
             started: float, extra: dict) -> Artifact:
    """Write the .sha256 files and meta.json, then move the build into place at once."""
    meta_files = {}
    for path in files:
        digest = sha256_file(path)
        (path.parent / f"{path.name}.sha256").write_text(f"{digest}  {path.name}\n")
        meta_files[path.name] = {"sha256": digest, "bytes": path.stat().st_size}
    meta = {"name": recipe.name, "key": key, "kind": recipe.kind, "os": recipe.os_name, "role": recipe.role,
            "suite": recipe.suite, "packages": list(recipe.packages), "files": meta_files,
            "built_at": time.time(), "build_seconds": round(time.time() - started, 1), **extra}
    (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    final = cache.dir / recipe.name / key
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    return Artifact(recipe.name, key, final, meta)


