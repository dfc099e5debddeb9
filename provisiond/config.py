"""provisiond.toml: the server's settings, with documented defaults.

Every key is optional. Command line global options (`--inventory`, `--state-dir`) and the
`serve` options (`--interface`, `--tftp-root`, `--http-port`) override the file. Relative
paths in the file are relative to the file's directory, so a site directory can be moved.

    inventory = "inventory.yaml"          # default ./inventory.yaml
    state_dir = "/var/lib/provisiond"     # default: /var/lib/provisiond as root, else
                                          # ~/.local/state/provisiond
    [serve]
    interfaces = ["br-prov"]              # DHCP listens here; TFTP/HTTP bind its site address
    http_port = 8080
    http_threads = 16                     # gunicorn gthread threads (one worker process)
    tftp_root = "/srv/provisiond/tftp"
    tftp_port = 69
    deadline_check_seconds = 10           # how often overdue nodes are failed
    dhcp_proxy = false                    # proxyDHCP beside an existing DHCP server
    bios_loader = "undionly.kpxe"         # what BIOS PXE firmware gets (or "pxelinux.0")
    uefi_loader = "ipxe.efi"              # what UEFI PXE firmware gets (or "grubx64.efi")
    templates = []                        # kickstart/preseed template dirs that override
                                          # the built-in ones (first match wins)

    [timeouts]                            # seconds a node may stay in a state
    "powering-on" = 600
    pxe = 1200
    installing = 7200
    installed = 1800
    configuring = 3600

    [loaders]                             # boot loaders served over TFTP and HTTP by name
    "undionly.kpxe" = "/usr/lib/ipxe/undionly.kpxe"
    "ipxe.efi" = "/usr/lib/ipxe/ipxe.efi"

    [images]                              # the image install method (docs/images.md)
    cache_dir = "/var/cache/provisiond/images"  # built root images and deploy ramdisks

    [os.debian12]                         # boot assets per OS
    kernel = ".../debian-installer/amd64/linux"
    initrd = ".../debian-installer/amd64/initrd.gz"
    cmdline = ""                          # extra kernel arguments, e.g. console=ttyS0,115200n8
    tftp_kernel = "debian-installer/amd64/linux"     # the same files inside the TFTP root,
    tftp_initrd = "debian-installer/amd64/initrd.gz" # for pxelinux/GRUB configs
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from provisiond.errors import UserError
from provisiond.lifecycle import ACTIVE, State

DI_IMAGES = Path("/usr/lib/debian-installer/images/12/amd64/text")
DEFAULT_CONFIG_NAME = "provisiond.toml"
DEFAULT_IMAGE_CACHE = Path("/var/cache/provisiond/images")


def default_state_dir() -> Path:
    """/var/lib/provisiond for root (a service), a per-user directory otherwise."""
    if os.geteuid() == 0:
        return Path("/var/lib/provisiond")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "provisiond"


@dataclass(frozen=True)
class OsAssets:
    """What a node of one OS boots into: the installer's kernel and initrd."""

    kernel: Path
    initrd: Path
    cmdline: str = ""
    tftp_kernel: str = ""
    tftp_initrd: str = ""


DEFAULT_ASSETS: dict[str, OsAssets] = {
    "debian12": OsAssets(
        kernel=DI_IMAGES / "debian-installer/amd64/linux",
        initrd=DI_IMAGES / "debian-installer/amd64/initrd.gz",
        tftp_kernel="debian-installer/amd64/linux",
        tftp_initrd="debian-installer/amd64/initrd.gz",
    ),
    "rocky9": OsAssets(
        kernel=Path("/srv/provisiond/rocky9/vmlinuz"),
        initrd=Path("/srv/provisiond/rocky9/initrd.img"),
        tftp_kernel="rocky9/vmlinuz",
        tftp_initrd="rocky9/initrd.img",
    ),
}

