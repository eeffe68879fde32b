"""The lock file, `llama-docker.lock` beside the inventory: a first deploy writes it; later
runs take every model file from it and ask nothing outside the home, the model's host
stopped or serving other bytes under the same URL; only an upgrade asked for
(`--data lock_upgrade=True`) takes the new file, and redeploys it. A knob that differs from
the lock updates its entry; a dry run never writes it; a corrupt one is named and kept.

One fresh device and a stand-in Hugging Face (the lab's fault server, at a fixed port so it
can stop and come back at the same URL), used in file order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import (
    Run,
    deploy,
    free_port,
    fresh_device,
    inventory,
    old_and_new_models,
    sha256_of,
    wait_healthy,
    write_knobs,
)
from tests.lab import lab
from tests.lab.fault_server import FaultServer

pytestmark = pytest.mark.lab
HOST = "e2e-lock"
PATH = "/lab/tiny-GGUF/resolve/main/tiny-lock.gguf"
STORE = "/var/lib/llama-docker/models"
NAME = "tiny-lock"

device = fresh_device(HOST, index=43)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return old_and_new_models(tmp_path_factory.mktemp("m"), (43, 44))


@pytest.fixture(scope="module")
def hub(models: dict[str, bytes]) -> FaultServer:
    srv = FaultServer({PATH: models["old"]}, port=free_port()).start()
    srv.hub(PATH, sha256=sha256_of(models["old"]), size=len(models["old"]))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def endpoint(hub: FaultServer) -> str:
    """HF_ENDPOINT for the runs: the URL counts as Hugging Face's, so it needs no sha256."""
    return hub.url("").rstrip("/")


@pytest.fixture(scope="module")
def inv(device: lab.Device, hub: FaultServer, tmp_path_factory: pytest.TempPathFactory
        ) -> Path:
    folder = tmp_path_factory.mktemp("inv")
    inventory(folder, [device])
    write_knobs(folder, model={"name": NAME, "url": hub.url(PATH)})
    return folder


def run(inv: Path, endpoint: str, *extra: str) -> Run:
    return deploy(inv / "inventory.py", *extra, env={"HF_ENDPOINT": endpoint})


def lock_of(inv: Path) -> Path:
    return inv / "llama-docker.lock"


def current(device: lab.Device) -> str:
    return device.exec("readlink", f"{STORE}/current.gguf").strip()


def summary(out: str) -> str:
    return out[out.index("--> llama-docker summary"):]


def test_a_first_deploy_writes_the_lock(device: lab.Device, inv: Path, hub: FaultServer,
                                        endpoint: str, models: dict[str, bytes]) -> None:
    assert not lock_of(inv).exists()
    result = run(inv, endpoint)
    assert result.code == 0, result.output[-4000:]
    old = sha256_of(models["old"])
    assert f"llama-docker.lock: {NAME}: added (sha256 {old[:12]}" in result.output
    assert f"llama-docker.lock: written: {lock_of(inv)}" in result.output
    text = lock_of(inv).read_text()
    lock = json.loads(text)
    assert text == json.dumps(lock, indent=2, sort_keys=True) + "\n"  # sorted, stable
    assert lock["version"] == 1
    assert lock["models"][NAME] == {"url": hub.url(PATH), "sha256": old,
                                    "size": len(models["old"])}
    (image,) = lock["images"].values()  # the lab device's one CPU architecture
    assert image["tag"].startswith("llama-docker/server:")
    assert re.fullmatch(r"[0-9a-f]{64}", image["image_id"])
    assert image["llama_cpp"]
    assert current(device) == f"{old}.gguf"
    wait_healthy(device.http_port)


def test_the_next_run_with_the_hub_down_asks_nothing_and_changes_nothing(
        inv: Path, hub: FaultServer, endpoint: str) -> None:
    """Offline with a warm cache: no HEAD for the sha256, nothing downloaded, nothing changed."""
    before, text = hub.requests, lock_of(inv).read_text()
    hub.stop()
    try:
        result = run(inv, endpoint)
    finally:
        hub.start()  # the same port: the same URL
    assert result.code == 0, result.output[-4000:]
    assert result.changed(HOST) == 0, result.output[-4000:]
    assert "HEAD failed" not in result.output and "Traceback" not in result.output
    assert "llama-docker.lock:" not in result.output  # nothing new to say
    assert hub.requests == before
    assert lock_of(inv).read_text() == text


