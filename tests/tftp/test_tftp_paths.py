"""Root confinement: names are refused before any file is opened; symlinks are resolved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisiond.tftp.paths import PathRefused, RequestPath, normalize, open_in_root


@pytest.mark.parametrize(("name", "expected"), [
    ("pxelinux.0", RequestPath("pxelinux.0", False)),
    ("/grub//x86_64-efi/./normal.mod", RequestPath("grub/x86_64-efi/normal.mod", True)),
    ("boot\\x86\\pxeboot.n12", RequestPath("boot/x86/pxeboot.n12", False)),
])
def test_normalize(name: str, expected: RequestPath) -> None:
    assert normalize(name) == expected


@pytest.mark.parametrize(("name", "reason"), [
    ("../etc/passwd", "'..'"),
    ("a/../../etc/passwd", "'..'"),
    ("..\\..\\etc\\passwd", "'..'"),
    ("/..", "'..'"),
    ("file\0.cfg", "NUL"),
    ("file\x01", "control character"),
    ("a" * 256, "component longer"),
    ("a/" * 600, "longer than 1024"),
    ("/", "empty"),
    ("./", "empty"),
])
def test_refused_names(name: str, reason: str) -> None:
    with pytest.raises(PathRefused, match=reason):
        normalize(name)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_bytes(b"inside")
    (tmp_path / "secret").write_bytes(b"outside")
    (root / "inner-link").symlink_to("sub/f")
    (root / "out-link").symlink_to(tmp_path / "secret")
    (root / "out-dir").symlink_to(tmp_path)
    (root / "dev").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo")
    return root


def test_open_inside_and_through_inner_symlink(tree: Path) -> None:
    for name in ("sub/f", "inner-link"):
        fd, size = open_in_root(tree, name)
        try:
            assert os.read(fd, 100) == b"inside" and size == 6
        finally:
            os.close(fd)


@pytest.mark.parametrize(("name", "reason"), [
    ("out-link", "outside the TFTP root"),
    ("out-dir/secret", "outside the TFTP root"),
    ("dev", "outside the TFTP root"),
    ("fifo", "not a regular file"),
    ("sub", "not a regular file"),
])
def test_open_refuses(tree: Path, name: str, reason: str) -> None:
    with pytest.raises(PathRefused, match=reason):
        open_in_root(tree, name)


def test_missing_file(tree: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_in_root(tree, "nope")
    with pytest.raises(FileNotFoundError):
        open_in_root(tree, "sub/f/below-a-file")
