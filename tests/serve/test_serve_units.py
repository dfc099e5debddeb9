"""Pure pieces: provisiond.toml parsing, boot config rendering, log masking, CLI errors."""

from __future__ import annotations

import logging
from io import StringIO
from pathlib import Path

import pytest

from provisiond.boot import files
from provisiond.boot.decision import Loaders, Network, NodeFacts, OsBoot, decide
from provisiond.cli import main
from provisiond.config import DEFAULT_TIMEOUTS, load_config
from provisiond.errors import UserError
from provisiond.lifecycle import State
from provisiond.logs import log_event, mask_secrets, setup_logging

NETWORK = Network(domain="lab.example", netmask="255.255.255.0", gateway="10.213.0.1",
                  dns=("10.213.0.1",))
OS_BOOT = {"debian12": OsBoot("linux", "initrd.gz", "debian-installer/amd64/linux",
                              "debian-installer/amd64/initrd.gz")}


def spec(netboot: bool):
    node = NodeFacts("node1", "52:54:00:13:00:11", "10.213.0.11", "debian12",
                     State.PXE, netboot)
    return decide(node, None, "http://10.213.0.1:8080", Loaders(), NETWORK, OS_BOOT)


def test_config_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.http_port == 8080 and config.tftp_port == 69
    assert config.timeouts == DEFAULT_TIMEOUTS
    assert config.assets["debian12"].kernel.name == "linux"
    assert config.operator_token_file == config.state_dir / "operator.token"


def test_config_file_values_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "site" / "provisiond.toml"
    path.parent.mkdir()
    path.write_text(
        'inventory = "inv.yaml"\nstate_dir = "/srv/state"\n'
        '[serve]\ninterfaces = ["br-prov"]\nhttp_port = 8081\ntftp_root = "tftp"\ntemplates = ["."]\n'
        '[timeouts]\ninstalling = 60\n'
        '[loaders]\n"snp.efi" = "/opt/snp.efi"\n'
        '[os.debian12]\ncmdline = "console=ttyS0"\n'
        '[os.rocky9]\nkernel = "r/vmlinuz"\ninitrd = "r/initrd.img"\n'
    )
    config = load_config(path)
    assert config.inventory == path.parent / "inv.yaml"
    assert config.state_dir == Path("/srv/state")
    assert config.interfaces == ("br-prov",) and config.http_port == 8081
    assert config.tftp_root == path.parent / "tftp"
    assert config.templates == (path.parent / ".",)
    assert config.timeouts[State.INSTALLING] == 60 and config.timeouts[State.PXE] == 1200
    assert config.loaders["snp.efi"] == Path("/opt/snp.efi") and "ipxe.efi" in config.loaders
    assert config.assets["debian12"].cmdline == "console=ttyS0"
    assert config.assets["rocky9"].kernel == path.parent / "r/vmlinuz"
    # The command line wins over the file; None means "not given".
    assert config.with_overrides(http_port=9000, tftp_root=None).http_port == 9000


def test_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    path = tmp_path / "provisiond.toml"
    path.write_text(
        'colour = "blue"\n[serve]\nhttp_port = 70000\nhttp_threads = "many"\nintrefaces = []\n'
        'templates = ["nowhere"]\n[timeouts]\nready = 10\npxe = -1\n[os.plan9]\ncmdline = "x"\n'
        '[loaders]\n"a/b" = "x"\n'
    )
    with pytest.raises(UserError) as error:
        load_config(path)
    message = str(error.value)
    for fragment in ("colour: unknown key", "serve.http_port: 70000 is not a port",
                     "serve.http_threads: wrong type", "serve.intrefaces: unknown key (did you mean 'interfaces'?)",
                     "timeouts.ready: unknown key (known: powering-on, pxe", "timeouts.pxe: must be positive",
                     "os: plan9.kernel and initrd required", "loaders.a/b: a loader name is a plain file name",
                     f"{path}: 9 problems", str(path)):
        assert fragment in message
    # One problem a line, each naming the file, like the inventory's errors.
    assert all(line.startswith(f"{path}: ") for line in message.splitlines())
    path.write_text('[serve]\ntemplates = ["nowhere"]\nuefi_loader = "nope.efi"\n')
    with pytest.raises(UserError, match="nowhere is not a directory"):
        load_config(path)
    path.write_text('[serve]\nuefi_loader = "nope.efi"\n')
    with pytest.raises(UserError, match=r"uefi_loader 'nope\.efi' is not a loader"):
        load_config(path)


