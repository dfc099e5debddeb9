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
    http_threads = 16                     # worker threads (requests are read before a thread
                                          # takes them: a slow client holds no thread)
    http_connection_limit = 4096          # open client connections at most (then new ones wait)
    http_idle_timeout = 60                # seconds a client may send and receive nothing
    tftp_root = "/srv/provisiond/tftp"
    tftp_port = 69
    tftp_max_transfers = 1024             # TFTP transfers at once, for all clients
    tftp_max_per_client = 8               # ... and from one client address
    tftp_max_silence = 30                 # seconds a transfer waits for a client that went quiet
    deadline_check_seconds = 10           # how often overdue nodes are failed
    dhcp_proxy = false                    # proxyDHCP beside an existing DHCP server
    bios_loader = "undionly.kpxe"         # what BIOS PXE firmware gets (or "pxelinux.0")
    uefi_loader = "ipxe.efi"              # what UEFI PXE firmware gets (or "grubx64.efi")
    uefi_local_loader = "grubx64.efi"     # what UEFI PXE firmware gets to boot local
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

import difflib
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from provisiond.errors import UserError
from provisiond.lifecycle import State

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
    http_connection_limit: int = 4096
    http_idle_timeout: int = 60
    tftp_root: Path = Path("/srv/provisiond/tftp")
    tftp_port: int = 69
    tftp_max_transfers: int = 1024
    tftp_max_per_client: int = 8
    tftp_max_silence: float = 30.0
    deadline_check_seconds: float = 10.0
    dhcp_proxy: bool = False
    bios_loader: str = "undionly.kpxe"
    uefi_loader: str = "ipxe.efi"
    uefi_local_loader: str = "grubx64.efi"
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


class _Section(BaseModel):
    """A table of provisiond.toml: unknown keys and wrong types are problems (strict)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


Port = Annotated[int, Field(ge=1, le=65535)]
PathText = Annotated[str, Field(min_length=1)]
Seconds = Annotated[float, Field(gt=0)]
LoaderName = Annotated[str, Field(pattern=r"^[^/]+$")]  # a plain file name


def _base(info: ValidationInfo) -> Path:
    return (info.context or {}).get("base", Path("."))


class _ServeTable(_Section):
    interfaces: list[Annotated[str, Field(min_length=1)]] | None = None
    http_port: Port | None = None
    http_threads: Annotated[int, Field(gt=0)] | None = None
    http_connection_limit: Annotated[int, Field(ge=16)] | None = None
    http_idle_timeout: Annotated[int, Field(gt=0)] | None = None
    tftp_root: PathText | None = None
    tftp_port: Port | None = None
    tftp_max_transfers: Annotated[int, Field(gt=0)] | None = None
    tftp_max_per_client: Annotated[int, Field(gt=0)] | None = None
    tftp_max_silence: Annotated[float, Field(ge=2)] | None = None
    deadline_check_seconds: Seconds | None = None
    dhcp_proxy: bool | None = None
    templates: list[PathText] | None = None
    bios_loader: str | None = None
    uefi_loader: str | None = None
    uefi_local_loader: str | None = None

    @field_validator("templates")
    @classmethod
    def _templates_exist(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        for item in value or ():
            directory = _resolve(_base(info), item)
            if not directory.is_dir():
                raise ValueError(f"{directory} is not a directory")
        return value


class _TimeoutsTable(_Section):
    """Seconds a node may stay in each state that has a deadline (lifecycle.ACTIVE)."""

    powering_on: Seconds | None = Field(None, alias="powering-on")
    pxe: Seconds | None = None
    installing: Seconds | None = None
    installed: Seconds | None = None
    configuring: Seconds | None = None


class _OsTable(_Section):
    kernel: PathText | None = None
    initrd: PathText | None = None
    cmdline: str | None = None
    tftp_kernel: str | None = None
    tftp_initrd: str | None = None


class _ImagesTable(_Section):
    cache_dir: PathText | None = None


class _ConfigFile(_Section):
    inventory: PathText | None = None
    state_dir: PathText | None = None
    loaders: dict[LoaderName, PathText] = Field(default_factory=dict)
    serve: _ServeTable = Field(default_factory=_ServeTable)
    timeouts: _TimeoutsTable = Field(default_factory=_TimeoutsTable)
    os: dict[str, _OsTable] = Field(default_factory=dict)
    images: _ImagesTable = Field(default_factory=_ImagesTable)

    @field_validator("loaders")
    @classmethod
    def _plain_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name in (".", ".."):
                raise ValueError(f"{name!r}: a loader name is a plain file name")
        return value

    @field_validator("serve")
    @classmethod
    def _loaders_known(cls, value: _ServeTable, info: ValidationInfo) -> _ServeTable:
        known = set(DEFAULT_LOADERS) | set(info.data.get("loaders") or {})
        for key in ("bios_loader", "uefi_loader", "uefi_local_loader"):
            name = getattr(value, key) or getattr(Config, key)
            if name not in known:
                raise ValueError(f"{key} {name!r} is not a loader (known: {', '.join(sorted(known))})")
        return value

    @field_validator("os")
    @classmethod
    def _new_os_complete(cls, value: dict[str, _OsTable]) -> dict[str, _OsTable]:
        for name, table in value.items():
            missing = [key for key in ("kernel", "initrd") if getattr(table, key) is None]
            if name not in DEFAULT_ASSETS and missing:
                raise ValueError(f"{name}.{' and '.join(missing)} required for an OS without defaults")
        return value


def _resolve(base: Path, value: str) -> Path:
    """A path from the file: relative to the file's directory, ~ expanded."""
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


