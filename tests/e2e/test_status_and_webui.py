"""The fleet table against a real deploy, and the web UI as a browser renders it.

One device deployed for real, one inventory entry whose SSH port is closed and one that pins
another host key for the same device: status.py must give one table with a healthy row and
two unreachable rows with their reasons, and exit 1. Then headless Chromium opens the
device's web UI and writes docs/webui.png.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import pytest

from tests.conftest import (
    REPO,
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
HOST = "e2e-status-1"
GONE = "e2e-status-gone"
IMPOSTOR = "e2e-status-badkey"
SCREENSHOT = REPO / "docs" / "webui.png"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1280,800", "--virtual-time-budget=8000",
]


device = fresh_device(HOST, index=30)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the with block ends


@pytest.fixture(scope="module")
def inv(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """inventory.py (the device, to deploy) and fleet.py (the device and a dead host)."""
    folder = tmp_path_factory.mktemp("inv")
    data = own_known_hosts(folder, device)
    gone = {**data, "ssh_port": closed_port()}
    # The same device, but known_hosts pins another key: what a swapped device looks like.
    other = folder / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True, timeout=30)
    wrong = folder / "known_hosts_wrong"
    wrong.write_text(f"[127.0.0.1]:{device.ssh_port} "
                     + " ".join(Path(f"{other}.pub").read_text().split()[:2]) + "\n")
    impostor = {**data, "ssh_known_hosts_file": str(wrong)}
    (folder / "inventory.py").write_text(f"lab = {[(HOST, data)]!r}\n")
    (folder / "fleet.py").write_text(
        f"lab = {[(HOST, data), (GONE, gone), (IMPOSTOR, impostor)]!r}\n")
    return folder


@pytest.fixture(scope="module")
def model(inv: Path) -> dict:
    return make_model(inv, "tiny-status", seed=30)


@pytest.fixture(scope="module")
def deployed(inv: Path, model: dict) -> Run:
    write_knobs(inv, model=model)
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    return run


def status(inv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "status.py", str(inv / "fleet.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def rows(inv: Path, deployed: Run) -> dict[str, dict]:
    proc = status(inv, "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return {row["host"]: row for row in json.loads(proc.stdout)}


def test_healthy_row(rows: dict[str, dict], model: dict) -> None:
    row = rows[HOST]
    assert row["reachable"] is True and row["error"] is None
    assert (row["profile"], row["runtime"], row["service"]) == ("debian", "docker", "active")
    assert row["health"] == 200
    assert row["healthy"] is True


def test_row_serves_the_knobs_model(rows: dict[str, dict], model: dict) -> None:
    row = rows[HOST]
    assert row["model"] == "tiny-status"
    assert row["sha256"] == row["model_sha256"] == model["sha256"]
    assert row["previous_sha256"] is None  # first deploy: nothing to roll back to


def test_row_measures_tokens_per_second(rows: dict[str, dict]) -> None:
    assert rows[HOST]["tokens_per_s"] > 0


def test_row_reports_knobs_and_resources(rows: dict[str, dict]) -> None:
    row = rows[HOST]
    assert (row["port"], row["bind"], row["api_key"]) == (8080, "0.0.0.0", False)
    assert row["disk_free_bytes"] > 0 and row["ram_bytes"] > 0


def test_a_device_open_to_the_lan_is_said_by_the_run_and_by_status(
        rows: dict[str, dict], deployed: Run) -> None:
    """Every interface and no key (the defaults): status says `open`, and the run's summary
    names the device once, with the knob that closes it."""
    assert rows[HOST]["lan"] == "open"
    said = [ln.strip() for ln in deployed.output.splitlines()
            if "open to the whole LAN without a key" in ln]
    assert said == [f'open to the whole LAN without a key: {HOST} :8080; set api_key = '
                    '"generate" (or bind = "127.0.0.1" to keep it to the device)'], said


def test_unreachable_row_has_a_reason(rows: dict[str, dict]) -> None:
    row = rows[GONE]
    assert row["reachable"] is False and row["healthy"] is False
    assert row["error"] == "connection refused or host down"


def test_changed_host_key_is_refused_with_a_reason(rows: dict[str, dict]) -> None:
    row = rows[IMPOSTOR]
    assert (row["reachable"], row["error"]) == (False, "host key changed")


def test_text_table(inv: Path, rows: dict[str, dict], model: dict) -> None:
    proc = status(inv)
    print(proc.stdout)  # the table, for the record (pytest -s)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["HOST", "PROFILE"]
    (ok,) = [line for line in lines if line.startswith(HOST + " ")]
    assert ok.split()[1:5] == ["debian", "docker", "active", "tiny-status"]
    assert model["sha256"][:12] in ok.split() and "200" in ok.split()
    (gone,) = [line for line in lines if line.startswith(GONE)]
    assert gone.split(None, 1)[1] == "unreachable: connection refused or host down"
    (bad,) = [line for line in lines if line.startswith(IMPOSTOR)]
    assert bad.split(None, 1)[1] == "unreachable: host key changed"
    assert lines[-2] == "1 of 3 hosts healthy"
    assert lines[-1].startswith("open: anyone on the LAN can use it, no key asked")
    assert ok.split()[9] == "open"  # the LAN column


def test_exit_code_zero_when_all_healthy(inv: Path, deployed: Run) -> None:
    proc = subprocess.run([sys.executable, "status.py", str(inv / "inventory.py")], cwd=REPO,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the web UI in a real browser --------------------------------------------------------------


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, ("chromium is not installed: apt-get install -y chromium "
                   "(tests/lab/setup-host.sh installs it)")
    return found


def browse(url: str, *flags: str) -> subprocess.CompletedProcess:
    """One headless Chromium run with a fresh profile (nothing cached between runs)."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               *flags, url], capture_output=True, text=True, timeout=120)


