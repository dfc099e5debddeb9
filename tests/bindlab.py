"""A real BIND (`named`) on loopback with a TSIG-secured forward and reverse zone (optionally
inside a network namespace: `netns`). Used by tests/dns and the serve test with DNS."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import LAB_SITE_YAML, require_program, stop_process  # tests/conftest.py

ZONE = "lab.example"
REVERSE = "0.213.10.in-addr.arpa"
RELAYED_REVERSE = "0.214.10.in-addr.arpa"  # a relayed network, 10.214.0.0/24
KEY_NAME = "provisiond-key"


SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5mQ2w1b3Z6c2R0dGVzdGtleXByb3Zpc2lvbmQx operator@lab"


def dns_site_yaml(server: Bind | None, key_file: Path | None = None) -> str:
    """The lab site (conftest.LAB_SITE_YAML) publishing its nodes to `server` with TSIG
    (`key_file`, else the server's own key; no dns_update at all for None), up to `nodes:`."""
    text = LAB_SITE_YAML + f'  ssh_authorized_keys: ["{SSH_KEY}"]\n'
    if server is not None:
        text += (f"  dns_update: {{server: 127.0.0.1, port: {server.port}, "
                 f"key_file: {key_file or server.key_file}}}\n")
    return text + "nodes:\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Bind:
    port: int
    key_file: Path
    directory: Path
    proc: subprocess.Popen
    prefix: list[str] = field(default_factory=list)  # ["ip", "netns", "exec", NS] or nothing

    def dig(self, name: str, rtype: str) -> list[str]:
        """The answer `dig` gets (an independent client, unsigned query)."""
        result = subprocess.run([*self.prefix, "dig", "+short", "+tries=1", "+time=3", "-p", str(self.port), "@127.0.0.1",
                                 name, rtype], capture_output=True, text=True, timeout=20, check=True)
        return sorted(line for line in result.stdout.splitlines() if line)

    def nsupdate(self, script: str) -> None:
        """A change made by someone else (BIND's own nsupdate with the key)."""
        subprocess.run(["nsupdate", "-k", str(self.key_file)], input=f"server 127.0.0.1 {self.port}\n"
                       f"{script}\nsend\n", text=True, capture_output=True, timeout=20, check=True)


def _zone_file(origin: str) -> str:
    return (f"$ORIGIN {origin}.\n$TTL 300\n"
            f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 300\n"
            f"@ IN NS ns1.{ZONE}.\n")


@pytest.fixture(name="bind")
def bind_fixture(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Bind]:
    """Indirect parameter False: the key may read the reverse zone but not update it."""
    with running_bind(tmp_path, reverse_updates=getattr(request, "param", True),
                      more_reverse=(RELAYED_REVERSE,)) as server:
        yield server


@contextmanager
def running_bind(tmp_path: Path, reverse_updates: bool = True, netns: str | None = None,
                 more_reverse: tuple[str, ...] = ()) -> Iterator[Bind]:
    """named on 127.0.0.1 and a free port (in `netns` if given), stopped by PID on exit;
    `more_reverse`: further reverse zones (for relayed networks), updatable with the key."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    named = require_program("named")
    require_program("dig")
    keygen = require_program("tsig-keygen")
    directory = tmp_path / "named"
    directory.mkdir()
    key_file = directory / "provisiond.key"
    key_file.write_text(subprocess.run([keygen, "-a", "hmac-sha256", KEY_NAME], capture_output=True,
                                       text=True, check=True, timeout=20).stdout)
    key_file.chmod(0o600)
    (directory / "forward.zone").write_text(_zone_file(ZONE) + "ns1 IN A 10.213.0.1\n")
    (directory / "reverse.zone").write_text(_zone_file(REVERSE))
    for number, name in enumerate(more_reverse):
        (directory / f"reverse{number}.zone").write_text(_zone_file(name))
    port = free_port()
    policy = f"update-policy {{ grant {KEY_NAME} zonesub ANY; }}; "
    zones = "".join(
        f'zone "{name}" {{ type primary; file "{file}"; {policy if updates else ""}'
        f"allow-transfer {{ key {KEY_NAME}; }}; }};\n"
        for name, file, updates in ((ZONE, "forward.zone", True), (REVERSE, "reverse.zone", reverse_updates),
                                    *((name, f"reverse{number}.zone", True)
                                      for number, name in enumerate(more_reverse))))
    (directory / "named.conf").write_text(
        f'include "{key_file}";\n'
        f'options {{ directory "{directory}"; pid-file "{directory}/named.pid"; '
        f"listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; recursion no; "
        f'dnssec-validation no; session-keyfile "{directory}/session.key"; }};\n'
        "controls { };\n" + zones)
    log = (directory / "named.log").open("w")
    proc = subprocess.Popen([*prefix, named, "-g", "-c", str(directory / "named.conf")], stdout=log,
                            stderr=subprocess.STDOUT)
    server = Bind(port, key_file, directory, proc, prefix)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"named exited: {(directory / 'named.log').read_text()[-2000:]}")
            try:
                if server.dig(f"{ZONE}", "SOA"):
                    break
            except subprocess.SubprocessError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"named did not answer within 30 s: {(directory / 'named.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield server
    finally:
        stop_process(proc)
        log.close()
