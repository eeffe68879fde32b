"""Another laptop, or a cleared cache: a controller whose cache is empty re-runs the deploy
against a device that is up. Nothing changes on the device (no image saved, no restart, no
health wait) and nothing is downloaded: the device holds the model verified, and the
model knob pins its sha256. One device, tests in file order."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import Run, deploy, fresh_device, inventory, wait_healthy, write_knobs
from tests.lab import lab
from tests.lab.fault_server import FaultServer
from tests.lab.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.lab
HOST = "e2e-empty-cache"
PATH = "/models/tiny-empty.gguf"
STORE = "/var/lib/llama-docker/models"

device = fresh_device(HOST, index=48)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("m") / "tiny-empty.gguf"
    write_tiny_gguf(path, seed=48, n_embd=256, n_ff=512, n_head=4)
    return path.read_bytes()


@pytest.fixture(scope="module")
def server(model: bytes) -> FaultServer:
    with FaultServer({PATH: model}) as srv:
        yield srv


def knob(server: FaultServer, model: bytes) -> dict:
    return {"name": "tiny-empty", "url": server.url(PATH),
            "sha256": hashlib.sha256(model).hexdigest(), "size": len(model)}


def started(dev: lab.Device) -> tuple[str, str]:
    """When the unit and the server's container last started."""
    unit = dev.exec("systemctl", "show", "-p", "ActiveEnterTimestamp", "--value",
                    "llama-docker").strip()
    box = dev.exec("docker", "inspect", "-f", "{{.State.StartedAt}}", "llama").strip()
    return unit, box


@pytest.fixture(scope="module")
def first(device: lab.Device, server: FaultServer, model: bytes,
          tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[str, str]]:
    """Deployed from one laptop (its cache fills: the model, the image's archive)."""
    folder = tmp_path_factory.mktemp("inv")
    inventory(folder, [device])
    write_knobs(folder, model=knob(server, model))
    run = deploy(folder / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    wait_healthy(device.http_port)
    assert any((folder / "cache" / "images").glob("*.tar"))
    return folder, started(device)


@pytest.fixture(scope="module")
def again(first: tuple[Path, tuple[str, str]], server: FaultServer, model: bytes) -> Run:
    """The same inventory from a laptop whose cache is empty."""
    folder, _ = first
    server.reset_counters()
    unsized = {k: v for k, v in knob(server, model).items() if k != "size"}  # not even a HEAD
    write_knobs(folder, model=unsized, cache_dir=str(folder / "another-laptop"))
    run = deploy(folder / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    return run


def test_nothing_is_downloaded_for_a_model_the_device_holds(
        again: Run, server: FaultServer, first: tuple[Path, tuple[str, str]]) -> None:
    assert server.requests == 0 and server.bytes_sent == 0  # fetch() never asked
    models = first[0] / "another-laptop" / "models"
    assert not models.exists() or not any(models.iterdir())
    assert "tiny-empty.gguf: verified on this device already" in again.output, \
        again.output[-3000:]


def test_nothing_changes_on_the_device(again: Run, device: lab.Device,
                                       first: tuple[Path, tuple[str, str]]) -> None:
    assert again.changed(HOST) == 0, again.output[-4000:]
    assert started(device) == first[1]  # not restarted
    assert "saved llama-docker/server" not in again.output
    images = first[0] / "another-laptop" / "images"
    assert not images.exists() or not any(images.iterdir())  # no archive saved from it
    wait_healthy(device.http_port, seconds=10)
