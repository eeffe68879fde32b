"""GPU through Vulkan, proven end to end with the lab's software Vulkan device (lavapipe).

There is no GPU here. ggml's Vulkan backend skips CPU-type devices such as lavapipe unless
GGML_VK_VISIBLE_DEVICES names one: the tests name it in the controller's environment
(LLAMA_DOCKER_LAB_VK_VISIBLE_DEVICES, read by tasks/gpu.py: the lab's hook, no knob, never a
product default). The lab devices have no /dev/dri, so `gpu = "vulkan"` is forced on one
device; a `gpu = "off"` device beside it keeps the small CPU image. Speed is not claimed:
lavapipe is a software rasteriser.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llama_docker.tasks.gpu import LAB_VISIBLE
from tests.conftest import REPO, Run, deploy, fresh_device, http_json, make_model, write_knobs
from tests.lab import lab

pytestmark = pytest.mark.lab
VK = "e2e-gpu-vulkan"
OFF = "e2e-gpu-off"
LAB_ENV = {LAB_VISIBLE: "0"}  # lavapipe is Vulkan device 0 here

vk_device = fresh_device(VK, index=60)
off_device = fresh_device(OFF, index=61)


def write_inventory(folder: Path, vk: lab.Device, off: lab.Device, vk_knobs: dict,
                    off_knobs: dict) -> Path:
    path = folder / "inventory.py"
    hosts = [(vk.name, {**vk.host_data(), **vk_knobs}), (off.name, {**off.host_data(),
                                                                      **off_knobs})]
    path.write_text(f"lab = {hosts!r}\n")
    return path


@pytest.fixture(scope="module")
def inv(vk_device: lab.Device, off_device: lab.Device,
        tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inv")
    write_knobs(folder, model=make_model(folder, "tiny-gpu", seed=60))
    return write_inventory(folder, vk_device, off_device, {"gpu": "vulkan"}, {"gpu": "off"})


@pytest.fixture(scope="module")
def first_run(inv: Path) -> Run:
    return deploy(inv, env=LAB_ENV)


def status_rows(inv: Path) -> dict[str, dict]:
    proc = subprocess.run([sys.executable, "status.py", str(inv), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    return {row["host"]: row for row in json.loads(proc.stdout)}


def server_log(device: lab.Device) -> str:
    return device.exec("sh", "-c", "docker logs llama 2>&1")


def deployed_on_cpu(inv: Path) -> Run:
    """A run that succeeds with the Vulkan device on the CPU, said in the entrypoint's line."""
    run = deploy(inv)
    assert run.code == 0, run.output[-4000:]
    assert re.search(rf"\[{VK}\]\s+llama-docker: gpu vulkan was asked, the server runs on "
                     "the CPU: llama-docker: gpu vulkan: llama-server sees no Vulkan device; "
                     "serving on the CPU", run.output), run.output[-4000:]
    return run


def test_converges_and_says_the_choice(first_run: Run) -> None:
    assert first_run.code == 0, first_run.output[-4000:]
    out = first_run.output
    assert re.search(rf"\[{VK}\]\s+gpu vulkan \(no render node: only a software Vulkan "
                     "device", out), out[-4000:]
    assert re.search(rf"\[{OFF}\]\s+gpu off \(the gpu knob\)", out), out[-4000:]
    assert re.search(rf"\[{VK}\]\s+llama-docker: gpu vulkan serves on Vulkan0: llvmpipe .*, "
                     r"3/3 layers offloaded", out), out[-4000:]


def test_vulkan_device_serves_through_vulkan(vk_device: lab.Device, first_run: Run) -> None:
    log = server_log(vk_device)
    assert re.search(r"using device Vulkan0 \(llvmpipe", log), log[-3000:]
    assert "offloaded 3/3 layers to GPU" in log, log[-3000:]  # all layers: the knob's default
    status, body = http_json(f"http://127.0.0.1:{vk_device.http_port}/completion",
                             {"prompt": "Hello", "n_predict": 4, "ignore_eos": True}, timeout=120)
    assert status == 200 and body["tokens_predicted"] == 4


def test_off_device_keeps_the_small_cpu_image(vk_device: lab.Device, off_device: lab.Device,
                                               first_run: Run) -> None:
    vk_pkg = vk_device.exec("docker", "exec", "llama", "dpkg", "-s", "libggml0-backend-vulkan",
                            check=False)
    assert "Status: install ok installed" in vk_pkg
    off_pkg = off_device.exec("docker", "exec", "llama", "dpkg", "-s",
                              "libggml0-backend-vulkan", check=False)
    assert "Status: install ok installed" not in off_pkg
    sizes = [int(d.exec("docker", "inspect", "-f", "{{.Size}}", d.exec(
        "docker", "inspect", "-f", "{{.Config.Image}}", "llama").strip()).strip())
        for d in (vk_device, off_device)]
    assert sizes[1] < sizes[0], sizes
    assert "Vulkan" not in server_log(off_device)
    status, _ = http_json(f"http://127.0.0.1:{off_device.http_port}/completion",
                          {"prompt": "Hello", "n_predict": 4}, timeout=60)
    assert status == 200


