"""llama.cpp's own web UI on a real lab device, from a stand-in release on the lab's server.

GitHub is not reachable here, so the lab's own HTTP server (FaultServer, on 127.0.0.1 for
the controller) stands in for the release at `webui_mirror`, with a tarball laid out as
llama.cpp's release packs it (`llama-bNNNN/index.html` and the built assets) and the
`<asset>.sha256` a mirror publishes. The build number is the one the device's image holds.
In order, on one device: an unreachable mirror falls back to SimpleChat with one line; a
tarball with a flipped byte is refused and SimpleChat keeps serving; a wrong published digest
is refused and not kept; with the mirror fixed the next run serves the real one at `/`; the
run after that moves 0 bytes and changes nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_docker.device import webui
from llama_docker.device.image import build_args, image_tag
from tests.conftest import REPO, Run, deploy, fresh_device, make_model, wait_healthy, write_knobs
from tests.lab import lab
from tests.lab.fault_server import FaultServer

pytestmark = pytest.mark.lab
HOST = "e2e-ui-1"
STORE = "/var/lib/llama-docker/models/webui"
MARK = "llama-docker stand-in for llama.cpp's web UI"
TAG = image_tag(build_args("docker.io/library/debian:forky-slim", False))  # write_knobs'

device = fresh_device(HOST, index=70)


def stand_in(build: str) -> bytes:
    """A UI tarball shaped like llama.cpp's release asset: one folder, llama-<build>/, holding
    the built UI (index.html and its assets), as `tar --transform "s,^\\.,llama-<build>,"`
    in llama.cpp's release.yml makes it."""
    page = (f"<!doctype html><html><head><title>llama.cpp - AI Chat Interface</title>"
            f"<link rel=icon href=favicon.svg><script src=_app/immutable/app.js></script>"
            f"</head><body><!-- {MARK} --><main><h1>llama.cpp</h1><p>{MARK} {build}</p>"
            "<textarea placeholder='Type a message'></textarea></main></body></html>")
    files = {"index.html": page.encode(), "favicon.svg": b"<svg xmlns='http://www.w3.org/"
             b"2000/svg'/>", "_app/immutable/app.js": b"console.log('stand-in');\n"}
    buf = io.BytesIO()  # the same bytes every call: gzip's header time fixed
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        top = tarfile.TarInfo(f"llama-{build}")  # "." renamed, as the release's tar does
        top.type, top.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(top)
        for name, data in files.items():
            info = tarfile.TarInfo(f"llama-{build}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def page(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
        return resp.read().decode(errors="replace")


def status_row(inv: Path) -> dict:
    proc = subprocess.run([sys.executable, "status.py", str(inv / "inventory.py"), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    (row,) = json.loads(proc.stdout)
    return row


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def inv(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inv")
    (folder / "inventory.py").write_text(f"lab = {[(HOST, device.host_data())]!r}\n")
    return folder


@pytest.fixture(scope="module")
def model(inv: Path) -> dict:
    return make_model(inv, "tiny-ui", seed=70)


def knobs(inv: Path, model: dict, mirror: str) -> None:
    write_knobs(inv, model=model, webui="upstream", webui_mirror=mirror)


@pytest.fixture(scope="module")
def unreachable(inv: Path, model: dict, device: lab.Device) -> Run:
    knobs(inv, model, f"http://127.0.0.1:{closed_port()}/releases")
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    return run


@pytest.fixture(scope="module")
def build(device: lab.Device, unreachable: Run) -> str:
    """The llama.cpp build of the image the device runs (Debian's nightly-tag.txt)."""
    found = webui.parse_build(device.exec("docker", "run", "--rm", "--entrypoint", "cat", TAG,
                                          webui.BUILD_FILE))
    assert found, "the image names no llama.cpp build"
    return found


def test_unreachable_mirror_falls_back_with_one_line(unreachable: Run,
                                                     device: lab.Device) -> None:
    lines = [ln for ln in unreachable.output.splitlines() if "web UI:" in ln and
             "cannot be had" in ln]
    assert len(lines) == 1, unreachable.output[-4000:]
    assert "serving SimpleChat" in lines[0] and "next run" in lines[0]
    wait_healthy(device.http_port)
    assert "SimpleChat" in page(device.http_port)


def test_still_unreachable_a_second_run_changes_nothing(inv: Path, unreachable: Run) -> None:
    """The UI still cannot be had and the device serves SimpleChat as it should: the run
    says so in its one line and changes nothing."""
    again = deploy(inv / "inventory.py")
    assert again.code == 0, again.output[-4000:]
    assert again.changed(HOST) == 0, again.output[-4000:]
    assert sum("cannot be had" in ln for ln in again.output.splitlines()) == 1


def test_status_says_simplechat(inv: Path, unreachable: Run) -> None:
    row = status_row(inv)
    assert (row["webui"], row["webui_version"]) == ("simplechat", None)


@pytest.fixture(scope="module")
def flipped(inv: Path, model: dict, server: FaultServer, build: str) -> Run:
    good = stand_in(build)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    path = f"/releases/{build}/{webui.asset(build)}"
    server.put(path, bytes(bad))
    server.put(path + ".sha256", f"{hashlib.sha256(good).hexdigest()}  x\n".encode())
    knobs(inv, model, server.url("/releases"))
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    return run


def test_flipped_byte_is_refused_and_simplechat_keeps_serving(flipped: Run,
                                                               device: lab.Device) -> None:
    lines = [ln for ln in flipped.output.splitlines() if "web UI:" in ln and
             "cannot be had" in ln]
    assert len(lines) == 1 and "expected" in lines[0], flipped.output[-4000:]
    assert "SimpleChat" in page(device.http_port)
    listing = device.exec("ls", "-1", STORE).split()
    assert not [n for n in listing if n.endswith((".tar.gz", ".part", ".ok"))], listing


@pytest.fixture(scope="module")
def wrong_digest(inv: Path, model: dict, server: FaultServer, build: str, flipped: Run) -> Run:
    """The right tarball, but the mirror publishes a wrong digest for it."""
    path = f"/releases/{build}/{webui.asset(build)}"
    server.put(path, stand_in(build))
    server.put(path + ".sha256", f"{'0' * 64}  {webui.asset(build)}\n".encode())
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    return run


def test_a_wrong_published_digest_is_refused_and_not_kept(wrong_digest: Run, inv: Path,
                                                          device: lab.Device,
                                                          build: str) -> None:
    """Fault: the UI mirror publishes a wrong sha256 | Seen: `web UI: llama.cpp's UI cannot
    be had (... expected 000...; the digest published at ... is asked again next run (if it
    stays wrong, pin ... webui_sha256))` | Left: SimpleChat serving; no digest kept"""
    lines = [ln for ln in wrong_digest.output.splitlines() if "cannot be had" in ln]
    assert len(lines) == 1 and f"expected {'0' * 64}" in lines[0], wrong_digest.output[-4000:]
    assert "asked again next run" in lines[0] and "webui_sha256" in lines[0], lines[0]
    assert "SimpleChat" in page(device.http_port)
    assert not (inv / "cache" / "webui" / f"{build}.sha256").exists()


@pytest.fixture(scope="module")
def served(inv: Path, model: dict, server: FaultServer, build: str, wrong_digest: Run) -> Run:
    """The mirror fixed: the next run asks it again and switches to llama.cpp's UI."""
    path = f"/releases/{build}/{webui.asset(build)}"
    server.put(path, stand_in(build))
    server.put(path + ".sha256",
               f"{hashlib.sha256(stand_in(build)).hexdigest()}  {webui.asset(build)}\n".encode())
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    return run


def test_device_serves_the_verified_ui(served: Run, device: lab.Device, build: str) -> None:
    wait_healthy(device.http_port)
    html = page(device.http_port)
    assert MARK in html and build in html, html[:500]
    with urllib.request.urlopen(f"http://127.0.0.1:{device.http_port}/favicon.svg",
                                timeout=10) as resp:
        assert resp.status == 200


def test_ui_is_stored_verified_and_read_only(served: Run, device: lab.Device,
                                            build: str) -> None:
    sha = hashlib.sha256(stand_in(build)).hexdigest()
    assert device.exec("readlink", f"{STORE}/current").strip() == f"{sha}/llama-{build}"
    assert device.exec("cat", f"{STORE}/{sha}.ok").strip() == sha
    probe = device.exec("sh", "-c", f"su {device.user} -c 'touch {STORE}/{sha}/llama-{build}/x' "
                        "2>&1; echo rc=$?", check=False)
    assert "rc=0" not in probe


def test_status_says_llama_cpp(inv: Path, served: Run, build: str) -> None:
    row = status_row(inv)
    assert (row["webui"], row["webui_version"]) == ("llama.cpp", f"llama-{build}")


def test_second_run_moves_nothing(inv: Path, served: Run, server: FaultServer,
                                  device: lab.Device, build: str) -> None:
    server.reset_counters()
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    assert server.requests == 0 and server.bytes_sent == 0
    assert run.changed(HOST) == 0, run.output[-4000:]
    assert "web UI" not in run.output
    assert MARK in page(device.http_port)
