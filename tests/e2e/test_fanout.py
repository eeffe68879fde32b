"""Download once, fan out: two devices, one model from a Hugging Face-like server that drops
the connection half-way. Upstream bytes are counted at the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import deploy, http_json, inventory, write_knobs
from tests.lab import lab
from tests.lab.fault_server import FaultServer
from tests.lab.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.lab
NAMES = ("e2e-fan-1", "e2e-fan-2")
PATH = "/lab/tiny-GGUF/resolve/main/tiny-fan.gguf"
STORE = "/var/lib/llama-docker/models"
MIB = 1 << 20


@pytest.fixture(scope="module")
def devices(device_image: str) -> list[lab.Device]:
    devs = [lab.start_device(n, device_image, index=22 + i, fresh=True)
            for i, n in enumerate(NAMES)]
    yield devs
    for d in devs:
        lab.remove_device(d)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    path = tmp_path_factory.mktemp("m") / "tiny-fan.gguf"
    sha = write_tiny_gguf(path, seed=21, n_embd=512, n_ff=1024, n_head=8)
    return path.read_bytes(), sha


@pytest.fixture(scope="module")
def hub(model: tuple[bytes, str]) -> FaultServer:
    data, sha = model
    with FaultServer({PATH: data}) as srv:
        srv.hub(PATH, sha256=sha, size=len(data))
        yield srv


def test_two_devices_one_download_through_a_dropped_connection(
        devices: list[lab.Device], hub: FaultServer, model: tuple[bytes, str],
        tmp_path: Path) -> None:
    """Fault: the model server drops the connection half-way | Seen: the download resumes from
    the exact byte | Left: one model's bytes fetched for two devices (at most 1 MiB again)"""
    data, sha = model
    inv = inventory(tmp_path, devices)
    hub.set(drop_after=len(data) // 2)
    env = {"HF_ENDPOINT": hub.url("").rstrip("/")}
    # No sha256 in the knob: it comes from the hub's X-Linked-Etag, as for Hugging Face.
    write_knobs(tmp_path, model={"name": "tiny-fan", "url": env["HF_ENDPOINT"] + PATH})
    run = deploy(inv, env=env)
    assert run.code == 0, run.output[-4000:]
    assert f"sha256 {sha} as published by Hugging Face" in run.output
    sent = hub.bytes_sent  # every body byte the server sent, redirects followed
    assert len(data) <= sent <= len(data) + MIB, (sent, len(data))  # once, resumed, not twice
    for dev in devices:
        assert dev.exec("sha256sum", f"{STORE}/current.gguf").split()[0] == sha
        status, body = http_json(f"http://127.0.0.1:{dev.http_port}/completion",
                                 {"prompt": "Hi", "n_predict": 3, "ignore_eos": True})
        assert status == 200 and body["tokens_predicted"] == 3

    again = deploy(inv, env=env)
    assert again.code == 0, again.output[-3000:]
    assert hub.bytes_sent == sent  # the re-run moves zero model bytes
    for dev in devices:
        assert again.changed(dev.name) == 0, again.output[-3000:]


def test_model_too_big_for_ram_refused_before_any_download(
        devices: list[lab.Device], hub: FaultServer, model: tuple[bytes, str],
        tmp_path: Path) -> None:
    """Fault: the model cannot fit the devices' RAM | Seen: `not enough RAM for ...: needs N,
    has M; choose a smaller model` per device | Left: not a byte downloaded or sent"""
    data, _ = model
    before = hub.bytes_sent
    inv = inventory(tmp_path, devices)
    env = {"HF_ENDPOINT": hub.url("").rstrip("/")}
    write_knobs(tmp_path, model={"name": "tiny-fan", "url": env["HF_ENDPOINT"] + PATH},
                ram_margin_mib=1 << 20)  # 1 TiB: the largest margin the knob takes
    run = deploy(inv, env=env)
    assert run.code != 0
    assert run.output.count("llama-docker: not enough RAM for tiny-fan") >= len(devices)
    assert hub.bytes_sent == before  # HEAD only: the hub's size was enough to say no
    assert not (tmp_path / "cache" / "models").exists() or \
        not any((tmp_path / "cache" / "models").iterdir())
