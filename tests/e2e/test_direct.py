"""Direct mode: the device downloads the model itself from a server on the lab network that
drops the connection half-way; the device's own bounded `curl -C -` loop resumes it."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import deploy, fresh_device, http_json, inventory, write_knobs
from tests.lab import images, lab
from tests.lab.sh import out, wait_for
from tests.lab.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.lab
HOST = "e2e-direct"
SERVER = "llama-lab-models"
SERVER_IP = "198.18.0.5"
MIB = 1 << 20


device = fresh_device(HOST, index=31)


@pytest.fixture(scope="module")
def served(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict]:
    """A model server on the lab network (the devices' view), its control port on 127.0.0.1."""
    root = tmp_path_factory.mktemp("srv")
    path = root / "tiny-direct.gguf"
    sha = write_tiny_gguf(path, seed=61, n_embd=512, n_ff=1024, n_head=8)
    size = path.stat().st_size
    script = lab.REPO / "tests" / "lab" / "fault_server.py"
    lab.docker("rm", "-f", SERVER, check=False, capture=True)
    lab.docker("run", "-d", "--name", SERVER, "--network", lab.NET, "--ip", SERVER_IP,
               "-p", "127.0.0.1::8000", "-v", f"{root}:/srv:ro",
               "-v", f"{script}:/opt/fault_server.py:ro", images.INFRA.tag, "python3",
               "/opt/fault_server.py", "--root", "/srv", "--port", "8000", "--bind", "0.0.0.0",
               "--drop-after", str(size // 2), capture=True)
    port = int(out("port", SERVER, "8000/tcp").splitlines()[0].rsplit(":", 1)[1])
    wait_for("model server", lambda: _state(port) is not None, seconds=30)
    model = {"name": "tiny-direct", "url": f"http://{SERVER_IP}:8000/tiny-direct.gguf",
             "sha256": sha, "size": size}
    yield port, model
    lab.docker("rm", "-f", SERVER, check=False, capture=True)


def _state(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_fault", timeout=5) as resp:
        return json.loads(resp.read())


def test_device_downloads_and_resumes_by_itself(device: lab.Device, served: tuple[int, dict],
                                                tmp_path: Path) -> None:
    """Fault: the model server drops the connection half-way (direct mode) | Seen: the device
    resumes within the same run | Left: the model verified on the device; at most 1 MiB
    fetched twice; nothing downloaded on the controller"""
    port, model = served
    inv = inventory(tmp_path, [device])
    write_knobs(tmp_path, model=model, model_source="direct")
    run = deploy(inv)
    assert run.code == 0, run.output[-4000:]
    assert "on the device; sha256 verified" in run.output
    sent = _state(port)["bytes_sent"]
    assert model["size"] <= sent <= model["size"] + MIB, sent
    store = "/var/lib/llama-docker/models"
    assert device.exec("sha256sum", f"{store}/current.gguf").split()[0] == model["sha256"]
    assert not (tmp_path / "cache" / "models").exists() or \
        not any((tmp_path / "cache" / "models").iterdir())
    status, body = http_json(f"http://127.0.0.1:{device.http_port}/completion",
                             {"prompt": "Hi", "n_predict": 2, "ignore_eos": True})
    assert status == 200 and body["tokens_predicted"] == 2

    again = deploy(inv)
    assert again.code == 0 and again.changed(HOST) == 0, again.output[-3000:]
    assert _state(port)["bytes_sent"] == sent