def test_config_syntax_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "provisiond.toml"
    bad.write_text("[serve\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(UserError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_boot_configs_install_and_local() -> None:
    install, local = spec(netboot=True), spec(netboot=False)
    ipxe = files.IPXE.render(install)
    assert "initrd=initrd.gz auto=true priority=critical" in ipxe
    assert "url=http://10.213.0.1:8080/preseed/node1" in ipxe
    assert "netcfg/get_nameservers=10.213.0.1" in ipxe
    local_script = files.IPXE.render(local)
    assert "iseq ${platform} efi && exit" in local_script
    assert "sanboot --no-describe --drive 0x80" in local_script
    pxelinux = files.PXELINUX.render(install)
    assert "KERNEL debian-installer/amd64/linux" in pxelinux
    assert "INITRD debian-installer/amd64/initrd.gz" in pxelinux
    # syslinux obeys initrd= in APPEND over INITRD: it must not be there.
    assert "initrd=" not in pxelinux
    assert "LOCALBOOT 0" in files.PXELINUX.render(local)
    grub = files.GRUB.render(install)
    assert "linux /debian-installer/amd64/linux auto=true" in grub and "initrd=" not in grub
    assert "initrd /debian-installer/amd64/initrd.gz" in grub
    assert "exit" in files.GRUB.render(local)


def test_config_file_names_parse_to_macs() -> None:
    mac = "52:54:00:13:00:11"
    assert files.match_tftp("pxelinux.cfg/01-52-54-00-13-00-11") == (files.PXELINUX, mac)
    assert files.match_tftp("/pxelinux.cfg/01-52-54-00-13-00-11") == (files.PXELINUX, mac)
    assert files.match_tftp("grub/grub.cfg-01-52-54-00-13-00-11") == (files.GRUB, mac)
    assert files.match_tftp("GRUB.CFG-01-52-54-00-13-00-11") == (files.GRUB, mac)
    # GRUB's chain config asks by $net_default_mac, which has colons.
    assert files.match_tftp("debian-installer/amd64/grub/grub.cfg-01-52:54:00:13:00:11") == (files.GRUB, mac)
    assert files.match_tftp("pxelinux.cfg/default") is None
    assert files.match_tftp("pxelinux.cfg/01-52-54-00-13-00") is None
    assert files.GRUB.is_chain("debian-installer/amd64/grub/grub.cfg")
    assert not files.GRUB.is_chain("grub/grub.cfg-01-52-54-00-13-00-11")
    assert files.IPXE.match("52:54:00:13:00:11.ipxe") == mac
    assert files.IPXE.match("boot/52-54-00-13-00-11.ipxe") == mac


def test_secrets_are_masked() -> None:
    token = "ab" * 32
    assert token not in mask_secrets(f"Authorization: Bearer {token}")
    assert mask_secrets(f"token={token} x=1") == "token=*** x=1"
    assert mask_secrets('{"password": "hunter2"}') == '{"password": "***"}'
    assert mask_secrets(f"saw {token} somewhere") == "saw *** somewhere"


def test_structured_log_line_masks_fields() -> None:
    stream = StringIO()
    setup_logging(1, stream)
    try:
        log_event(logging.getLogger("provisiond.test"), "callback", host="node1",
                  header="Bearer " + "cd" * 32, note="two words")
    finally:
        setup_logging(0)
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert "event=callback host=node1" in line and 'note="two words"' in line
    assert "cd" * 32 not in line and "***" in line


def test_cli_without_a_store_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--state-dir", str(tmp_path / "nothing"), "status"]) == 1
    assert "no provisiond store in" in capsys.readouterr().err


def test_serve_without_interface_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--state-dir", str(tmp_path), "serve"]) == 1
    assert "no interface to serve on" in capsys.readouterr().err


def _site(tmp_path: Path) -> list[str]:
    """A state dir with two nodes of the serve fixtures' inventory: one ready, one failed."""
    from serve_fixtures import write_inventory

    from provisiond.lifecycle import Event, Source
    from provisiond.store import Store

    inventory = write_inventory(tmp_path)
    store = Store.in_state_dir(tmp_path / "state")
    store.sync_nodes({"node1": "52:54:00:13:00:11", "node2": "52:54:00:13:00:12",
                      "node3": "52:54:00:13:00:13"})
    for event in (Event.PROVISION, Event.DHCP_BOOT_REQUEST, Event.INSTALL_STARTED,
                  Event.INSTALL_FINISHED, Event.AGENT_STARTED, Event.AGENT_READY):
        store.apply("node1", event, Source.OPERATOR)
    for event in (Event.PROVISION, Event.INSTALL_STARTED, Event.INSTALL_FINISHED, Event.AGENT_STARTED):
        store.apply("node2", event, Source.OPERATOR)
    store.apply("node2", Event.AGENT_FAILED, Source.AGENT, reason="gluster brick missing")
    return ["--inventory", str(inventory), "--state-dir", str(tmp_path / "state")]


def test_status_and_watch_from_the_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _site(tmp_path)
    assert main([*args, "status"]) == 0
    out = capsys.readouterr().out
    assert "node1" in out and "ready" in out and "gluster brick missing" in out
    assert main([*args, "watch", "node1", "--interval", "0.1"]) == 0
    assert main([*args, "watch", "node1", "node2", "--interval", "0.1"]) == 1
    assert "node2 failed: gluster brick missing" in capsys.readouterr().err
    # --role compute is node2 and node3; node3 never moves, so the timeout ends the watch.
    assert main([*args, "watch", "--role", "compute", "--interval", "0.1", "--timeout", "0.3"]) == 2
    assert "not finished: node3" in capsys.readouterr().err
    assert main([*args, "watch", "nosuch"]) == 1
    assert "not nodes of this server: nosuch" in capsys.readouterr().err


def test_events_and_netboot_from_the_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _site(tmp_path)
    assert main([*args, "netboot", "node3", "on"]) == 0
    assert "node3: netboot on (state new)" in capsys.readouterr().out
    assert main([*args, "events", "node3"]) == 0
    assert "netboot:on" in capsys.readouterr().out
    assert main([*args, "events", "node9"]) == 1
    assert "node9 is not a node of this server" in capsys.readouterr().err


def test_serve_proxy_on_the_command_line(tmp_path: Path) -> None:
    from provisiond.cli import build_parser
    from provisiond.cli.serve_cmds import serve_config

    (tmp_path / "provisiond.toml").write_text("[serve]\ndhcp_proxy = false\n")
    base = ["--config", str(tmp_path / "provisiond.toml"), "--state-dir", str(tmp_path), "serve", "--interface", "lo"]
    assert serve_config(build_parser().parse_args([*base, "--proxy"])).dhcp_proxy is True
    assert serve_config(build_parser().parse_args(base)).dhcp_proxy is False  # the file decides


def test_serve_refuses_a_relayed_network_whose_server_it_does_not_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Its nodes would be sent to an address nobody answers on: refused before anything starts."""
    from conftest import require_root

    require_root()  # reads the interface's addresses; binds nothing (it stops before)
    (tmp_path / "inventory.yaml").write_text(
        "site: {name: lab, domain: lab.example, network: 127.0.0.0/8, gateway: 127.0.0.254, server: 127.0.0.1,\n"
        "       networks: [{network: 10.214.0.0/24, gateway: 10.214.0.1, server: 10.213.0.9}]}\n"
        "nodes: [{hostname: rack1, mac: '52:54:00:00:00:01', role: compute, ip: 10.214.0.11}]\n")
    (tmp_path / "tftp").mkdir()
    code = main(["--inventory", str(tmp_path / "inventory.yaml"), "--state-dir", str(tmp_path / "state"),
                 "serve", "--interface", "lo", "--tftp-root", str(tmp_path / "tftp")])
    assert code == 1
    assert ("network 10.214.0.0/24 is served at 10.213.0.9 (its `server`, default site.server), "
            "but serve answers only on 127.0.0.1") in capsys.readouterr().err


def test_tcp_info_counts_what_the_peer_acknowledged_and_what_waits_unsent() -> None:
    """provisiond.http.tcp_info reads a real socket's TCP_INFO: the count of acknowledged bytes
    grows by what a loopback peer read, none wait unsent; a short answer (an old kernel) gives
    None."""
    import socket
    import time

    from provisiond.http.tcp_info import TCP_INFO_LENGTH, acked_bytes, notsent_bytes

    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
        with sender, receiver:
            info = sender.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LENGTH)
            before = acked_bytes(info)
            assert before is not None  # (the SYN may count as one)
            sender.sendall(b"x" * 100_000)
            got = 0
            while got < 100_000:
                got += len(receiver.recv(65536))
            for _ in range(100):  # the ACK may trail the data by a moment (bounded)
                info = sender.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LENGTH)
                if acked_bytes(info) == before + 100_000:
                    break
                time.sleep(0.05)
            assert acked_bytes(info) == before + 100_000
            assert notsent_bytes(info) == 0
    assert acked_bytes(b"\0" * 100) is None and notsent_bytes(b"\0" * 140) is None
