"""The lock and the bundle from the `llama-docker` command: a first deploy says what its
image build is doing while it runs; `deploy --upgrade=NAME` takes the new bytes under the same
URL (and `plan --upgrade` only says so); `bundle` writes the lock and every cached file it
names into one archive, and `deploy --from` on another controller, with the model's host
gone, puts it all on a device that has nothing: the model pushed and the server image loaded
from that archive, no build, no request outside, the same lock on both controllers.

One fresh device, a stand-in Hugging Face (the lab's fault server, at a fixed port), two
controller folders (two caches), used in file order.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    Run,
    free_port,
    fresh_device,
    old_and_new_models,
    own_known_hosts,
    sha256_of,
    wait_healthy,
    write_knobs,
)
from tests.lab import lab
from tests.lab.fault_server import FaultServer

pytestmark = pytest.mark.lab
HOST = "e2e-bundle"
PATH = "/lab/tiny-GGUF/resolve/main/tiny-bundle.gguf"
STORE = "/var/lib/llama-docker/models"
NAME = "tiny-bundle"
MAIN = "import sys; from llama_docker.tasks.cli import main; sys.exit(main())"

device = fresh_device(HOST, index=47)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return old_and_new_models(tmp_path_factory.mktemp("m"), (47, 48))


@pytest.fixture(scope="module")
def hub(models: dict[str, bytes]) -> FaultServer:
    srv = FaultServer({PATH: models["old"]}, port=free_port()).start()
    srv.hub(PATH, sha256=sha256_of(models["old"]), size=len(models["old"]))
    yield srv
    srv.stop()


def controller(device: lab.Device, hub: FaultServer, folder: Path) -> Path:
    """A user's folder: an inventory of the device (its own known_hosts) and the knobs."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "inventory.py").write_text(
        f"lab = {[(HOST, own_known_hosts(folder, device))]!r}\n")
    write_knobs(folder, model={"name": NAME, "url": hub.url(PATH)})
    return folder


@pytest.fixture(scope="module")
def first(device: lab.Device, hub: FaultServer, tmp_path_factory: pytest.TempPathFactory
          ) -> Path:
    return controller(device, hub, tmp_path_factory.mktemp("first"))


@pytest.fixture(scope="module")
def laptop(device: lab.Device, hub: FaultServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Path:
    """Another controller: the same inventory, an empty cache, no lock."""
    return controller(device, hub, tmp_path_factory.mktemp("laptop"))


def llama_docker(folder: Path, hub: FaultServer, *args: str, **env: str) -> Run:
    """The checkout's `llama-docker`, run in `folder` (the hub's URL counts as Hugging
    Face's, so the model needs no sha256; a generated key would go to the folder)."""
    proc = subprocess.run([sys.executable, "-c", MAIN, *args], cwd=folder,
                          capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "HF_ENDPOINT": hub.url("").rstrip("/"),
                               "XDG_CONFIG_HOME": str(folder / "config"), **env})
    return Run(proc.returncode, proc.stdout + proc.stderr)


def current(device: lab.Device) -> str:
    return device.exec("readlink", f"{STORE}/current.gguf").strip()


def lock(folder: Path) -> dict:
    return json.loads((folder / "llama-docker.lock").read_text())


def test_a_first_deploy_says_what_its_build_is_doing(device: lab.Device, hub: FaultServer,
                                                     first: Path, models: dict) -> None:
    """The lab's build takes seconds: the interval is one second here (a lab hook), 30 s
    for a user. The line comes from the build's output read as it runs, over SSH."""
    result = llama_docker(first, hub, "deploy", "inventory.py", "-y",
                          LLAMA_DOCKER_PROGRESS_EVERY="1")
    assert result.code == 0, result.output[-4000:]
    assert re.search(rf"\[{HOST}\] building llama-docker/server:[0-9a-f]{{12}} for \w+: "
                     r"\d+ s, \S", result.output), result.output[-6000:]
    assert current(device) == f"{sha256_of(models['old'])}.gguf"
    assert lock(first)["models"][NAME]["sha256"] == sha256_of(models["old"])
    wait_healthy(device.http_port)


def test_upgrade_takes_the_new_bytes_and_plan_upgrade_only_says_so(
        device: lab.Device, hub: FaultServer, first: Path, models: dict) -> None:
    old, new = sha256_of(models["old"]), sha256_of(models["new"])
    hub.put(PATH, models["new"])
    hub.hub(PATH, sha256=new, size=len(models["new"]))
    text = (first / "llama-docker.lock").read_text()
    said = f"llama-docker.lock: {NAME}: upgraded, sha256 {old[:12]} -> {new[:12]}"

    plan = llama_docker(first, hub, "plan", "--upgrade", "inventory.py")
    assert plan.code == 0, plan.output[-4000:]
    assert said in plan.output and "llama-docker.lock: not written (--dry)" in plan.output
    assert (first / "llama-docker.lock").read_text() == text
    assert current(device) == f"{old}.gguf"

    result = llama_docker(first, hub, "deploy", f"--upgrade={NAME}", "inventory.py", "-y")
    assert result.code == 0, result.output[-4000:]
    assert said in result.output, result.output[-4000:]
    assert current(device) == f"{new}.gguf"
    assert lock(first)["models"][NAME]["sha256"] == new
    wait_healthy(device.http_port)


def test_a_bundle_deploys_from_a_controller_with_no_internet(
        device: lab.Device, hub: FaultServer, first: Path, laptop: Path, models: dict,
        tmp_path: Path) -> None:
    bundle = tmp_path / "fleet.tar"
    made = llama_docker(first, hub, "bundle", str(bundle), "inventory.py")
    assert made.code == 0 and bundle.is_file(), made.output
    assert f"llama-docker: wrote {bundle}" in made.output

    gone = llama_docker(first, hub, "remove", "--purge", "inventory.py", "-y")
    assert gone.code == 0, gone.output[-4000:]
    assert device.exec("sh", "-c", f"ls {STORE} 2>/dev/null || true", check=False).strip() == ""

    before = hub.requests
    hub.stop()  # the laptop has no internet
    try:
        result = llama_docker(laptop, hub, "deploy", "--from", str(bundle), "inventory.py",
                              "-y")
        assert result.code == 0, result.output[-6000:]
        assert "every file checked against its lock" in result.output
        assert "building llama-docker/server" not in result.output, result.output[-6000:]
        assert re.search(rf"\[{HOST}\] loaded llama-docker/server:", result.output), \
            result.output[-6000:]
        assert current(device) == f"{sha256_of(models['new'])}.gguf"
        assert lock(laptop) == lock(first)
        (image,) = lock(laptop)["images"].values()
        held = device.exec("docker", "image", "inspect", "--format", "{{.Id}}", image["tag"])
        assert held.strip().removeprefix("sha256:") == image["image_id"]
        wait_healthy(device.http_port)

        again = llama_docker(laptop, hub, "deploy", "inventory.py", "-y")
        assert again.code == 0 and again.changed(HOST) == 0, again.output[-4000:]
    finally:
        hub.start()
    assert hub.requests == before