def test_status_names_the_backend(inv: Path, first_run: Run) -> None:
    rows = status_rows(inv)
    assert rows[VK]["backend"] == "vulkan", rows[VK]
    assert rows[VK]["gpu_device"].startswith("Vulkan0: llvmpipe"), rows[VK]
    assert rows[OFF]["backend"] == "cpu" and rows[OFF]["gpu_device"] is None, rows[OFF]
    table = subprocess.run([sys.executable, "status.py", str(inv)], cwd=REPO,
                           capture_output=True, text=True, timeout=300).stdout
    assert re.search(rf"^{VK} .* vulkan$", table, re.M), table


def test_second_run_changes_nothing(inv: Path, first_run: Run) -> None:
    again = deploy(inv, env=LAB_ENV)
    assert again.code == 0, again.output[-3000:]
    assert again.changed(VK) == 0 and again.changed(OFF) == 0, again.output[-3000:]


def test_vulkan_without_a_visible_device_falls_back_to_cpu(
        inv: Path, vk_device: lab.Device, off_device: lab.Device, first_run: Run) -> None:
    """Fault: gpu 'vulkan' where llama-server sees no Vulkan device (lavapipe without the
    lab-only override) | Seen: `gpu vulkan was asked, the server runs on the CPU: llama-docker:
    gpu vulkan: llama-server sees no Vulkan device; serving on the CPU`; the run succeeds |
    Left: the server answers on the CPU, status says cpu. Beside it, `gpu = "auto"` on a device
    without /dev/dri chooses the CPU and changes nothing."""
    write_inventory(inv.parent, vk_device, off_device, {"gpu": "vulkan"}, {"gpu": "auto"})
    run = deployed_on_cpu(inv)
    assert re.search(rf"\[{OFF}\]\s+gpu off \(no render node\)", run.output), \
        run.output[-4000:]
    assert run.changed(OFF) == 0, run.output[-3000:]
    status, body = http_json(f"http://127.0.0.1:{vk_device.http_port}/completion",
                             {"prompt": "Hello", "n_predict": 4, "ignore_eos": True}, timeout=60)
    assert status == 200 and body["tokens_predicted"] == 4
    assert status_rows(inv)[VK]["backend"] == "cpu"


def test_several_models_serve_through_vulkan_too(
        inv: Path, vk_device: lab.Device, off_device: lab.Device, first_run: Run) -> None:
    """A set of two models on the Vulkan device: the router starts through the image's
    entrypoint like one model does, and hands its GPU arguments (the knob's layers) and its
    environment (the lab's visible device) to each model's server: both models load on
    Vulkan with every layer offloaded, and the run says which device serves."""
    folder = inv.parent
    models = [make_model(folder, "tiny-gpu", seed=60), make_model(folder, "tiny-gpu-b", seed=62)]
    write_knobs(folder, models=models, models_max=1)
    write_inventory(folder, vk_device, off_device, {"gpu": "vulkan"}, {"gpu": "off"})
    run = deploy(inv, env=LAB_ENV)
    assert run.code == 0, run.output[-4000:]
    assert re.search(rf"\[{VK}\]\s+llama-docker: gpu vulkan serves on Vulkan0: llvmpipe .*, "
                     r"3/3 layers offloaded", run.output), run.output[-4000:]
    assert "--entrypoint" not in vk_device.exec("cat", "/etc/systemd/system/llama-docker.service")
    for name in ("tiny-gpu", "tiny-gpu-b"):
        status, body = http_json(f"http://127.0.0.1:{vk_device.http_port}/v1/completions",
                                 {"model": name, "prompt": "Hello", "max_tokens": 4},
                                 timeout=120)
        assert status == 200 and body["usage"]["completion_tokens"] == 4, body
    log = server_log(vk_device)
    assert len(re.findall(r"offloaded 3/3 layers to GPU", log)) >= 2, log[-3000:]


def test_several_models_without_a_visible_device_fall_back_to_cpu(
        inv: Path, vk_device: lab.Device, off_device: lab.Device, first_run: Run) -> None:
    """Fault: gpu 'vulkan' for a set of models where llama-server sees no Vulkan device |
    Seen: the entrypoint's one line, as for one model; the run succeeds | Left: each model
    answers on the CPU (no layer offloaded)."""
    write_inventory(inv.parent, vk_device, off_device, {"gpu": "vulkan"}, {"gpu": "off"})
    deployed_on_cpu(inv)
    status, body = http_json(f"http://127.0.0.1:{vk_device.http_port}/v1/completions",
                             {"model": "tiny-gpu-b", "prompt": "Hello", "max_tokens": 4},
                             timeout=120)
    assert status == 200 and body["usage"]["completion_tokens"] == 4, body
    assert "layers to GPU" not in server_log(vk_device)
