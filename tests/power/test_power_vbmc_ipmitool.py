"""The virtual BMC speaks real IPMI: ipmitool -I lanplus and provisiond's driver agree on it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_program
from power_farm import PASSWORD, Farm, VbmcProcess, running_farm

from provisiond.power.base import BmcTarget, ErrorKind, PowerError
from provisiond.power.ipmi import IpmiDriver


def ipmitool(port: int, *args: str, password_file: Path, user: str = "admin",
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run the real ipmitool against a loopback BMC (password from a file: -f, not argv)."""
    tool = require_program("ipmitool")
    return subprocess.run(
        [tool, "-I", "lanplus", "-H", "127.0.0.1", "-p", str(port), "-U", user,
         "-f", str(password_file), "-R", "1", "-N", "1", *extra, *args],
        capture_output=True, text=True, timeout=30,
    )


def power_status(port: int, password_file: Path) -> str:
    return ipmitool(port, "chassis", "power", "status", password_file=password_file).stdout


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    with running_farm(tmp_path) as running:
        yield running


@pytest.fixture
def password_file(farm: Farm) -> Path:
    return farm.password_file


@pytest.fixture
def bmc(farm: Farm) -> tuple[int, VbmcProcess]:
    return farm.start(1)[0]


def driver(port: int, password: str = PASSWORD, user: str = "admin", timeout: float = 5.0) -> IpmiDriver:
    return IpmiDriver(BmcTarget("node", "127.0.0.1", port, user, password), timeout=timeout)


def test_power_on_off_cycle_status_agree_between_ipmitool_and_driver(bmc, password_file: Path) -> None:
    port, proc = bmc
    d = driver(port)
    try:
        assert d.status() == "off"
        assert "Chassis Power is off" in power_status(port, password_file)
        d.on()
        assert "Chassis Power is on" in power_status(port, password_file)
        out = ipmitool(port, "chassis", "power", "off", password_file=password_file)
        assert out.returncode == 0, out.stderr
        assert d.status() == "off"
        out = ipmitool(port, "chassis", "power", "on", password_file=password_file)
        assert out.returncode == 0, out.stderr
        assert d.status() == "on"
        d.cycle()
        assert proc.wait_for("power off") and proc.wait_for("power on")
        assert d.status() == "on"
        d.reset()
        assert proc.wait_for("reset")
        d.soft()
        assert proc.wait_for("ACPI shutdown")
        assert "Chassis Power is off" in power_status(port, password_file)
        with pytest.raises(PowerError) as refused:
            d.cycle()  # a BMC cannot power-cycle a machine that is off
        assert refused.value.kind is ErrorKind.REFUSED
    finally:
        d.close()


def test_one_time_pxe_set_by_driver_is_read_by_ipmitool_and_consumed_at_boot(
    bmc, password_file: Path,
) -> None:
    port, proc = bmc
    d = driver(port)
    try:
        d.set_boot_device("network", persist=False, uefi=True)
        text = ipmitool(port, "chassis", "bootparam", "get", "5", password_file=password_file).stdout
        assert "Force PXE" in text
        assert "Options apply to only next boot" in text
        assert "BIOS EFI boot" in text
        d.on()
        assert proc.wait_for("boots from network (one-time, uefi)")
        text = ipmitool(port, "chassis", "bootparam", "get", "5", password_file=password_file).stdout
        assert "No override" in text  # consumed by that boot
    finally:
        d.close()


def test_bootdev_set_by_ipmitool_is_read_by_pyghmi(bmc, password_file: Path) -> None:
    from pyghmi.ipmi.command import Command

    port, _ = bmc
    out = ipmitool(port, "chassis", "bootdev", "pxe", "options=persistent", password_file=password_file)
    assert out.returncode == 0, out.stderr
    # pyghmi's own client, as a third party: proposes SHA-256 first, falls back to suite 3.
    cmd = Command("127.0.0.1", "admin", PASSWORD, port=port)
    try:
        assert cmd.get_bootdev() == {"bootdev": "network", "persistent": True, "uefimode": False}
    finally:
        cmd.ipmi_session.logout()


def test_wrong_password_and_unknown_user_fail_fast_for_both_clients(
    bmc, password_file: Path, tmp_path: Path,
) -> None:
    port, _ = bmc
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-it\n")
    out = ipmitool(port, "chassis", "power", "status", password_file=wrong)
    assert out.returncode != 0
    out = ipmitool(port, "chassis", "power", "status", password_file=password_file, user="mallory")
    assert out.returncode != 0
    for d in (driver(port, password="not-it"), driver(port, user="mallory")):
        with d, pytest.raises(PowerError) as failed:
            d.status()
        assert failed.value.kind is ErrorKind.AUTH
        assert "not-it" not in str(failed.value)


def test_cipher_suite_17_is_refused_with_a_clear_error(bmc, password_file: Path) -> None:
    port, _ = bmc
    out = ipmitool(port, "chassis", "power", "status", password_file=password_file, extra=("-C", "17"))
    assert out.returncode != 0
    assert "cipher suite" in out.stderr.lower() or "unable to establish" in out.stderr.lower()
    out = ipmitool(port, "chassis", "power", "status", password_file=password_file, extra=("-C", "3"))
    assert out.returncode == 0, out.stderr


def test_mc_info_answers(bmc, password_file: Path) -> None:
    port, _ = bmc
    out = ipmitool(port, "mc", "info", password_file=password_file)
    assert out.returncode == 0, out.stderr
    assert "IPMI Version" in out.stdout
