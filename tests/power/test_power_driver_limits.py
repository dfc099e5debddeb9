"""Bounds and failure causes of the IPMI driver: dead BMC, busy BMC, one operation per BMC."""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from power_farm import PASSWORD, Farm, black_holes, dead_port, running_farm

from provisiond.power.base import BmcTarget, ErrorKind, PowerError
from provisiond.power.claim import BmcClaim, claimed
from provisiond.power.fanout import PowerConfig, run_action
from provisiond.power.ipmi import IpmiDriver


@pytest.fixture(autouse=True)
def private_bmc_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BMC lock files are machine-wide by design (two provisiond processes never drive one BMC);
    each test keeps its own directory, so a second test run on the machine is not a busy BMC."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    with running_farm(tmp_path) as running:
        yield running


def test_silent_bmc_fails_as_unreachable_within_the_configured_bound() -> None:
    with black_holes(1) as [port]:
        driver = IpmiDriver(BmcTarget("ghost", "127.0.0.1", port, "admin", PASSWORD), timeout=1.5)
        start = time.monotonic()
        with driver, pytest.raises(PowerError) as failed:
            driver.status()
        elapsed = time.monotonic() - start
    assert failed.value.kind is ErrorKind.UNREACHABLE
    assert f"no IPMI answer from 127.0.0.1:{port} within 1.5 s" in str(failed.value)
    assert driver.attempts == 1  # unreachable is not retried
    # The configured bound, with room for a loaded CI machine; pyghmi alone takes 4-6 s and,
    # with the socket race, could hang for minutes.
    assert elapsed < 1.5 + 3.0


def test_port_nobody_listens_on_fails_as_unreachable_at_once() -> None:
    port = dead_port()
    driver = IpmiDriver(BmcTarget("ghost", "127.0.0.1", port, "admin", PASSWORD), timeout=5)
    with driver, pytest.raises(PowerError) as failed:
        driver.status()
    assert failed.value.kind is ErrorKind.UNREACHABLE
    assert f"127.0.0.1:{port} refused" in str(failed.value)


def test_unresolvable_bmc_name_is_unreachable_with_the_name() -> None:
    driver = IpmiDriver(BmcTarget("n", "no-such-bmc.invalid", 623, "admin", PASSWORD), timeout=2)
    with driver, pytest.raises(PowerError) as failed:
        driver.status()
    assert failed.value.kind is ErrorKind.UNREACHABLE
    assert "no-such-bmc.invalid" in str(failed.value)


def test_silent_bmcs_do_not_stall_live_ones_in_the_same_worker(farm: Farm) -> None:
    """pyghmi's pitfall: dead BMCs in its shared I/O loop stalled live logins. Not here."""
    live = [port for port, _ in farm.start(20)]
    with black_holes(60) as silent:
        targets = [BmcTarget(f"live{p}", "127.0.0.1", p, "admin", PASSWORD) for p in live]
        targets += [BmcTarget(f"dead{p}", "127.0.0.1", p, "admin", PASSWORD) for p in silent]
        random.Random(7).shuffle(targets)
        results = run_action(targets, "status", PowerConfig(timeout=3, concurrency=32, shard_size=100))
    by_kind = {(r.name[:4], r.error_kind) for r in results}
    assert by_kind == {("live", None), ("dead", "unreachable")}


def test_busy_bmc_is_retried_with_backoff_then_succeeds(farm: Farm) -> None:
    port, proc = farm.start_busy(busy_calls=2)
    driver = IpmiDriver(BmcTarget("busy", "127.0.0.1", port, "admin", PASSWORD), retries=2, backoff=0.1)
    try:
        assert driver.status() == "off"
    finally:
        driver.close()
    assert driver.attempts == 3
    assert proc.output().count("answered busy") == 2


def test_busy_bmc_beyond_the_retries_reports_bmc_busy(farm: Farm) -> None:
    port, _ = farm.start_busy(busy_calls=10)
    driver = IpmiDriver(BmcTarget("busy", "127.0.0.1", port, "admin", PASSWORD), retries=1, backoff=0.05)
    try:
        with pytest.raises(PowerError) as failed:
            driver.status()
    finally:
        driver.close()
    assert failed.value.kind is ErrorKind.BUSY
    assert driver.attempts == 2


