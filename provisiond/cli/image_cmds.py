"""`image build|list|rm|prune`: the image install method's root images and deploy ramdisk."""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

from provisiond.config import effective_config
from provisiond.errors import UserError
from provisiond.images.build import build, build_inputs  # light: no HTTP app (the agent is not in images)
from provisiond.images.cache import ImageCache
from provisiond.images.recipes import IMAGE_OS, ROLE_PACKAGES, RecipeError, ramdisk_recipe, root_recipe
from provisiond.inventory import load_inventory


def register(commands: argparse._SubParsersAction) -> None:
    image = commands.add_parser("image", help="build, list and remove root images and the deploy ramdisk")
    actions = image.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    cache_help = "artifact cache (default: [images] cache_dir, else /var/cache/provisiond/images)"

    build_cmd = actions.add_parser("build", help="build (or reuse) the deploy ramdisk and root images")
    build_cmd.add_argument("--role", action="append", choices=sorted(ROLE_PACKAGES),
                           help="a role's root image (repeatable; default: the roles of the inventory's image nodes)")
    build_cmd.add_argument("--os", dest="os_name", default="debian12", choices=sorted(IMAGE_OS))
    build_cmd.add_argument("--ramdisk-only", action="store_true", help="only the deploy ramdisk")
    build_cmd.add_argument("--force", action="store_true", help="rebuild even when the cache has the build")
    build_cmd.add_argument("--cache-dir", type=Path, help=cache_help)
    build_cmd.set_defaults(func=run_build)

    list_cmd = actions.add_parser("list", help="the cached builds, newest first per name")
    list_cmd.add_argument("--cache-dir", type=Path, help=cache_help)
    list_cmd.set_defaults(func=run_list)

    rm_cmd = actions.add_parser("rm", help="remove builds by name (root-debian12-compute) or key prefix")
    rm_cmd.add_argument("what", nargs="+")
    rm_cmd.add_argument("--cache-dir", type=Path, help=cache_help)
    rm_cmd.set_defaults(func=run_rm)

    prune_cmd = actions.add_parser("prune", help="remove all but the newest builds of each name")
    prune_cmd.add_argument("--keep", type=int, default=1, metavar="N",
                           help="builds kept per name, newest first (default 1); the builds this provisiond "
                           "serves (its own content keys) are always kept")
    prune_cmd.add_argument("--cache-dir", type=Path, help=cache_help)
    prune_cmd.set_defaults(func=run_prune)


def cache_from_args(args: argparse.Namespace) -> ImageCache:
    return ImageCache(args.cache_dir or effective_config(args).image_cache)


def _roles(args: argparse.Namespace) -> list[str]:
    if args.role:
        return sorted(set(args.role))
    if args.ramdisk_only:
        return []
    config = effective_config(args)
    if not config.inventory.is_file():
        raise UserError(f"no inventory at {config.inventory}: name the roles to build (--role compute)")
    inventory = load_inventory(config.inventory)
    roles = sorted({node.role for node in inventory.nodes if node.install_method == "image"})
    if not roles:
        raise UserError(f"{config.inventory}: no node installs by image (install: image); "
                        "name the roles to build (--role compute)")
    return roles


def run_build(args: argparse.Namespace) -> int:
    cache = cache_from_args(args)
    try:
        recipes = [ramdisk_recipe(args.os_name)] + [root_recipe(args.os_name, role) for role in _roles(args)]
    except RecipeError as exc:
        raise UserError(str(exc)) from None
    started = time.monotonic()
    for recipe in recipes:
        artifact, _ = build(recipe, cache, lambda line: print(line, flush=True), force=args.force)
        for name, info in artifact.files.items():
            print(f"  {artifact.path / name}  {info['bytes'] / 1e6:.1f} MB  sha256 {info['sha256']}")
    print(f"image build: {len(recipes)} artifact(s) ready in {time.monotonic() - started:.0f} s ({cache.dir})")
    return 0


def run_list(args: argparse.Namespace) -> int:
    cache = cache_from_args(args)
    artifacts = cache.artifacts()
    if not artifacts:
        print(f"no builds in {cache.dir} (make them with: provisiond image build)")
        return 0
    print(f"{'NAME':<28}{'KEY':<14}{'BUILT (UTC)':<22}{'SIZE':>10}  FILES")
    for artifact in artifacts:
        built = datetime.datetime.fromtimestamp(artifact.meta.get("built_at", 0), datetime.UTC)
        size = sum(info["bytes"] for info in artifact.files.values())
        print(f"{artifact.name:<28}{artifact.key[:12]:<14}{built:%Y-%m-%d %H:%M:%S}  {size / 1e6:>8.1f}MB  "
              f"{', '.join(artifact.files)}")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    cache = cache_from_args(args)
    missing = []
    for what in args.what:
        gone = cache.remove(what)
        for artifact in gone:
            print(f"removed {artifact.name} {artifact.key[:12]}")
        if not gone:
            missing.append(what)
    if missing:
        raise UserError(f"no build named or keyed {', '.join(missing)} in {cache.dir} (see: provisiond image list)")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    if args.keep < 1:
        raise UserError(f"--keep {args.keep}: keep at least 1 build per name; remove a whole name "
                        "with: provisiond image rm NAME")
    cache = cache_from_args(args)
    served = [ramdisk_recipe(os_name) for os_name in IMAGE_OS]
    served += [root_recipe(os_name, role) for os_name in IMAGE_OS for role in ROLE_PACKAGES]
    gone = cache.prune(args.keep, protect=frozenset(recipe.key(*build_inputs(recipe)) for recipe in served))
    for artifact in gone:
        size = sum(info["bytes"] for info in artifact.files.values())
        print(f"removed {artifact.name} {artifact.key[:12]} ({size / 1e6:.1f} MB)")
    freed = sum(info["bytes"] for artifact in gone for info in artifact.files.values())
    print(f"image prune: removed {len(gone)} build(s), {freed / 1e6:.1f} MB; kept the newest {args.keep} "
          f"of each name and the builds this provisiond serves in {cache.dir}")
    return 0
