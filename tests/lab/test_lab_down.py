"""`provisiond lab down` stops the lab it is pointed at (by --pid, --workdir or the global
--state-dir, or the only one running), never another running lab; what killed labs left goes.

The labs here are real processes (SIGTERM ends them, as it ends a real lab) with the records a
lab writes: the registry entry and `<workdir>/lab.pid`. The real lab's `lab down --workdir` runs
in tests/lab/test_lab_interrupt.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_root

from provisiond.errors import UserError
from provisiond.lab.orchestrator import lab_down

pytestmark = pytest.mark.root


class FakeLab:
    """A process whose command line says provisiond, with a lab's records."""

    def __init__(self, registry: Path, workdir: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                                         "provisiond-test-lab"])
        self.pid, self.workdir = self.process.pid, workdir
        deadline = time.monotonic() + 10
        while b"provisiond-test-lab" not in Path(f"/proc/{self.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "the test lab process did not start"
            time.sleep(0.01)  # until exec is done, the child still has pytest's command line
        workdir.mkdir(parents=True)
        (workdir / "lab.pid").write_text(f"{self.pid}\n")
        self.record = registry / f"{self.pid}.json"
        self.record.write_text(json.dumps({"pid": self.pid, "workdir": str(workdir), "netns": None,
                                           "bmc_pid": None, "serve_pid": None, "nodes": []}))

    def running(self) -> bool:
        return self.process.poll() is None


@pytest.fixture
def labs(tmp_path: Path) -> Iterator[tuple[Path, FakeLab, FakeLab]]:
    require_root()  # down sweeps namespaces of killed labs
    registry = tmp_path / "registry"
    registry.mkdir()
    first, second = FakeLab(registry, tmp_path / "a"), FakeLab(registry, tmp_path / "b")
    yield registry, first, second
    for lab in (first, second):
        lab.process.kill()
        lab.process.wait(10)


def down(registry: Path, **target) -> int:
    return lab_down(registry=registry, out=lambda line: None, timeout=10, **target)


def test_down_without_a_target_refuses_when_several_labs_run(labs) -> None:
    registry, first, second = labs
    with pytest.raises(UserError, match=r"2 labs are running .*choose one with --pid or --workdir"):
        down(registry)
    assert first.running() and second.running()


def test_down_by_workdir_or_state_dir_stops_only_that_lab(labs) -> None:
    registry, first, second = labs
    assert down(registry, workdir=first.workdir) == 1
    assert first.process.wait(10) == -15 and not first.record.exists()
    assert second.running() and second.record.exists()
    assert down(registry, state_dir=second.workdir / "state") == 1
    assert second.process.wait(10) == -15 and not second.record.exists()


def test_down_by_pid_and_of_the_only_lab(labs) -> None:
    registry, first, second = labs
    assert down(registry, pid=second.pid) == 1
    assert second.process.wait(10) == -15 and first.running()
    assert down(registry) == 1  # the only lab left
    assert first.process.wait(10) == -15


def test_down_all_stops_every_lab(labs) -> None:
    registry, first, second = labs
    with pytest.raises(UserError, match="--all stops every lab; do not name one"):
        down(registry, every=True, pid=first.pid)
    assert down(registry, every=True) == 2
    assert first.process.wait(10) == second.process.wait(10) == -15


def test_a_killed_lab_is_cleaned_and_an_unknown_one_is_an_error(labs, tmp_path: Path) -> None:
    registry, first, second = labs
    first.process.kill()
    first.process.wait(10)
    assert down(registry, pid=first.pid) == 0  # its leftovers go; nothing to stop
    assert not first.record.exists() and second.running()
    with pytest.raises(UserError, match="no running lab with PID 1:"):
        down(registry, pid=1)
    with pytest.raises(UserError, match=r"--workdir .*/nowhere: no lab runs there"):
        down(registry, workdir=tmp_path / "nowhere")
    with pytest.raises(UserError, match="no running lab keeps its store there"):
        down(registry, state_dir=tmp_path / "nowhere")
    assert second.running()
