"""llama.cpp's own web UI on a device serving several models (router mode): its model picker
lists the set by name (screenshot: docs/webui-models.png), and a model that fails to load is
answered in the page with its error instead of a spinner (llama.cpp #19885).

The lab cannot reach GitHub, where the UI's release tarball is (the `webui = "upstream"` knob),
so this module takes a built llama.cpp UI from LLAMA_DOCKER_UI (a folder with index.html, or a
.tar.gz) and deploys it with the webui knob given as that path; without it the module is
skipped. The browser is Debian's /usr/bin/chromium driven by playwright-core from npm
(tests/e2e/webui_models.cjs), found through NODE_PATH: `npm install playwright-core` in a
folder outside the repository, NODE_PATH=that/node_modules; without it the module is skipped.
One device, tests in file order.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, deploy, fresh_device, http_json, inventory, write_knobs
from tests.e2e.test_several_models import _model, _unknown_architecture
from tests.lab import lab

pytestmark = pytest.mark.lab
HOST = "e2e-webui-models"
SCREENSHOT = REPO / "docs" / "webui-models.png"
DRIVER = Path(__file__).with_name("webui_models.cjs")
NAMES = ("tiny-chat", "tiny-wide", "tiny-deep")


@pytest.fixture(scope="module")
def ui_source() -> str:
    source = os.environ.get("LLAMA_DOCKER_UI", "")
    if not source:
        pytest.skip("LLAMA_DOCKER_UI names no built llama.cpp web UI (the lab cannot fetch one)")
    assert Path(source).exists(), f"LLAMA_DOCKER_UI={source} does not exist"
    return source


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if not found or subprocess.run([found, "-e", "require.resolve('playwright-core')"],
                                   capture_output=True, timeout=60).returncode != 0:
        pytest.skip("node with playwright-core (npm) through NODE_PATH is needed")
    return found


device = fresh_device(HOST, index=91)


@pytest.fixture(scope="module")
def inv(ui_source: str, node: str, device: lab.Device,
        tmp_path_factory: pytest.TempPathFactory) -> Path:
    return inventory(tmp_path_factory.mktemp("inv"), [device]).parent


@pytest.fixture(scope="module")
def models(inv: Path) -> dict[str, dict]:
    return {
        "tiny-chat": _model(inv, "tiny-chat", seed=51),
        "tiny-wide": _model(inv, "tiny-wide", seed=52, n_embd=128, n_ff=256),
        "tiny-deep": _model(inv, "tiny-deep", seed=53, n_layer=4),
        "broken": _unknown_architecture(inv),
    }


def deploy_ok(inv: Path, **knobs: object) -> None:
    write_knobs(inv, **knobs)
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]


def browse(node: str, device: lab.Device, names: list[str], png: Path, **job: object) -> dict:
    url = f"http://127.0.0.1:{device.http_port}/"
    proc = subprocess.run(
        [node, str(DRIVER), json.dumps({"url": url, "names": names, "png": str(png), **job})],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["outside"] == [], result["outside"]  # the page asks only the device
    return result


def test_the_picker_lists_the_set_by_name(ui_source: str, node: str, device: lab.Device,
                                          inv: Path, models: dict, tmp_path: Path) -> None:
    deploy_ok(inv, models=[models[n] for n in NAMES], models_max=1, webui=ui_source)
    status, props = http_json(f"http://127.0.0.1:{device.http_port}/props")
    assert status == 200 and props["role"] == "router", props
    shot = tmp_path / "webui-models.png"
    result = browse(node, device, list(NAMES), shot)
    assert sorted(result["options"]) == sorted(NAMES), result
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)


def test_a_model_that_fails_to_load_shows_its_error_not_a_spinner(
        ui_source: str, node: str, device: lab.Device, inv: Path, models: dict,
        tmp_path: Path) -> None:
    """Fault: the picker's choice is a model llama.cpp refuses | Seen: the message sent gets a
    dialog naming the failure within 30 s (llama.cpp #19885: a spinner forever) | Left: the
    other models answer"""
    names = [*NAMES, "broken"]
    deploy_ok(inv, models=[models[n] for n in names], models_max=1, webui=ui_source)
    result = browse(node, device, names, tmp_path / "broken.png", pick="broken", send="Hello",
                    wait_s=30)
    assert result["dialog"] and "broken failed to load" in result["dialog"], result
    status, reply = http_json(f"http://127.0.0.1:{device.http_port}/v1/chat/completions",
                              {"model": "tiny-chat", "max_tokens": 2,
                               "messages": [{"role": "user", "content": "Hello"}]}, timeout=120)
    assert status == 200 and reply["model"] == "tiny-chat", reply