def test_one_operation_at_a_time_per_bmc_within_a_process(farm: Farm) -> None:
    [(port, _)] = farm.start(1)
    target = BmcTarget("n", "127.0.0.1", port, "admin", PASSWORD)
    with IpmiDriver(target, timeout=5) as first:
        assert first.status() == "off"  # first holds the BMC until it is closed
        second = IpmiDriver(target, timeout=0.5, retries=0)
        with pytest.raises(PowerError) as failed:
            second.status()
        assert failed.value.kind is ErrorKind.BUSY
        assert "still running" in str(failed.value)
        first.on()  # and keeps working meanwhile
    with IpmiDriver(target, timeout=5) as again:
        assert again.status() == "on"


def test_a_driver_dropped_without_close_leaves_its_bmc_free(farm: Farm) -> None:
    """A driver that failed and was dropped without close() kept its BMC claimed for the rest
    of the process, so a later BMC on that port (a later test's) answered "an earlier
    operation on this BMC is still running". Dropping the driver gives the claim back."""
    [(port, _)] = farm.start(1)
    target = BmcTarget("n", "127.0.0.1", port, "admin", PASSWORD)
    with pytest.raises(PowerError):
        IpmiDriver(BmcTarget("n", "127.0.0.1", port, "admin", "not-it"), timeout=5).status()
    gc.collect()  # the failed call's exception frames hold the driver in a reference cycle
    assert target.key not in claimed()
    forgotten = IpmiDriver(target, timeout=5)
    assert forgotten.status() == "off"
    assert target.key in claimed()
    del forgotten  # no call of it is running: gone at once, and its claim with it
    assert target.key not in claimed()
    with IpmiDriver(target, timeout=5, retries=0) as driver:
        assert driver.status() == "off"


def test_one_operation_at_a_time_per_bmc_across_processes(farm: Farm) -> None:
    [(port, _)] = farm.start(1)
    target = BmcTarget("n", "127.0.0.1", port, "admin", PASSWORD)
    path = BmcClaim(target.key, target.where).path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         f"fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with IpmiDriver(target, timeout=0.5, retries=0) as driver, pytest.raises(PowerError) as failed:
            driver.status()
        assert failed.value.kind is ErrorKind.BUSY
        assert "another provisiond process" in str(failed.value)
    finally:
        holder.kill()
        holder.wait(5)
    with IpmiDriver(target, timeout=5) as driver:
        assert driver.status() == "off"  # the lock went with the process


def test_fanout_reports_every_node_with_its_own_cause(farm: Farm) -> None:
    ports = [port for port, _ in farm.start(6, per_process=3)]
    dead = dead_port()
    targets = [BmcTarget(f"n{i}", "127.0.0.1", port, "admin", PASSWORD) for i, port in enumerate(ports)]
    targets.append(BmcTarget("wrongpw", "127.0.0.1", ports[0] + 0, "admin", "not-the-password"))
    targets.append(BmcTarget("ghost", "127.0.0.1", dead, "admin", PASSWORD))
    seen: list[str] = []
    config = PowerConfig(timeout=5, shard_size=3, concurrency=4)
    results = run_action(targets, "pxe-boot", config, on_result=lambda r: seen.append(r.name))
    assert [r.name for r in results] == [t.name for t in targets]
    assert sorted(seen) == sorted(t.name for t in targets)
    by_name = {r.name: r for r in results}
    for i in range(6):
        assert by_name[f"n{i}"].ok, by_name[f"n{i}"]
        assert by_name[f"n{i}"].power == "on"
        assert by_name[f"n{i}"].done == "one-time PXE (bios), powered on"
    assert by_name["wrongpw"].error_kind == "authentication failed"
    assert "not-the-password" not in by_name["wrongpw"].message
    assert by_name["ghost"].error_kind == "unreachable"
    assert str(dead) in by_name["ghost"].message
    # A second provision finds the nodes on and power-cycles them into PXE again.
    again = run_action(targets[:6], "pxe-boot", config)
    assert all(r.ok and r.done == "one-time PXE (bios), power cycled" for r in again), again


def test_repeated_fanouts_keep_working_as_client_ports_are_reused(farm: Farm) -> None:
    """Each run has new worker processes and client ports; the BMCs must not cling to old
    sessions (pyghmi's BMC side routed a reused client port to a stale session)."""
    ports = [port for port, _ in farm.start(100)]
    targets = [BmcTarget(f"n{p}", "127.0.0.1", p, "admin", PASSWORD) for p in ports]
    for _ in range(3):
        results = run_action(targets, "status", PowerConfig(timeout=5, concurrency=64))
        assert [r.error_kind for r in results] == [None] * 100