def test_other_bytes_at_the_same_url_change_nothing_until_an_upgrade(
        device: lab.Device, inv: Path, hub: FaultServer, endpoint: str,
        models: dict[str, bytes]) -> None:
    old, new = sha256_of(models["old"]), sha256_of(models["new"])
    hub.put(PATH, models["new"])
    hub.hub(PATH, sha256=new, size=len(models["new"]))
    before, text = hub.requests, lock_of(inv).read_text()
    result = run(inv, endpoint)
    assert result.code == 0, result.output[-4000:]
    assert result.changed(HOST) == 0, result.output[-4000:]
    assert hub.requests == before  # not even a HEAD
    assert current(device) == f"{old}.gguf"
    assert lock_of(inv).read_text() == text

    result = run(inv, endpoint, "--data", "lock_upgrade=True")
    assert result.code == 0, result.output[-4000:]
    assert (f"llama-docker.lock: {NAME}: upgraded, sha256 {old[:12]} -> {new[:12]}"
            in result.output), result.output[-4000:]
    assert hub.stats(PATH).head >= 1
    assert current(device) == f"{new}.gguf"
    entry = json.loads(lock_of(inv).read_text())["models"][NAME]
    assert entry == {"url": hub.url(PATH), "sha256": new, "size": len(models["new"])}
    wait_healthy(device.http_port)

    before = hub.requests
    again = run(inv, endpoint)
    assert again.code == 0 and again.changed(HOST) == 0, again.output[-4000:]
    assert hub.requests == before


def test_a_knob_that_differs_from_the_lock_updates_its_entry(
        device: lab.Device, inv: Path, hub: FaultServer, endpoint: str,
        models: dict[str, bytes]) -> None:
    """The model knob pins the first file's sha256 and size (the file is still in the
    controller's cache): the knob wins over the lock, the device goes back to it, and the
    run says so in one line."""
    old, new = sha256_of(models["old"]), sha256_of(models["new"])
    write_knobs(inv, model={"name": NAME, "url": hub.url(PATH), "sha256": old,
                            "size": len(models["old"])})
    try:
        result = run(inv, endpoint)
    finally:
        write_knobs(inv, model={"name": NAME, "url": hub.url(PATH)})
    assert result.code == 0, result.output[-4000:]
    line = (f"llama-docker.lock: {NAME}: the knob's sha256 {old[:12]} differs from the lock's "
            f"{new[:12]}: updated")
    assert result.output.count(line) == 1, result.output[-4000:]
    assert current(device) == f"{old}.gguf"
    assert json.loads(lock_of(inv).read_text())["models"][NAME]["sha256"] == old
    wait_healthy(device.http_port)


def test_a_dry_run_never_writes_the_lock(inv: Path, endpoint: str) -> None:
    kept = lock_of(inv).read_text()
    lock_of(inv).unlink()
    try:
        result = run(inv, endpoint, "--dry")
        assert result.code == 0, result.output[-4000:]
        assert "llama-docker.lock: not written (--dry)" in result.output
        assert not lock_of(inv).exists()
    finally:
        lock_of(inv).write_text(kept)


def test_a_corrupt_lock_is_named_in_one_line_and_left_as_it_is(inv: Path,
                                                               endpoint: str) -> None:
    kept = lock_of(inv).read_text()
    broken = kept.replace('"version": 1', '"version": 1,,')  # a merge gone wrong
    assert broken != kept
    lock_of(inv).write_text(broken)
    try:
        result = run(inv, endpoint)
        assert result.code != 0
        line = f"{lock_of(inv)} is not a lock file llama-docker can read: not valid JSON"
        assert re.search(rf"{HOST}\s+REFUSED\s+{re.escape(line)}", summary(result.output)), \
            result.output[-4000:]
        assert "Traceback" not in result.output
        assert lock_of(inv).read_text() == broken  # nothing lost, nothing written over it
    finally:
        lock_of(inv).write_text(kept)
