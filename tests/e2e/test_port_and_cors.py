"""A device whose port is taken by the user's own service, then the server's CORS in a browser.

First a program of the user's (a tiny perl web server answering 404, as a transient systemd
unit) holds port 8080: the deploy must refuse the host in one line naming it, fast and before
installing anything. With the port freed the deploy converges, and a second run changes
nothing although our own server now holds the port.

Then headless Chromium opens a page from another origin (a local http.server on another
port) whose script calls the device's API: the default must make the browser refuse the
answer, while the web UI and same-origin calls work; with `cors_origins` set to that page's
origin the same fetch succeeds. The tests run in file order and share one device.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    Run,
    deploy,
    fresh_device,
    http_json,
    make_model,
    own_known_hosts,
    write_knobs,
)
from tests.lab import lab

pytestmark = pytest.mark.lab
HOST = "e2e-cp-1"
BUSY_UNIT = "e2e-cp-busy"
# The user's own service: a web server on 8080 that answers 404 to everything.
BUSY_SERVER = (
    "use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, "
    "ReuseAddr => 1) or die $!; while (my $c = $s->accept) { my $r = <$c>; "
    "print $c qq(HTTP/1.0 404 Not Found\\r\\nContent-Length: 0\\r\\n\\r\\n); close $c }")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=15000",
]
PAGE = """<!doctype html><html><body><pre id="result">pending</pre><script>
fetch("http://127.0.0.1:%(port)d/v1/chat/completions", {
  method: "POST", headers: {"Content-Type": "application/json"},
  body: JSON.stringify({messages: [{role: "user", content: "Hi"}], max_tokens: 2})})
  .then(r => r.json())
  .then(j => { document.getElementById("result").textContent =
                 "answered " + (j.choices ? "choices" : JSON.stringify(j)); })
  .catch(e => { document.getElementById("result").textContent = "refused " + e; });
</script></body></html>
"""

device = fresh_device(HOST, index=45)


@pytest.fixture(scope="module")
def inv(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inv")
    data = own_known_hosts(folder, device)
    (folder / "inventory.py").write_text(f"lab = {[(HOST, data)]!r}\n")
    return folder


@pytest.fixture(scope="module")
def model(inv: Path) -> dict:
    return make_model(inv, "tiny-cp", seed=45)


def busy_pid(device: lab.Device) -> int:
    return int(device.exec("systemctl", "show", "-p", "MainPID", "--value", BUSY_UNIT).strip())


@pytest.fixture(scope="module")
def busy(device: lab.Device) -> int:
    """The user's service on port 8080; its pid once it listens (bounded wait)."""
    device.exec("systemd-run", f"--unit={BUSY_UNIT}", "perl", "-e", BUSY_SERVER)
    for _ in range(20):
        if ":8080 " in device.exec("ss", "-Hltn", "sport = :8080"):
            return busy_pid(device)
        time.sleep(0.5)
    raise AssertionError("the user's service did not start listening on 8080 in 10 s")


@pytest.fixture(scope="module")
def refused(inv: Path, model: dict, busy: int) -> tuple[Run, float]:
    write_knobs(inv, model=model, health_timeout=120)
    start = time.monotonic()
    run = deploy(inv / "inventory.py", timeout=300)
    return run, time.monotonic() - start


def test_busy_port_refused_in_one_line_naming_the_process(refused: tuple[Run, float],
                                                         busy: int) -> None:
    run, _ = refused
    assert run.code != 0
    line = f"port 8080 is in use by perl (pid {busy}): set the port knob to a free port"
    assert line in run.output, run.output[-4000:]


def test_busy_port_refused_fast(refused: tuple[Run, float]) -> None:
    assert refused[1] < 60, f"the refusal took {refused[1]:.0f}s"


def test_busy_port_refused_before_installing_anything(device: lab.Device,
                                                      refused: tuple[Run, float]) -> None:
    assert device.exec("sh", "-c", "command -v docker || echo none").strip() == "none"
    assert device.exec("sh", "-c", "ls /etc/systemd/system/llama-docker.service "
                       "2>/dev/null || echo none").strip() == "none"


@pytest.fixture(scope="module")
def converged(device: lab.Device, inv: Path, model: dict, refused: tuple[Run, float]) -> Run:
    device.exec("systemctl", "stop", BUSY_UNIT)
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    return run


def test_freed_port_converges_and_serves(device: lab.Device, converged: Run) -> None:
    status, _ = http_json(f"http://127.0.0.1:{device.http_port}/health")
    assert status == 200


def test_second_run_with_our_server_on_the_port_changes_nothing(device: lab.Device, inv: Path,
                                                                converged: Run) -> None:
    # Our own server holds the port now (docker's port publisher, for our container).
    assert "docker-proxy" in device.exec("ss", "-Hltnp", "sport = :8080")
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    assert run.changed(HOST) == 0, run.output[-4000:]
    assert "is in use by" not in run.output


# --- CORS, as a browser enforces it ---------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, ("chromium is not installed: apt-get install -y chromium "
                   "(tests/lab/setup-host.sh installs it)")
    return found


def dump_dom(url: str) -> str:
    """The page's DOM after its scripts ran, from a fresh headless Chromium profile."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def other_origin(device: lab.Device, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[str]:
    """A page on another origin (127.0.0.1, another port) that calls the device's API."""
    folder = tmp_path_factory.mktemp("page")
    (folder / "page.html").write_text(PAGE % {"port": device.http_port})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def page_result(origin: str) -> str:
    found = re.search(r'<pre id="result">([^<]*)</pre>', dump_dom(f"{origin}/page.html"))
    assert found, "the page has no result element"
    return found.group(1)


def test_cross_origin_fetch_refused_by_default(device: lab.Device, converged: Run,
                                              other_origin: str) -> None:
    assert "--cors-origins ''" in device.exec("cat", "/etc/systemd/system/llama-docker.service")
    result = page_result(other_origin)
    assert result.startswith("refused "), result


def test_webui_still_loads(device: lab.Device, converged: Run) -> None:
    dom = dump_dom(f"http://127.0.0.1:{device.http_port}/")
    assert "<textarea" in dom, dom[:2000]


def test_same_origin_call_answered(device: lab.Device, converged: Run) -> None:
    """A browser sends Origin on every POST, its own origin included: the server answers."""
    url = f"http://127.0.0.1:{device.http_port}"
    req = urllib.request.Request(
        f"{url}/v1/chat/completions", method="POST",
        data=json.dumps({"messages": [{"role": "user", "content": "Hi"}],
                         "max_tokens": 2}).encode(),
        headers={"Content-Type": "application/json", "Origin": url})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200
        assert json.loads(resp.read())["choices"]


def test_cross_origin_allowed_by_the_knob(device: lab.Device, inv: Path, model: dict,
                                          converged: Run, other_origin: str) -> None:
    write_knobs(inv, model=model, health_timeout=120, cors_origins=[other_origin])
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    assert f"--cors-origins {other_origin}" in device.exec(
        "cat", "/etc/systemd/system/llama-docker.service")
    result = page_result(other_origin)
    assert result == "answered choices", result