DEFAULT_LOADERS: dict[str, Path] = {
    "undionly.kpxe": Path("/usr/lib/ipxe/undionly.kpxe"),
    "ipxe.efi": Path("/usr/lib/ipxe/ipxe.efi"),
    "snponly.efi": Path("/usr/lib/ipxe/snponly.efi"),
    "pxelinux.0": DI_IMAGES / "pxelinux.0",
    "ldlinux.c32": DI_IMAGES / "ldlinux.c32",
    "grubx64.efi": DI_IMAGES / "debian-installer/amd64/grubx64.efi",
}

DEFAULT_TIMEOUTS: dict[State, float] = {
    State.POWERING_ON: 600,
    State.PXE: 1200,
    State.INSTALLING: 7200,
    State.INSTALLED: 1800,
    State.CONFIGURING: 3600,
}


@dataclass(frozen=True)
class Config:
    """The effective settings (file values over defaults; the CLI applies overrides)."""

    inventory: Path = Path("inventory.yaml")
    state_dir: Path = field(default_factory=default_state_dir)
    interfaces: tuple[str, ...] = ()
    http_port: int = 8080
    http_threads: int = 16
    tftp_root: Path = Path("/srv/provisiond/tftp")
    tftp_port: int = 69
    deadline_check_seconds: float = 10.0
    dhcp_proxy: bool = False
    bios_loader: str = "undionly.kpxe"
    uefi_loader: str = "ipxe.efi"
    templates: tuple[Path, ...] = ()
    timeouts: dict[State, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    loaders: dict[str, Path] = field(default_factory=lambda: dict(DEFAULT_LOADERS))
    assets: dict[str, OsAssets] = field(default_factory=lambda: dict(DEFAULT_ASSETS))
    image_cache: Path = DEFAULT_IMAGE_CACHE
    source: Path | None = None

    def with_overrides(self, **overrides: Any) -> Config:
        """A copy with the given values replaced; None means "not given on the command line"."""
        return replace(self, **{key: value for key, value in overrides.items() if value is not None})

    @property
    def operator_token_file(self) -> Path:
        return self.state_dir / "operator.token"


_TOP = {"inventory", "state_dir", "serve", "timeouts", "loaders", "os", "images"}
_SERVE = {
    "interfaces": list, "http_port": int, "http_threads": int, "tftp_root": str,
    "tftp_port": int, "deadline_check_seconds": (int, float), "dhcp_proxy": bool,
    "templates": list, "bios_loader": str, "uefi_loader": str,
}
_OS_KEYS = {"kernel", "initrd", "cmdline", "tftp_kernel", "tftp_initrd"}


def load_config(path: Path | None) -> Config:
    """Read provisiond.toml (`path`, else ./provisiond.toml if present, else the defaults).

    Every problem is reported at once, naming the file and the key.
    """
    if path is None:
        candidate = Path(DEFAULT_CONFIG_NAME)
        if not candidate.is_file():
            return Config()
        path = candidate
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}; pass an existing --config FILE") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
    return _parse(Path(path), data)


