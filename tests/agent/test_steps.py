"""Every step kind: idempotence (the second run changes nothing), failure with a clear message,
dry-run touching nothing. Steps that talk to provisiond use the agent's real client against the
real Flask app (a requests transport into the WSGI app, no network)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
from conftest import require_program, require_root

from agent import services
from agent.client import Client
from agent.context import StepContext
from agent.journal import Journal
from agent.steps import StepFailed, handler
from provisiond.roles import validate_step

REPO = Path(__file__).resolve().parents[2]


class WsgiAdapter(requests.adapters.BaseAdapter):
    """Sends the agent's requests into a Flask app in this process."""

    def __init__(self, app) -> None:
        super().__init__()
        self.client = app.test_client()

    def send(self, request, **kwargs):  # type: ignore[override]
        url = requests.utils.urlparse(request.url)
        reply = self.client.open(url.path, query_string=url.query, method=request.method,
                                 headers=dict(request.headers), data=request.body)
        response = requests.Response()
        response.status_code = reply.status_code
        response._content = reply.data
        response.headers = requests.structures.CaseInsensitiveDict(reply.headers)
        response.url, response.request = request.url, request
        return response

    def close(self) -> None:
        pass


def agent_client(app, store, host: str) -> Client:
    client = Client("http://10.213.0.1:8080", host, store.agent_credential(host), attempts=1)
    client.session.mount("http://", WsgiAdapter(app))
    return client


def make_ctx(tmp_path: Path, dry_run: bool = False, client=None, unit_dirs=None) -> StepContext:
    journal = Journal(str(tmp_path / "state"))
    manager = services.DirectRunner(journal, unit_dirs=unit_dirs) if unit_dirs else None
    return StepContext(hostname="c1", os_family="debian", journal=journal, client=client, dry_run=dry_run,
                       service_manager=manager, sleep=lambda seconds: None)


def step(**raw):
    raw.setdefault("id", "t.step")
    raw.setdefault("title", "a test step")
    return validate_step(raw)


def apply(s, ctx):
    return handler(s["kind"])(s, ctx)


# -- file ------------------------------------------------------------------------------------

def test_file_is_written_once_then_ok(tmp_path: Path):
    target = tmp_path / "etc" / "x.conf"
    s = step(kind="file", path=str(target), content="a = 1\n", mode="0640")
    dry = apply(s, make_ctx(tmp_path, dry_run=True))
    assert dry.changed and "would change" in dry.message and not target.exists()
    ctx = make_ctx(tmp_path)
    first = apply(s, ctx)
    assert first.changed and target.read_text() == "a = 1\n" and oct(target.stat().st_mode)[-3:] == "640"
    assert ctx.journal.changed_since_restart("svc", [str(target)]) == [str(target)]
    assert not apply(s, ctx).changed
    target.chmod(0o644)
    again = apply(s, ctx)
    assert again.changed and "mode 0644 -> 0640" in again.message