def png_colours(path: Path) -> int:
    """Distinct RGB(A) colours of an 8-bit truecolour PNG, decoded with the stdlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6), f"PNG type {colour}/{depth}"
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * bpp
    prev, colours = bytearray(stride), set()
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) *
                                                         (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        colours.update(bytes(line[i:i + bpp]) for i in range(0, stride, bpp * 4))
        prev = line
    return len(colours)


def test_webui_dom_is_the_ui_status_names(device: lab.Device, rows: dict[str, dict]) -> None:
    """The page is the UI the device's status row says it serves: llama.cpp's own (with the
    webui knob at "upstream" and the release reachable) or Debian's SimpleChat."""
    proc = browse(f"http://127.0.0.1:{device.http_port}/", "--dump-dom")
    dom = proc.stdout
    assert proc.returncode == 0 and dom, proc.stderr[-2000:]
    served = rows[HOST]["webui"]
    assert served in ("llama.cpp", "simplechat"), rows[HOST]
    assert ("simplechat" in dom.lower()) == (served == "simplechat"), dom[:2000]
    assert "llama.cpp" in dom.lower() or served == "simplechat", dom[:2000]
    assert "<textarea" in dom, dom[:2000]  # somewhere to type a prompt


def test_webui_screenshot(device: lab.Device, deployed: Run, tmp_path: Path) -> None:
    shot = tmp_path / "webui.png"
    proc = browse(f"http://127.0.0.1:{device.http_port}/", f"--screenshot={shot}")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    colours = png_colours(shot)
    assert colours > 16, f"the screenshot looks blank ({colours} colours)"
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)


# --- last: an API key on the same device ---------------------------------------------------------


def test_api_key_row_still_measures(device: lab.Device, inv: Path, model: dict,
                                    deployed: Run) -> None:
    """With a key the server refuses bare requests; status sends the device's header file."""
    write_knobs(inv, model=model, api_key="status-test-key-0123456789")
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    code, _ = http_json(f"http://127.0.0.1:{device.http_port}/completion",
                        {"prompt": "Hi", "n_predict": 2})
    assert code == 401
    proc = subprocess.run([sys.executable, "status.py", str(inv / "inventory.py"), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["api_key"] is True and row["tokens_per_s"] > 0
    assert row["lan"] == "key"
    assert "open to the whole LAN" not in run.output