def _parse(path: Path, data: dict[str, Any]) -> Config:
    base = path.resolve().parent
    problems: list[str] = []

    def resolve(value: Any, key: str) -> Path | None:
        if not isinstance(value, str) or not value:
            problems.append(f"{key}: expected a path string, got {value!r}")
            return None
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else base / candidate

    for key in sorted(data.keys() - _TOP):
        problems.append(f"{key}: unknown key (known: {', '.join(sorted(_TOP))})")
    values: dict[str, Any] = {"source": path}
    for key in ("inventory", "state_dir"):
        if key in data:
            values[key] = resolve(data[key], key)

    serve = data.get("serve", {})
    if not isinstance(serve, dict):
        problems.append("serve: expected a table [serve]")
        serve = {}
    for key, value in serve.items():
        kind = _SERVE.get(key)
        if kind is None:
            problems.append(f"serve.{key}: unknown key (known: {', '.join(sorted(_SERVE))})")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"serve.{key}: wrong type {type(value).__name__} ({value!r})")
        elif key == "interfaces":
            if not all(isinstance(item, str) and item for item in value):
                problems.append("serve.interfaces: expected a list of interface names")
            values[key] = tuple(value)
        elif key == "templates":
            dirs = [resolve(item, "serve.templates") for item in value]
            values[key] = tuple(d for d in dirs if d is not None)
            for directory in values[key]:
                if not directory.is_dir():
                    problems.append(f"serve.templates: {directory} is not a directory")
        elif key == "tftp_root":
            values[key] = resolve(value, "serve.tftp_root")
        elif key in ("http_port", "tftp_port") and not 1 <= value <= 65535:
            problems.append(f"serve.{key}: {value} is not a port (1-65535)")
        elif key in ("http_threads", "deadline_check_seconds") and value <= 0:
            problems.append(f"serve.{key}: must be positive, got {value}")
        else:
            values[key] = value

    timeouts = dict(DEFAULT_TIMEOUTS)
    for key, value in _table(data, "timeouts", problems).items():
        try:
            state = State(key)
        except ValueError:
            state = None
        if state not in ACTIVE:
            names = ", ".join(sorted(s.value for s in ACTIVE))
            problems.append(f"timeouts.{key}: not a state with a deadline (one of: {names})")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            problems.append(f"timeouts.{key}: expected a positive number of seconds, got {value!r}")
        else:
            timeouts[state] = float(value)
    values["timeouts"] = timeouts

    loaders = dict(DEFAULT_LOADERS)
    for name, value in _table(data, "loaders", problems).items():
        if "/" in name or name in (".", ".."):
            problems.append(f"loaders.{name}: a loader name is a plain file name")
            continue
        loader_path = resolve(value, f"loaders.{name}")
        if loader_path is not None:
            loaders[name] = loader_path
    values["loaders"] = loaders
    for key in ("bios_loader", "uefi_loader"):
        name = values.get(key, getattr(Config, key))
        if name not in loaders:
            problems.append(f"serve.{key}: {name!r} is not a loader (known: {', '.join(sorted(loaders))})")

    assets = dict(DEFAULT_ASSETS)
    for os_name, table in _table(data, "os", problems).items():
        if not isinstance(table, dict):
            problems.append(f"os.{os_name}: expected a table [os.{os_name}]")
            continue
        unknown = table.keys() - _OS_KEYS
        for key in sorted(unknown):
            problems.append(f"os.{os_name}.{key}: unknown key (known: {', '.join(sorted(_OS_KEYS))})")
        current = assets.get(os_name) or OsAssets(kernel=Path(), initrd=Path())
        update: dict[str, Any] = {}
        for key in ("kernel", "initrd"):
            if key in table:
                update[key] = resolve(table[key], f"os.{os_name}.{key}")
            elif os_name not in assets:
                problems.append(f"os.{os_name}.{key}: required for an OS without defaults")
        for key in ("cmdline", "tftp_kernel", "tftp_initrd"):
            if key in table:
                if isinstance(table[key], str):
                    update[key] = table[key]
                else:
                    problems.append(f"os.{os_name}.{key}: expected a string")
        assets[os_name] = replace(current, **update)
    values["assets"] = assets

    images = _table(data, "images", problems)
    for key in sorted(images.keys() - {"cache_dir"}):
        problems.append(f"images.{key}: unknown key (known: cache_dir)")
    if "cache_dir" in images:
        values["image_cache"] = resolve(images["cache_dir"], "images.cache_dir")

    if problems:
        raise UserError(f"{path}: " + "; ".join(problems) + " (see docs/serve.md for the keys)")
    return Config(**values)


def _table(data: dict[str, Any], key: str, problems: list[str]) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a table [{key}]")
        return {}
    return value


def effective_config(args: Any) -> Config:
    """The config file (--config) with the global CLI options (--inventory, --state-dir) applied."""
    config = load_config(getattr(args, "config", None))
    return config.with_overrides(
        inventory=getattr(args, "inventory", None), state_dir=getattr(args, "state_dir", None)
    )
