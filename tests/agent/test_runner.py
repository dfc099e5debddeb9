"""The agent as a program against a live provisiond HTTP server: dry-run, events, the journal,
and kill -9 in the middle of a step followed by a restart that finishes the job."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML
from werkzeug.serving import make_server

from provisiond.config import Config
from provisiond.http import create_app
from provisiond.inventory import load_inventory
from provisiond.lifecycle import Event, Source, State
from provisiond.nodes import open_store
from provisiond.store import Store

REPO = Path(__file__).resolve().parents[2]
STEPS = """\
- id: t.one
  kind: command
  title: First, fast
  shell: "echo one >> {work}/runs; touch {work}/one"
  creates: "{work}/one"
- id: t.two
  kind: command
  title: Second, slow the first time
  shell: "echo two >> {work}/runs; if [ ! -e {work}/slow ]; then echo $$ > {work}/shell.pid; touch {work}/slow; sleep 60; fi; touch {work}/two"
  creates: "{work}/two"
- id: t.conf
  kind: ini
  title: A setting
  path: "{work}/app.conf"
  section: main
  option: greeting
  value: hello
- id: t.done
  kind: report
  title: Say so
  fact: test-done
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Store, Path]]:
    work = tmp_path / "node"
    work.mkdir()
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "layout.yaml.j2").write_text(STEPS.format(work=work))
    for part in ("gluster-server", "gluster-volume", "gluster-mount"):
        (templates / f"{part}.yaml.j2").write_text("")
    (tmp_path / "inventory.yaml").write_text(LAB_SITE_YAML + """\
nodes:
  - {hostname: n1, mac: "52:54:00:17:00:11", role: compute, ip: 10.213.0.11}
""")
    config = Config(inventory=tmp_path / "inventory.yaml", state_dir=tmp_path / "server", templates=(templates,))
    inventory = load_inventory(config.inventory)
    store = open_store(config.state_dir, inventory)
    app = create_app(config, inventory, store)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    store.apply("n1", Event.INSTALL_STARTED, Source.HTTP)
    store.apply("n1", Event.INSTALL_FINISHED, Source.HTTP)
    credential = tmp_path / "agent.credential"
    credential.write_text(store.agent_credential("n1") + "\n")
    (tmp_path / "agent.conf").write_text(
        f"server_url=http://127.0.0.1:{http.server_port}\nhostname=n1\ncredential_file={credential}\n"
        f"state_dir={tmp_path / 'agent-state'}\n")
    try:
        yield str(tmp_path / "agent.conf"), store, work
    finally:
        http.shutdown()
        thread.join(10)