def test_file_directory_and_failures(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    brick = tmp_path / "export" / "brick"
    s = step(kind="file", state="directory", path=str(brick), mode="0755")
    assert apply(s, ctx).changed and brick.is_dir()
    assert not apply(s, ctx).changed
    with pytest.raises(StepFailed, match="is a directory, not a file"):
        apply(step(kind="file", path=str(brick), content="x"), ctx)
    with pytest.raises(StepFailed, match="no user 'no-such-user-here'"):
        apply(step(kind="file", path=str(tmp_path / "y"), content="", owner="no-such-user-here"), ctx)


# -- ini -------------------------------------------------------------------------------------

def test_ini_sets_one_option_keeping_the_rest(tmp_path: Path):
    path = tmp_path / "nova.conf"
    path.write_text("# top comment\n[DEFAULT]\n# my_ip = x\ndebug = false\n\n[glance]\napi_servers = old\n")
    s = step(kind="ini", path=str(path), section="glance", option="api_servers", value="http://ctl:9292")
    assert "would set" in apply(s, make_ctx(tmp_path, dry_run=True)).message
    assert "old" in path.read_text()
    ctx = make_ctx(tmp_path)
    assert apply(s, ctx).changed
    assert path.read_text() == ("# top comment\n[DEFAULT]\n# my_ip = x\ndebug = false\n\n[glance]\n"
                                "api_servers = http://ctl:9292\n")
    assert not apply(s, ctx).changed
    new = step(kind="ini", path=str(tmp_path / "new.conf"), section="database", option="connection", value="x",
               mode="0600")
    assert apply(new, ctx).changed and (tmp_path / "new.conf").read_text() == "[database]\nconnection = x\n"
    assert oct((tmp_path / "new.conf").stat().st_mode)[-3:] == "600"


def test_ini_keeps_the_owner_group_and_mode_of_the_file_it_rewrites(tmp_path: Path):
    # Debian's /etc/keystone/keystone.conf is root:keystone 0640: a rewrite owned by root:root
    # leaves the service unable to read its own configuration.
    path = tmp_path / "keystone.conf"
    path.write_text("[database]\nconnection = old\n")
    os.chown(path, 0, 4242)
    path.chmod(0o640)
    s = step(kind="ini", path=str(path), section="database", option="connection", value="new")
    assert apply(s, make_ctx(tmp_path)).changed
    info = path.stat()
    assert (info.st_uid, info.st_gid, oct(info.st_mode)[-3:]) == (0, 4242, "640")


# -- command ---------------------------------------------------------------------------------

def test_command_guards_make_it_idempotent(tmp_path: Path):
    marker, counter = tmp_path / "made", tmp_path / "runs"
    s = step(kind="command", shell=f"echo run >> {counter}; touch {marker}", creates=str(marker))
    assert apply(s, make_ctx(tmp_path, dry_run=True)).message.startswith("would run")
    assert not counter.exists()
    ctx = make_ctx(tmp_path)
    assert apply(s, ctx).changed and not apply(s, ctx).changed
    unless = step(kind="command", argv=["sh", "-c", f"echo run >> {counter}"], unless=f"grep -q run {counter}")
    assert not apply(unless, ctx).changed
    assert counter.read_text() == "run\n"  # ran exactly once


def test_command_retries_then_fails_with_stderr_tail(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    tries = tmp_path / "tries"
    flaky = step(kind="command", shell=f"echo x >> {tries}; [ $(wc -l < {tries}) -ge 3 ]", retries=5, delay=0)
    outcome = apply(flaky, ctx)
    assert outcome.changed and "attempt 3" in outcome.message and tries.read_text().count("x") == 3
    check = step(kind="command", shell="true", changes=False)
    assert not apply(check, ctx).changed
    failing = step(kind="command", shell="echo noise; echo 'volume create: failed: Host c3 is not in Peer in "
                                         "Cluster state' >&2; exit 1", retries=1, delay=0)
    with pytest.raises(StepFailed) as failed:
        apply(failing, ctx)
    assert "exit status 1 after 2 attempts" in failed.value.message
    assert failed.value.stderr == "volume create: failed: Host c3 is not in Peer in Cluster state"


def test_command_timeout_kills_the_whole_group(tmp_path: Path):
    pid_file = tmp_path / "child.pid"
    s = step(kind="command", shell=f"sleep 60 & echo $! > {pid_file}; wait", timeout=0.5)
    with pytest.raises(StepFailed, match=r"timed out after 0.5 s \(killed\)"):
        apply(s, make_ctx(tmp_path))
    assert not services.alive(int(pid_file.read_text()))


def test_a_timed_out_attempt_is_retried_and_a_timed_out_unless_check_lets_the_command_run(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    tries = tmp_path / "tries"
    # The first attempt hangs (a slow moment), the second answers at once.
    slow_then_fast = step(kind="command", shell=f"echo x >> {tries}; [ $(wc -l < {tries}) -ge 2 ] || sleep 60",
                          timeout=0.5, retries=2, delay=0)
    outcome = apply(slow_then_fast, ctx)
    assert outcome.changed and "attempt 2" in outcome.message and tries.read_text() == "x\nx\n"
    always_slow = step(kind="command", shell="sleep 60", timeout=0.3, retries=1, delay=0)
    with pytest.raises(StepFailed, match=r"timed out after 0.3 s \(killed\), after 2 attempts"):
        apply(always_slow, ctx)
    ran = tmp_path / "ran"
    hung_check = step(kind="command", shell=f"touch {ran}", unless="sleep 60", timeout=0.3)
    assert apply(hung_check, ctx).changed and ran.exists()


# -- packages --------------------------------------------------------------------------------

def test_packages_already_installed_is_ok_without_a_package_manager(tmp_path: Path):
    require_program("dpkg-query")
    s = step(kind="packages", names=["coreutils", "python3"])
    outcome = apply(s, make_ctx(tmp_path))
    assert not outcome.changed and "installed already" in outcome.message
    missing = step(kind="packages", names=["coreutils", "provisiond-no-such-package"])
    dry = apply(missing, make_ctx(tmp_path, dry_run=True))
    assert dry.changed and dry.message == "would install provisiond-no-such-package"


def test_packages_refuse_an_unknown_os_family(tmp_path: Path):
    ctx = make_ctx(tmp_path)
    ctx.os_family = "plan9"
    with pytest.raises(StepFailed, match="no package manager for OS family 'plan9'"):
        apply(step(kind="packages", names=["provisiond-no-such-package"]), ctx)


# -- service (the direct runner: no init system here) -----------------------------------------

UNIT = """\
[Unit]
Description=test daemon

[Service]
Type=simple
Environment="GREETING=hello world"
EnvironmentFile=-{env}
ExecStart=/bin/sh -c 'echo "$GREETING $EXTRA" > {out}; exec sleep 300' $EXTRA_ARGS
"""


def test_service_starts_once_restarts_on_a_watched_change_and_stops(tmp_path: Path):
    units = tmp_path / "units"
    units.mkdir()
    out, env = tmp_path / "out", tmp_path / "default"
    env.write_text("EXTRA=from-file\n")
    (units / "testd.service").write_text(UNIT.format(env=env, out=out))
    conf = tmp_path / "testd.conf"
    ctx = make_ctx(tmp_path, unit_dirs=(str(units),))
    s = step(kind="service", name="testd", watch=[str(conf)])
    try:
        assert apply(s, make_ctx(tmp_path, dry_run=True, unit_dirs=(str(units),))).message == \
            "would enable, start testd"
        first = apply(s, ctx)
        assert first.changed and first.message == "enable, start testd"
        pid = ctx.journal.get("direct_pids")["testd"]
        for _ in range(50):
            if out.exists():
                break
            import time
            time.sleep(0.05)
        assert out.read_text() == "hello world from-file\n"
        assert not apply(s, ctx).changed
        assert apply(step(kind="file", path=str(conf), content="x\n"), ctx).changed
        restarted = apply(s, ctx)
        assert restarted.message == f"restart testd ({conf} changed)"
        assert ctx.journal.get("direct_pids")["testd"] != pid
        assert not apply(s, ctx).changed  # the change was consumed
        stopped = apply(step(kind="service", name="testd", state="stopped", enabled=False), ctx)
        assert stopped.message == "disable, stop testd" and not ctx.service_manager.is_active("testd")
    finally:
        ctx.service_manager.stop("testd")


def test_service_that_cannot_start_fails_with_its_output(tmp_path: Path):
    units = tmp_path / "units"
    units.mkdir()
    (units / "broken.service").write_text("[Service]\nType=forking\nExecStart=/bin/sh -c 'echo bad option >&2; exit 64'\n")
    ctx = make_ctx(tmp_path, unit_dirs=(str(units),))
    with pytest.raises(StepFailed) as failed:
        apply(step(kind="service", name="broken"), ctx)
    assert "exited with status 64" in failed.value.message and failed.value.stderr == "bad option"
    with pytest.raises(StepFailed, match="no unit file for nosuch"):
        apply(step(kind="service", name="nosuch"), ctx)


def test_unit_command_lines_follow_systemd_rules():
    env = {"LOG_LEVEL": "INFO", "OPTS": "-a -b"}
    argv = services.command_line("/usr/sbin/glusterd -p /var/run/glusterd.pid  --log-level $LOG_LEVEL $OPTS", env)
    assert argv == ["/usr/sbin/glusterd", "-p", "/var/run/glusterd.pid", "--log-level", "INFO", "-a", "-b"]
    assert services.command_line("-/bin/x ${OPTS}", env) == ["/bin/x", "-a -b"]


# -- mount (inside a private mount namespace with its own /etc/fstab) --------------------------

MOUNT_SCRIPT = """
import json, sys
sys.path.insert(0, {repo!r})
from agent.context import StepContext
from agent.journal import Journal
from agent.steps import StepFailed, handler
step = json.loads(sys.argv[1])
ctx = StepContext(hostname="n", os_family="debian", journal=Journal({state!r}), client=None,
                  dry_run=sys.argv[2] == "dry")
try:
    outcome = handler("mount")(step, ctx)
    print(json.dumps({{"changed": outcome.changed, "message": outcome.message}}))
except StepFailed as exc:
    print(json.dumps({{"failed": exc.message}}))
"""


def test_mount_through_fstab_once_then_ok(tmp_path: Path):
    require_root()
    require_program("unshare")
    fstab = tmp_path / "fstab"
    fstab.write_text("# test fstab\n/dev/sda1 /boot ext4 defaults 0 2\n")
    target = tmp_path / "instances"
    script = tmp_path / "run_mount.py"
    script.write_text(MOUNT_SCRIPT.format(repo=str(REPO), state=str(tmp_path / "state")))
    s = step(kind="mount", src="tmpfs", path=str(target), fstype="tmpfs", options="size=8m,_netdev",
             check_writable=True)
    calls = [("dry", s), ("real", s), ("real", s)]
    shell = f"mount --bind {fstab} /etc/fstab && " + " && ".join(
        f"{sys.executable} {script} {json.dumps(json.dumps(st))} {mode} && findmnt -n -o FSTYPE --mountpoint {target}"
        f" || true" for mode, st in calls)
    out = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", shell],
                         capture_output=True, text=True, timeout=60)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert json.loads(lines[0]) == {"changed": True, "message": f"would update fstab, mount for {target}"}
    assert json.loads(lines[1]) == {"changed": True, "message": f"fstab, mount: tmpfs on {target}"}
    assert lines[2] == "tmpfs"
    assert json.loads(lines[3]) == {"changed": False, "message": f"{target} is mounted as wanted and writable"}
    assert fstab.read_text() == ("# test fstab\n/dev/sda1 /boot ext4 defaults 0 2\n"
                                 f"tmpfs {target} tmpfs size=8m,_netdev 0 0\n")
    assert not any(target.iterdir())  # the writability probe left nothing behind
    assert subprocess.run(["findmnt", str(target)], capture_output=True).returncode != 0  # host untouched


# -- report and barrier against the real app -------------------------------------------------

@pytest.fixture
def api(tmp_path: Path):
    from conftest import LAB_SITE_YAML

    from provisiond.config import Config
    from provisiond.http import create_app
    from provisiond.inventory import load_inventory
    from provisiond.nodes import open_store

    (tmp_path / "inventory.yaml").write_text(LAB_SITE_YAML + textwrap.dedent("""\
        nodes:
          - {hostname: c1, mac: "52:54:00:16:00:11", role: compute, ip: 10.213.0.11}
          - {hostname: c2, mac: "52:54:00:16:00:12", role: compute, ip: 10.213.0.12}
          - {hostname: c3, mac: "52:54:00:16:00:13", role: compute, ip: 10.213.0.13}
        """))
    config = Config(inventory=tmp_path / "inventory.yaml", state_dir=tmp_path / "server")
    inventory = load_inventory(config.inventory)
    store = open_store(config.state_dir, inventory)
    app = create_app(config, inventory, store, base_url="http://10.213.0.1:8080")
    return app, store


def test_report_once_then_ok(tmp_path: Path, api):
    app, store = api
    ctx = make_ctx(tmp_path, client=agent_client(app, store, "c1"))
    s = step(kind="report", fact="gluster-brick-ready", value={"brick": "c1:/export/gluster/brick"})
    assert apply(s, make_ctx(tmp_path, dry_run=True, client=ctx.client)).message == "would report gluster-brick-ready"
    assert store.fact("c1", "gluster-brick-ready") is None
    assert apply(s, ctx).changed and not apply(s, ctx).changed
    assert store.fact("c1", "gluster-brick-ready") == {"brick": "c1:/export/gluster/brick"}


def test_barrier_times_out_naming_the_missing_nodes(tmp_path: Path, api):
    app, store = api
    store.set_fact("c2", "gluster-brick-ready", {})
    ctx = make_ctx(tmp_path, client=agent_client(app, store, "c1"))
    now = [0.0]
    ctx.clock = lambda: now[0]
    ctx.sleep = lambda seconds: now.__setitem__(0, now[0] + seconds)
    s = step(kind="barrier", fact="gluster-brick-ready", nodes=["c1", "c2", "c3"], timeout=30, poll=2)
    with pytest.raises(StepFailed) as failed:
        apply(s, ctx)
    assert failed.value.message == "barrier gluster-brick-ready timed out after 30 s: still missing from c1, c3"
    dry = apply(s, make_ctx(tmp_path, dry_run=True, client=ctx.client))
    assert not dry.changed and dry.message == "would wait: waiting for gluster-brick-ready from c1, c3"


def test_barrier_fails_at_once_when_a_node_it_waits_for_died(tmp_path: Path, api):
    from provisiond.lifecycle import Event, Source

    app, store = api
    store.apply("c3", Event.INSTALL_STARTED, Source.HTTP)
    store.apply("c3", Event.INSTALL_FINISHED, Source.HTTP)
    store.apply("c3", Event.AGENT_FAILED, Source.AGENT, reason="step 2 of 6 (gluster.glusterd) failed: exit 64")
    ctx = make_ctx(tmp_path, client=agent_client(app, store, "c1"))
    slept = []
    ctx.sleep = slept.append
    with pytest.raises(StepFailed) as failed:
        apply(step(kind="barrier", fact="gluster-brick-ready", nodes=["c2", "c3"], timeout=3600), ctx)
    assert failed.value.message == ("barrier gluster-brick-ready: gluster-brick-ready will never come: "
                                    "c3 failed: step 2 of 6 (gluster.glusterd) failed: exit 64")
    assert slept == []  # no waiting at all


def test_barrier_met_after_the_fact_arrives(tmp_path: Path, api):
    app, store = api
    ctx = make_ctx(tmp_path, client=agent_client(app, store, "c1"))
    progress: list[str] = []
    ctx.progress = progress.append
    ctx.sleep = lambda seconds: store.set_fact("c2", "gluster-volume-ready", {})
    outcome = apply(step(kind="barrier", fact="gluster-volume-ready", nodes=["c2"]), ctx)
    assert not outcome.changed and outcome.message == "gluster-volume-ready: reported by all of c2"
    assert progress == ["waiting for gluster-volume-ready from c2"]


def test_layout_step_sends_this_machines_real_facts_and_fails_naming_what_is_missing(tmp_path: Path, api):
    """This host has no LVM volumes: the compute model's volume groups are named as missing."""
    for program in ("lsblk", "vgs", "lvs", "findmnt"):
        require_program(program)
    app, store = api
    ctx = make_ctx(tmp_path, client=agent_client(app, store, "c1"))
    with pytest.raises(StepFailed) as failed:
        apply(step(kind="layout"), ctx)
    assert failed.value.message.startswith("the disk layout does not match the storage model: ")
    assert "volume group vg_base is missing" in failed.value.message
    assert "volume group vg_gluster is missing" in failed.value.message
    event = [e for e in store.events(hostname="c1") if e.kind == "agent:layout"][-1]
    assert event.detail["ok"] is False


def test_a_crash_between_a_config_change_and_the_restart_still_restarts(tmp_path: Path):
    """The journal keeps the change: a new agent (after a crash) restarts the service once."""
    units = tmp_path / "units"
    units.mkdir()
    (units / "testd.service").write_text("[Service]\nExecStart=/bin/sleep 300\n")
    conf = tmp_path / "testd.conf"
    s = step(kind="service", name="testd", watch=[str(conf)])
    before = make_ctx(tmp_path, unit_dirs=(str(units),))
    try:
        assert apply(s, before).changed
        assert apply(step(kind="file", path=str(conf), content="v2\n"), before).changed
        # The agent dies here; a new one starts from the same journal.
        after = make_ctx(tmp_path, unit_dirs=(str(units),))
        assert apply(s, after).message == f"restart testd ({conf} changed)"
        assert not apply(s, make_ctx(tmp_path, unit_dirs=(str(units),))).changed
    finally:
        before.service_manager.stop("testd")


class AgentDied(Exception):
    """Stands for the agent process dying (crash, reboot) in the middle of a step."""


def test_barrier_timeout_counts_from_the_first_wait_across_an_agent_restart(tmp_path: Path, api):
    """The journal keeps when the barrier started waiting: a restarted agent goes on counting
    (wall clock) instead of waiting the whole timeout again; after the step failed, a new run
    waits the full timeout."""
    app, store = api
    client = agent_client(app, store, "c1")
    s = step(kind="barrier", fact="gluster-brick-ready", nodes=["c2"], timeout=30, poll=2)
    now = [1000.0]

    def ctx_with_clock(die_after: float | None = None) -> tuple[StepContext, list[float]]:
        ctx = make_ctx(tmp_path, client=client)  # a new agent: the journal is read from disk
        slept: list[float] = []
        ctx.clock = lambda: now[0]

        def sleep(seconds: float) -> None:
            if die_after is not None and sum(slept) >= die_after:
                raise AgentDied
            slept.append(seconds)
            now[0] += seconds
        ctx.sleep = sleep
        return ctx, slept

    first, slept_first = ctx_with_clock(die_after=20)
    with pytest.raises(AgentDied):
        apply(s, first)
    assert sum(slept_first) == 20
    now[0] += 4  # the reboot takes 4 s
    second, slept_second = ctx_with_clock()
    with pytest.raises(StepFailed) as failed:
        apply(s, second)
    assert failed.value.message == "barrier gluster-brick-ready timed out after 30 s: still missing from c2"
    assert sum(slept_second) == 6  # 30 s from the first wait, not 30 s more
    third, slept_third = ctx_with_clock()
    with pytest.raises(StepFailed):
        apply(s, third)
    assert sum(slept_third) == 30  # a run after the failure waits the whole timeout again


def test_runner_restarts_a_done_service_when_a_watched_file_changed_later(tmp_path: Path, api):
    """A service step the journal has as done still runs when a file it watches changed after
    its last restart (here: a new manifest changes the file's content)."""
    from agent.runner import Runner

    app, store = api
    units = tmp_path / "units"
    units.mkdir()
    (units / "testd.service").write_text("[Service]\nExecStart=/bin/sleep 300\n")
    conf = tmp_path / "testd.conf"
    service = step(id="t.service", kind="service", name="testd", watch=[str(conf)])

    def run(content: str) -> tuple[int, list[str], StepContext]:
        ctx = make_ctx(tmp_path, client=agent_client(app, store, "c1"), unit_dirs=(str(units),))
        manifest = {"steps": [step(id="t.conf", kind="file", path=str(conf), content=content), service]}
        out = io.StringIO()
        code = Runner(manifest, ctx, ctx.journal, ctx.client, out=out).run()
        return code, out.getvalue().splitlines(), ctx

    code, lines, ctx = run("v1\n")
    try:
        assert code == 0 and "changed  t.service" in lines[1]
        pid = ctx.journal.get("direct_pids")["testd"]
        code, lines, ctx = run("v1\n")  # nothing changed: both done earlier
        assert code == 0 and all("ok       " in line and "done earlier" in line for line in lines)
        code, lines, ctx = run("v2\n")  # the manifest changed the watched file
        assert code == 0 and "changed  t.conf" in lines[0]
        assert lines[1].endswith(f"restart testd ({conf} changed)")
        assert ctx.journal.get("direct_pids")["testd"] != pid
        code, lines, ctx = run("v2\n")
        assert "done earlier" in lines[1]
        reported = [e.kind for e in store.events(hostname="c1")
                    if e.detail.get("step") == "t.service" and e.kind != "agent:started"]
        assert reported == ["agent:changed", "agent:ok", "agent:changed", "agent:ok"]
    finally:
        ctx.service_manager.stop("testd")
