"""The fallback UI (Debian's SimpleChat) on a device whose port knob is not 8080, chatting in
headless Chromium. Debian's page sends to port 8080 of whatever host served it; the image
points it at the page's own origin, so a chat turn is answered on any port.

The lab publishes each device's 8080 on a free local port; here the server is on 8081, so a
DNAT rule in the device sends that published port on to 8081. The browser's page then comes
from 127.0.0.1:<free port>, never 8080: a page that still sent to 8080 could not chat.
"""

from __future__ import annotations

import pytest

from tests.conftest import deploy, fresh_device, inventory, make_model, wait_healthy, write_knobs
from tests.e2e.browser import Browser
from tests.lab import lab

pytestmark = pytest.mark.lab
HOST = "e2e-simplechat-8081"
PORT = 8081

device = fresh_device(HOST, index=47)


@pytest.fixture(scope="module")
def served(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> str:
    """SimpleChat (the webui knob's lab default) on 8081; the page's origin."""
    folder = tmp_path_factory.mktemp("inv")
    inventory(folder, [device])
    write_knobs(folder, model=make_model(folder, "tiny-sc", seed=47), port=PORT,
                webui="simplechat")
    run = deploy(folder / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    assert f":{PORT} " in device.exec("ss", "-Hltn", f"sport = :{PORT}")
    device.exec("iptables", "-t", "nat", "-I", "PREROUTING", "1", "-p", "tcp", "-d", device.ip,
                "--dport", "8080", "-j", "DNAT", "--to-destination", f"{device.ip}:{PORT}")
    wait_healthy(device.http_port)
    return f"http://127.0.0.1:{device.http_port}"


def test_simplechat_answers_a_chat_turn_on_port_8081(served: str) -> None:
    with Browser() as page:
        page.open(served + "/")
        assert page.wait("document.title.includes('SimpleChat') && "
                         "!!document.getElementById('user-in')"), "not SimpleChat"
        page.js("document.getElementById('user-in').value = 'Hello'")
        page.js("document.getElementById('user-btn').click()")
        answer = page.wait("[...document.querySelectorAll('.role-assistant')]"
                           ".map(e => e.textContent).join('|')", seconds=120)
        assert answer and answer.startswith("assistant:"), (answer, page.dialogs)
        assert page.dialogs == []  # SimpleChat alerts when its request fails
        assert served + "/chat/completions" in page.requests, page.requests
        outside = [u for u in page.requests if not u.startswith(served + "/")]
        assert outside == [], outside  # nothing to port 8080, nothing off the device