class ConfigError(UserError):
    """provisiond.toml has problems; every one is listed, one line each (like the inventory's)."""

    def __init__(self, path: Path, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = sorted(problems)
        count = len(self.problems)
        lines = "\n".join(f"{path}: {key}: {message}" for key, message in self.problems)
        super().__init__(f"{path}: {count} problem{'s' if count != 1 else ''} "
                         f"(see docs/serve.md for the keys)\n{lines}")


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "[key]")


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors in the inventory's words (unknown key with a suggestion, wrong type)."""
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            table = {"serve": _ServeTable, "timeouts": _TimeoutsTable, "os": _OsTable,
                     "images": _ImagesTable}.get(
                str(loc[0]) if len(loc) > 1 else "", _ConfigFile)
            names = [f.alias or name for name, f in table.model_fields.items()]
            close = difflib.get_close_matches(str(loc[-1]), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(names)})"
            message = f"unknown key{hint}"
        elif kind in ("less_than_equal", "greater_than_equal") and loc[-1] in ("http_port", "tftp_port"):
            message = f"{error['input']} is not a port (1-65535)"
        elif kind == "greater_than":
            message = f"must be positive, got {error['input']!r}"
        elif kind == "string_pattern_mismatch":
            message = "a loader name is a plain file name"
        elif kind == "value_error":
            message = error["msg"].removeprefix("Value error, ")
        elif kind.endswith("_type") or kind == "string_too_short":
            message = f"wrong type or empty: {error['msg'].lower()}, got {error['input']!r}"
        else:
            message = error["msg"]
        problems.append((_dotted(loc), message))
    return problems


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
    """Validate the file (pydantic, like the inventory: every problem at once), then build
    the Config from it."""
    base = path.resolve().parent
    try:
        parsed = _ConfigFile.model_validate(data, context={"base": base})
    except ValidationError as exc:
        raise ConfigError(path, _problems(exc)) from None
    values: dict[str, Any] = {"source": path}
    for key in ("inventory", "state_dir"):
        if getattr(parsed, key) is not None:
            values[key] = _resolve(base, getattr(parsed, key))
    serve = parsed.serve.model_dump(exclude_none=True)
    if "interfaces" in serve:
        serve["interfaces"] = tuple(serve["interfaces"])
    if "tftp_root" in serve:
        serve["tftp_root"] = _resolve(base, serve["tftp_root"])
    if "templates" in serve:
        serve["templates"] = tuple(_resolve(base, item) for item in serve["templates"])
    values.update(serve)
    given = parsed.timeouts.model_dump(by_alias=True, exclude_none=True)
    values["timeouts"] = {**DEFAULT_TIMEOUTS, **{State(key): float(v) for key, v in given.items()}}
    values["loaders"] = {**DEFAULT_LOADERS,
                         **{name: _resolve(base, value) for name, value in parsed.loaders.items()}}
    assets = dict(DEFAULT_ASSETS)
    for os_name, table in parsed.os.items():
        current = assets.get(os_name) or OsAssets(kernel=Path(), initrd=Path())
        update: dict[str, Any] = {key: _resolve(base, getattr(table, key))
                                  for key in ("kernel", "initrd") if getattr(table, key) is not None}
        update.update({key: getattr(table, key) for key in ("cmdline", "tftp_kernel", "tftp_initrd")
                       if getattr(table, key) is not None})
        assets[os_name] = replace(current, **update)
    values["assets"] = assets
    if parsed.images.cache_dir is not None:
        values["image_cache"] = _resolve(base, parsed.images.cache_dir)
    return Config(**values)


def effective_config(args: Any) -> Config:
    """The config file (--config) with the global CLI options (--inventory, --state-dir) applied."""
    config = load_config(getattr(args, "config", None))
    return config.with_overrides(
        inventory=getattr(args, "inventory", None), state_dir=getattr(args, "state_dir", None)
    )
