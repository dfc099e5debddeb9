"""Powering nodes on in waves (site.power_waves, --wave-size/--wave-interval): which nodes
go together, in which order, and what waits between waves. Behaviour only, never timing:
the clock and the sleep are fakes where intervals are checked."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from power_farm import PASSWORD, Farm, running_farm
from test_power_cli import SITE, node_yaml, provisiond

from provisiond.inventory import InventoryError, load_inventory
from provisiond.lifecycle import State
from provisiond.power.base import BmcTarget, NodeResult
from provisiond.power.fanout import PowerConfig
from provisiond.power.waves import PowerWaves, run_in_waves, split
from provisiond.store import Store


def target(i: int) -> BmcTarget:
    return BmcTarget(name=f"node{i:03d}", address="127.0.0.1", port=623 + i, username="admin",
                     password=PASSWORD)


class FakePower:
    """Stands in for run_action: records each call's group of nodes and the clock at the call;
    each call takes `call_seconds` of the fake clock."""

    def __init__(self, call_seconds: float = 0.0) -> None:
        self.now = 100.0
        self.call_seconds = call_seconds
        self.groups: list[list[str]] = []
        self.sleeps: list[float] = []
        self.log: list[str] = []

    def run(self, targets: list[BmcTarget], action: str, config: PowerConfig,
            on_result=None) -> list[NodeResult]:
        self.groups.append([t.name for t in targets])
        self.log.append(f"run {len(self.groups)}")
        self.now += self.call_seconds
        results = [NodeResult(name=t.name, action=action, ok=True) for t in targets]
        for result in results:
            if on_result is not None:
                on_result(result)
        return results

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.log.append("sleep")
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_split_keeps_inventory_order_and_puts_the_rest_in_a_last_smaller_wave() -> None:
    assert split(list(range(7)), PowerWaves(size=3, interval=10)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert split(list(range(4)), None) == [[0, 1, 2, 3]]
    assert split([], PowerWaves(size=3, interval=10)) == []


def test_each_wave_is_one_power_call_after_the_marking_of_its_nodes() -> None:
    fake = FakePower()
    marked: list[tuple[int, list[str]]] = []

    def mark(index: int, wave: list[BmcTarget]) -> None:
        marked.append((index, [t.name for t in wave]))
        fake.log.append(f"mark {index + 1}")

    seen: list[str] = []
    results = run_in_waves([target(i) for i in range(5)], "pxe-boot", PowerConfig(),
                           PowerWaves(size=2, interval=30), before_wave=mark, on_result=lambda r: seen.append(r.name),
                           run=fake.run, sleep=fake.sleep, clock=fake.clock)
    assert fake.groups == [["node000", "node001"], ["node002", "node003"], ["node004"]]
    assert marked == list(enumerate(fake.groups))
    # a wave's nodes are marked just before its power call; the pause comes between waves
    assert fake.log == ["mark 1", "run 1", "sleep", "mark 2", "run 2", "sleep", "mark 3", "run 3"]
    assert [r.name for r in results] == [f"node{i:03d}" for i in range(5)]
    assert seen == [r.name for r in results]


def test_the_interval_runs_from_one_wave_start_to_the_next() -> None:
    fake = FakePower(call_seconds=12)  # each wave's power calls take 12 s of the fake clock
    run_in_waves([target(i) for i in range(3)], "on", PowerConfig(), PowerWaves(size=1, interval=30),
                 run=fake.run, sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == [18, 18]  # 30 s from start to start, minus the 12 s the wave took


def test_a_wave_slower_than_the_interval_is_followed_at_once() -> None:
    fake = FakePower(call_seconds=45)
    run_in_waves([target(i) for i in range(3)], "cycle", PowerConfig(), PowerWaves(size=1, interval=30),
                 run=fake.run, sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == [0, 0]
    assert len(fake.groups) == 3  # never two waves in one call


@pytest.mark.parametrize("action", ["status", "off", "soft"])
def test_actions_that_power_nothing_up_go_out_at_once(action: str) -> None:
    fake = FakePower()
    run_in_waves([target(i) for i in range(5)], action, PowerConfig(), PowerWaves(size=2, interval=30),
                 run=fake.run, sleep=fake.sleep, clock=fake.clock)
    assert fake.groups == [[f"node{i:03d}" for i in range(5)]]
    assert fake.sleeps == []


def test_bad_waves_are_refused_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(
        SITE.replace("nodes:\n", "  power_waves: {size: 0, interval: -1}\nnodes:\n")
        + node_yaml(0, 623))
    with pytest.raises(InventoryError) as caught:
        load_inventory(tmp_path / "inventory.yaml")
    text = str(caught.value)
    assert "site.power_waves.size" in text and "site.power_waves.interval" in text
    with pytest.raises(ValueError):
        PowerWaves(size=0, interval=1)
    (tmp_path / "bmc.pass").write_text(PASSWORD + "\n")
    (tmp_path / "inventory.yaml").write_text(SITE + node_yaml(0, 623))
    for option in (["--wave-size", "-1"], ["--wave-size", "2", "--wave-interval", "7200"]):
        out = provisiond(tmp_path, "power", "--all", "on", *option)
        assert out.returncode == 1, out.stderr
        assert "bad wave option" in out.stderr and "from 0 to 3600 seconds" in out.stderr
        assert "Traceback" not in out.stderr


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    with running_farm(tmp_path) as running:
        yield running


def test_provision_all_powers_on_wave_after_wave_from_the_inventory_setting(
        farm: Farm, tmp_path: Path) -> None:
    bmcs = farm.start(5)
    ports = [port for port, _ in bmcs]
    proc = bmcs[0][1]
    site = SITE.replace("nodes:\n", "  power_waves: {size: 2, interval: 0.2}\nnodes:\n")
    (tmp_path / "inventory.yaml").write_text(
        site + "".join(node_yaml(i, port) for i, port in enumerate(ports)))
    (tmp_path / "bmc.pass").write_text(PASSWORD + "\n")
    out = provisiond(tmp_path, "provision", "--all", "--timeout", "30")
    assert out.returncode == 0, out.stdout + out.stderr
    for port in ports:
        assert proc.wait_for(f"127.0.0.1:{port} power on")
    # The virtual BMCs print each power-on as it happens: every node of a wave is powered on
    # before any node of the next wave.
    order = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+) power on", proc.output())]
    wave = {port: i // 2 for i, port in enumerate(ports)}
    assert sorted(order) == sorted(ports)
    assert [wave[p] for p in order] == sorted(wave[p] for p in order)
    store = Store.in_state_dir(tmp_path / "state")
    events = {e.hostname: e.detail for e in store.events() if e.kind == "power:pxe-boot"}
    assert {host: detail["wave"] for host, detail in events.items()} == {
        f"node{i:03d}": i // 2 + 1 for i in range(5)}
    assert all(n.state is State.POWERING_ON for n in store.nodes())


def test_wave_size_0_on_the_command_line_powers_every_node_at_once(
        farm: Farm, tmp_path: Path) -> None:
    bmcs = farm.start(3)
    site = SITE.replace("nodes:\n", "  power_waves: {size: 1, interval: 600}\nnodes:\n")
    (tmp_path / "inventory.yaml").write_text(
        site + "".join(node_yaml(i, port) for i, (port, _) in enumerate(bmcs)))
    (tmp_path / "bmc.pass").write_text(PASSWORD + "\n")
    # With the inventory's waves this would wait 600 s between nodes (the test's timeout is 240 s).
    out = provisiond(tmp_path, "power", "--all", "on", "--wave-size", "0", "--timeout", "30")
    assert out.returncode == 0, out.stdout + out.stderr
    store = Store.in_state_dir(tmp_path / "state")
    details = [e.detail for e in store.events() if e.kind == "power:on"]
    assert len(details) == 3 and all("wave" not in d for d in details)
    bad = provisiond(tmp_path, "power", "--all", "on", "--wave-size", "-1")
    assert bad.returncode != 0 and "--wave-size" in bad.stderr and "Traceback" not in bad.stderr
