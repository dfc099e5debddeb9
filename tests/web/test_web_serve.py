"""The real `provisiond serve` in a namespace, watched the way an operator does: the status
page in headless Chromium (Debian's chromium + chromedriver, driven by selenium), /metrics
checked by promtool while real clients (udhcpc, curl over HTTP and TFTP, tftp-hpa) make
traffic, and the discovery list and TFTP statistics from the CLI."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LAB_SITE_YAML, require_program

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))

from serve_lab import Served, netns_pair

from provisiond import nodes as service
from provisiond.lifecycle import State
from provisiond.store import Store

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

SERVER = "10.213.0.1"
NODES = {"web1": ("52:54:00:17:00:11", "10.213.0.11"), "web2": ("52:54:00:17:00:12", "10.213.0.12")}
STRANGER = "52:54:00:17:00:99"  # not in the inventory: the discovery list
INVENTORY = LAB_SITE_YAML + "nodes:\n" + "".join(
    f"  - {{hostname: {host}, mac: '{mac}', role: compute, ip: {ip}, disk: {{device: vda, size: 40GiB}}}}\n"
    for host, (mac, ip) in NODES.items())
BIOS_PXE = ("-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
SCREENSHOT_ENV = "PROVISIOND_SCREENSHOT"  # `make screenshot` sets it to docs/status-page.png
CLONE_NEWNET = 0x40000000
WAIT = 60.0  # seconds for anything the browser should show


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("web")
    (workdir / "tftp").mkdir()
    (workdir / "tftp" / "hello.bin").write_bytes(os.urandom(100_000))
    (workdir / "inventory.yaml").write_text(INVENTORY)
    (workdir / "provisiond.toml").write_text("[serve]\nhttp_threads = 8\n")
    with netns_pair("web", f"{SERVER}/24", [f"{ip}/24" for _, ip in NODES.values()]) as ns:
        server = Served(ns, workdir, workdir / "inventory.yaml", workdir / "state",
                        workdir / "provisiond.toml", workdir / "tftp", SERVER)
        server.start(timeout=120)  # a loaded CI machine starts Python slowly
        try:
            yield server
        finally:
            if server.process is not None:
                server.stop()


def in_namespace(name: str, work: Callable[[], Any]) -> Any:
    """Run `work` in a thread that joined network namespace `name` (a namespace is per
    thread: the test's own thread stays where it is; processes it starts inherit it)."""
    outcome: dict[str, Any] = {}

    def body() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {name}")
        finally:
            os.close(fd)
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=body, name=f"in-{name}")
    thread.start()
    thread.join(240)
    assert not thread.is_alive(), "the browser scenario did not finish in 240 s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def scrape(served: Served) -> str:
    code, text = served.curl(NODES["web2"][1], "/metrics")
    assert code == 200, text
    return text


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from the text format (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
                return float(item.value)
    return 0.0


def test_metrics_move_with_real_traffic_and_promtool_accepts_them(served: Served,
                                                                   tmp_path: Path) -> None:
    promtool = require_program("promtool")
    before = scrape(served)
    mac, ip = NODES["web2"]
    store = Store.in_state_dir(served.state_dir)
    service.provision(store, "web2")
    assert served.udhcpc(mac, *BIOS_PXE) is not None  # DISCOVER + REQUEST, answered
    assert served.udhcpc(STRANGER, *BIOS_PXE) is None  # not in the inventory: no answer
    assert len(served.tftp_get("hello.bin")) == 100_000  # curl's TFTP client
    got = tmp_path / "hello.bin"
    served.ns.client_run(require_program("tftp"), "-m", "binary", SERVER, "-c", "get", "hello.bin", str(got))
    assert got.stat().st_size == 100_000
    assert served.curl(ip, "/api/v1/nodes")[0] == 200
    assert served.curl(ip, "/no/such/page")[0] == 404
    after = ""
    deadline = time.monotonic() + 10  # TFTP statistics arrive from a dispatcher thread
    while time.monotonic() < deadline:
        after = scrape(served)
        if sample(after, "provisiond_tftp_transfers_total", outcome="ok") >= 2:
            break
        time.sleep(0.2)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("provisiond_dhcp_requests_total", type="discover") >= 2
    assert moved("provisiond_dhcp_requests_total", type="request") >= 1
    assert moved("provisiond_dhcp_answers_total", action="offer") >= 1
    assert moved("provisiond_dhcp_answers_total", action="ack") >= 1
    assert moved("provisiond_dhcp_answers_total", action="ignore") >= 1
    assert moved("provisiond_tftp_transfers_total", outcome="ok") == 2
    assert moved("provisiond_tftp_bytes_total") == 200_000
    assert moved("provisiond_tftp_transfer_seconds_count") == 2
    assert moved("provisiond_http_requests_total", route="/api/v1/nodes", method="GET",
                 status="200") == 1
    assert moved("provisiond_http_requests_total", route="(no route)", method="GET",
                 status="404") == 1
    assert sample(after, "provisiond_nodes", state="pxe") >= 1
    assert sample(after, "provisiond_discovered_macs") >= 1
    checked = subprocess.run([promtool, "check", "metrics"], input=after, text=True,
                             capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The same traffic, as the CLI shows it: from the store and over the API.
    token = (served.state_dir / "operator.token").read_text().strip()
    for where in ([], ["--server", served.url, f"--token={token}"]):
        if where:  # the API is reached from the client namespace
            result = served.ns.client_run(*(sys.executable, "-m", "provisiond"), *served.globals(),
                                          "discovered", "--json", *where)
        else:
            result = served.cli("discovered", "--json")
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)["discovered"]
        assert [item["mac"] for item in seen] == [STRANGER]
        assert seen[0]["detail"]["vendor_class"].startswith("PXEClient")
    result = served.cli("transfers", "--json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["totals"]["ok"]["transfers"] >= 2
    assert stats["transfers"][0]["filename"] == "hello.bin"
    table = served.cli("transfers")
    assert table.returncode == 0 and "hello.bin" in table.stdout
    yaml_stub = served.cli("discovered", "--yaml")
    assert yaml_stub.returncode == 0 and f"mac: {STRANGER}" in yaml_stub.stdout


def test_status_page_in_chromium_changes_live(served: Served, tmp_path: Path) -> None:
    require_program("chromium")
    driver_path = require_program("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    store = Store.in_state_dir(served.state_dir)
    mac, ip = NODES["web1"]
    token = (served.state_dir / "operator.token").read_text().strip()
    screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "status-page.png")

    def row(browser: webdriver.Chrome) -> dict[str, str]:
        """The row as the DOM has it now (read in one go: a live update replaces the row)."""
        return browser.execute_script(
            "const row = document.getElementById('node-web1');"
            "return row ? {state: row.dataset.state, text: row.innerText} : {state: '', text: ''};")

    def row_state(browser: webdriver.Chrome) -> str:
        return row(browser)["state"]

    def browse() -> dict[str, Any]:
        options = webdriver.ChromeOptions()
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,720", f"--user-data-dir={tmp_path / 'chromium'}"):
            options.add_argument(flag)
        options.binary_location = "/usr/bin/chromium"
        browser = webdriver.Chrome(options=options, service=Service(driver_path))
        seen: dict[str, Any] = {"states": []}
        try:
            browser.set_page_load_timeout(WAIT)
            wait = WebDriverWait(browser, WAIT, poll_frequency=0.2)
            browser.get(served.url + "/ui/")
            assert "/ui/login" in browser.current_url  # the page is for the operator only
            browser.find_element(By.ID, "token").send_keys(token)
            browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
            wait.until(lambda b: b.find_elements(By.ID, "node-web1"))
            seen["states"].append(row_state(browser))
            wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "on")
            # The operator provisions; then the node PXE-boots (real DHCP) and fetches its
            # preseed (real HTTP): each step shows in the same page, without a reload.
            marker = browser.execute_script("document.body.dataset.reloaded = 'no'; return 1")
            assert marker == 1
            service.provision(store, "web1")
            wait.until(lambda b: row_state(b) == State.POWERING_ON.value)
            seen["states"].append(row_state(browser))
            assert served.udhcpc(mac, *BIOS_PXE) is not None
            wait.until(lambda b: row_state(b) == State.PXE.value)
            seen["states"].append(row_state(browser))
            assert served.curl(ip, "/preseed/web1")[0] == 200
            wait.until(lambda b: row_state(b) == State.INSTALLING.value)
            current = row(browser)
            seen["states"].append(current["state"])
            seen["row_text"] = current["text"]
            seen["announced"] = browser.find_element(By.ID, "live").text
            seen["same_page"] = browser.execute_script("return document.body.dataset.reloaded")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            assert browser.save_screenshot(str(screenshot))
            seen["html"] = browser.page_source
        finally:
            browser.quit()
        return seen

    seen = in_namespace(served.ns.client_ns, browse)
    assert seen["states"] == ["new", "powering-on", "pxe", "installing"]
    assert seen["same_page"] == "no"  # changed live, never reloaded
    assert "installing" in seen["row_text"] and "3 of 6" in seen["row_text"]
    assert seen["announced"] == "web1 is now installing"
    assert token not in seen["html"] and store.current_token("web1") not in seen["html"]
    assert screenshot.stat().st_size > 10_000 and screenshot.read_bytes()[:4] == b"\x89PNG"