def agent(config: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "agent", "--config", config, *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_dry_run_prints_the_plan_and_touches_nothing(server):
    config, store, work = server
    process = agent(config, "--dry-run")
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    assert "[1/4] would    t.one: First, fast -- would run: echo one" in out
    assert f"[3/4] would    t.conf: A setting -- would set {work}/app.conf [main] greeting" in out
    assert "[4/4] would    t.done: Say so -- would report test-done" in out
    assert list(work.iterdir()) == []
    assert store.node("n1").state is State.INSTALLED
    assert not [e for e in store.events(hostname="n1") if e.kind.startswith("agent:")]


def test_kill_9_mid_step_then_restart_finishes_and_done_steps_say_ok(server):
    config, store, work = server
    first = agent(config)
    deadline = time.monotonic() + 60
    while not (work / "slow").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read() if first.stdout else ""
        time.sleep(0.05)
    node = store.node("n1")
    assert node.state is State.CONFIGURING
    progress = store.agent_progress()["n1"]
    assert (progress["index"], progress["count"], progress["step"]) == (2, 4, "t.two")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    with contextlib.suppress(ProcessLookupError):  # the killed step's own process group (its shell, sleep)
        os.killpg(int((work / "shell.pid").read_text()), signal.SIGKILL)
    second = agent(config)
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0, out
    assert "[1/4] ok       t.one: First, fast -- done earlier" in out
    assert "[2/4] changed  t.two" in out and "[4/4] changed  t.done" in out
    assert (work / "runs").read_text() == "one\ntwo\ntwo\n"  # t.one once; t.two re-run after the crash
    assert store.node("n1").state is State.READY
    assert store.fact("n1", "test-done") == {}
    assert (Path(config).parent / "agent-state" / "done").exists()
    events = [(e.kind, e.detail.get("step"), e.detail.get("message")) for e in store.events(hostname="n1")]
    assert events.count(("agent:changed", "t.one", "ran")) == 1
    assert ("agent:ok", "t.one", "done earlier") in events
    third = agent(config)
    out, _ = third.communicate(timeout=60)
    assert third.returncode == 0 and out.count("done earlier") == 4


def test_a_failing_step_stops_the_run_and_fails_the_node(server, tmp_path):
    config, store, work = server
    (work / "app.conf").mkdir()  # the ini step cannot write a directory
    process = agent(config)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 1
    assert f"[3/4] failed   t.conf: A setting -- {work}/app.conf is a directory, not an ini file" in out
    node = store.node("n1")
    assert node.state is State.FAILED
    assert node.reason == f"step 3 of 4 (t.conf) failed: {work}/app.conf is a directory, not an ini file"
    assert store.fact("n1", "test-done") is None
    details = [e.detail for e in store.events(hostname="n1") if e.kind == "agent:failed"]
    assert details and details[0]["step"] == "t.conf"


def test_missing_settings_and_credential_are_clear_errors(tmp_path):
    conf = tmp_path / "agent.conf"
    conf.write_text("hostname=n1\n")
    out = subprocess.run([sys.executable, "-m", "agent", "--config", str(conf)], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "server_url not set" in out.stderr
    conf.write_text(f"server_url=http://127.0.0.1:9\nhostname=n1\ncredential_file={tmp_path}/none\n")
    out = subprocess.run([sys.executable, "-m", "agent", "--config", str(conf)], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and f"cannot read the agent credential {tmp_path}/none" in out.stderr
    conf.write_text("color=blue\n")
    out = subprocess.run([sys.executable, "-m", "agent", "--config", str(conf)], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and f"{conf}:1: expected one of" in out.stderr


def test_the_agent_runs_on_python_3_9_the_oldest_node_python():
    """Rocky 9's system Python is 3.9: every agent module compiles there and the step kinds
    import and work (client/cli need requests, which that interpreter may lack here)."""
    candidates = [shutil.which("python3.9"), *map(str, Path.home().glob(".pyenv/versions/3.9*/bin/python3.9"))]
    working = [c for c in candidates if c and subprocess.run([c, "-c", "pass"], capture_output=True).returncode == 0]
    if not working:
        pytest.skip("no python3.9 on this machine")
    python = working[0]
    code = (
        "import pathlib, sys;"
        "[compile(p.read_text(), str(p), 'exec') for p in pathlib.Path('agent').rglob('*.py')];"
        "import agent.runner, agent.services, agent.journal;"
        "from agent.steps import KINDS, handler; [handler(k) for k in KINDS];"
        "from agent.steps.ini import set_option; assert set_option('[a]\\n', 'a', 'b', 'c') == '[a]\\nb = c\\n'"
    )
    out = subprocess.run([python, "-B", "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=120,
                         env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stdout + out.stderr


def test_secret_values_never_reach_the_agents_output_events_or_journal(server, monkeypatch):
    from provisiond.roles import SECRET_SCOPES

    config, store, _ = server
    monkeypatch.setitem(SECRET_SCOPES, "test-pass", frozenset({"compute"}))
    templates = Path(config).parent / "templates"
    (templates / "layout.yaml.j2").write_text(
        "- {id: t.db, kind: command, title: Log in, shell: \"echo login {{ secret('test-pass') }} failed >&2; exit 1\"}\n")
    value = store.site_secret("test-pass")
    process = agent(config)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 1 and "login ******** failed" in out and value not in out
    stored = json.dumps([e.detail for e in store.events(hostname="n1")]) + (store.node("n1").reason or "")
    assert value not in stored and "login ******** failed" in stored
    assert value not in (Path(config).parent / "agent-state" / "journal.json").read_text()
