"""A controller with an empty cache (another laptop, a cleared ~/.cache) against a fleet that is
up: nothing changes on a converged device, and the image archive is saved into the cache
only when a device that lacks the image needs it (saved from one that holds it, not built)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llama_docker.device.gguf_header import HEADER_BYTES
from llama_docker.device.image import build_args, image_tag
from llama_docker.knobs import lock as rules
from llama_docker.knobs.lock import Lock, ModelPin, Pin
from llama_docker.tasks import image_once
from llama_docker.tasks import lock as run_lock
from llama_docker.transfer import local_model, lockfile
from llama_docker.transfer.image_archive import DeviceImage, ImageCache
from tests.lab.tiny_model import write_tiny_gguf

from .fixtures.harness import (
    MODEL_SHA,
    UI_SHA,
    converged,
    deploy_fixture,
    knobs,
    load_fixture,
    run_deploy,
    ui_served,
)
from .fixtures.image_cache import IMAGE_ID
from .test_image_once import write_archive

TAG = image_tag(build_args("docker.io/library/debian:forky-slim", True))
MODELS = "/var/lib/llama-docker/models"


def test_a_converged_device_and_an_empty_cache_make_no_operation(tmp_path: Path) -> None:
    first = deploy_fixture(tmp_path, "arch", webui_sha256=UI_SHA)
    image_once._holders.clear()
    facts = {
        **converged(first, user="root", group="root"), **ui_served(tmp_path),
        "PacmanPackages": {"docker": ["1:28.3.3-1"], "curl": ["8.11.1-1"]},
        "SystemdStatus(*)": {"docker.service": True, "llama-docker.service": True},
        "SystemdEnabled(*)": {"docker.service": True, "llama-docker.service": True},
        f"ImageId(docker,{TAG})": f"sha256:{IMAGE_ID}",
        f"Directory({MODELS})": {"mode": 755, "user": "me", "group": "me"},
        f"StoreState({MODELS})": {"files": [f"{MODEL_SHA}.gguf", f"{MODEL_SHA}.ok"],
                                   "links": {"current.gguf": f"{MODEL_SHA}.gguf"}},
        "HttpStatus(*)": 200}
    laptop = tmp_path / "another-laptop"  # the same model file; its cache empty
    laptop.mkdir()
    again = deploy_fixture(laptop, "arch", facts=facts, webui_sha256=UI_SHA)
    assert again.ops == []  # no save into the cache, no restart, no health wait
    assert not (laptop / "cache" / "images").exists()
    (holders,) = image_once._holders.values()  # noted, for a device that lacks the image
    assert [(h.name, n.tag, n.arch) for h, n in holders] == [("arch.local", TAG, "arm64")]


# --- the archive, when a device that lacks the image needs it --------------------------------


@dataclass
class FakeHost:
    name: str
    data: dict = field(default_factory=dict)
    said: list[str] = field(default_factory=list)

    def log_styled(self, message: str, **_: Any) -> None:
        self.said.append(message)


def _need(tmp_path: Path) -> image_once.Need:
    return image_once.Need(tag=TAG, arch="amd64", runtime="docker", sudo=False, user="pi",
                           build_dir="/b", stage_build="build", images_dir="/i",
                           hash_cmd="sha256sum", cache_dir=str(tmp_path / "cache"), aes=True)


@pytest.fixture()
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Two devices: `holder` has the image (the run left it alone), `bare` lacks it. Saving
    writes a real archive; building and receiving are recorded, not run."""
    image_once._holders.clear()
    holder, bare = FakeHost("holder"), FakeHost("bare")
    got: dict[str, Any] = {"saved_from": [], "built_on": [], "received_on": []}
    image_id = write_archive(tmp_path / "src.tar")
    held = DeviceImage(image_id=image_id, layers=(), version="v")
    images = {"holder": held}

    def device_image(host: FakeHost, need: image_once.Need) -> DeviceImage | None:
        return images.get(host.name)

    def save(host: FakeHost, need: image_once.Need, have: DeviceImage, cache: ImageCache
             ) -> tuple[Any, str, float]:
        got["saved_from"].append(host.name)
        part = cache.part(need.tag, need.arch)
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes((tmp_path / "src.tar").read_bytes())
        return cache.add(need.tag, need.arch, part, "a" * 64, host.name), "a" * 64, 0.1

    def build(host: FakeHost, need: image_once.Need, why: str) -> tuple[DeviceImage, float]:
        got["built_on"].append(host.name)
        images[host.name] = held
        return held, 1.0

    def receive(host: FakeHost, need: image_once.Need, entry: Any, cache: ImageCache) -> None:
        got["received_on"].append(host.name)
        images[host.name] = held

    monkeypatch.setattr(image_once, "device_image", device_image)
    monkeypatch.setattr(image_once, "_save", save)
    monkeypatch.setattr(image_once, "_build", build)
    monkeypatch.setattr(image_once, "_receive", receive)
    return {"holder": holder, "bare": bare, "got": got}


def test_a_device_lacking_the_image_gets_the_holders_not_a_build(tmp_path: Path,
                                                                 fleet: dict) -> None:
    need = _need(tmp_path)
    image_once.holds(fleet["holder"], need)
    assert image_once.ensure(None, fleet["bare"], need)
    assert fleet["got"] == {"saved_from": ["holder"], "built_on": [], "received_on": ["bare"]}
    assert ImageCache(tmp_path / "cache").lookup(TAG, "amd64").made_on == "holder"
    assert any("on holder, which holds it," in line for line in fleet["bare"].said)


def test_without_a_holder_the_first_device_builds_as_before(tmp_path: Path,
                                                             fleet: dict) -> None:
    need = _need(tmp_path)
    assert image_once.ensure(None, fleet["bare"], need)
    assert fleet["got"] == {"saved_from": ["bare"], "built_on": ["bare"], "received_on": []}


# --- the model, when every device holds it verified ------------------------------------------


def _model_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, bytes, str]:
    monkeypatch.setattr(local_model, "_seen", {})  # one process, one controller: not here
    path = tmp_path / "src" / "tiny.gguf"
    path.parent.mkdir(parents=True)
    sha = write_tiny_gguf(path, seed=7, n_embd=128, n_ff=256, n_head=4)
    data = path.read_bytes()
    return ({"name": "tiny", "url": "http://models.lan/tiny.gguf", "sha256": sha,
             "size": len(data)}, data, sha)


def _unit(run: Any) -> str:
    return next(text for op in run.ops for dest, text in op.uploads.items()
                if dest.endswith("llama-docker.service"))


def test_a_model_every_device_holds_is_not_downloaded(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The same unit (memory cap included: the shape is read from the device's copy) as
    from a controller that has the file, and no request made for it."""
    knob, data, sha = _model_url(tmp_path, monkeypatch)
    cached = tmp_path / "cache" / "models" / f"{sha}.gguf"  # a laptop that has run before
    cached.parent.mkdir(parents=True)
    cached.write_bytes(data)
    cached.with_name(cached.name + ".ok").write_text(sha + "\n")
    held_here = {f"StoreState({MODELS})": {"files": [f"{sha}.gguf", f"{sha}.ok"],
                                           "links": {"current.gguf": f"{sha}.gguf"}}}
    before = run_deploy("debian.local", knobs(ssh_user="me", model=knob,
                                              cache_dir=str(tmp_path / "cache")),
                        {**load_fixture("debian"), **held_here})

    def no_fetch(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was downloaded")

    monkeypatch.setattr(local_model, "fetch", no_fetch)
    monkeypatch.setattr(local_model.hubauth, "session", no_fetch)  # not even a HEAD
    knob = {k: v for k, v in knob.items() if k != "size"}  # the size: from the device too
    empty = tmp_path / "another-laptop"
    header = {f"StoredHeader({MODELS},{sha})": {"size": len(data),
                                                 "header": data[:HEADER_BYTES]}}
    with caplog.at_level(logging.INFO):
        after = run_deploy("debian.local", knobs(ssh_user="me", model=knob,
                                                 cache_dir=str(empty)),
                           {**load_fixture("debian"), **held_here, **header})
    assert _unit(after) == _unit(before) and "--memory" in _unit(after)
    assert not [n for n in after.names() if "Push" in n]
    assert not (empty / "models").exists()
    assert "tiny.gguf: verified on this device already" in caplog.text


@pytest.fixture
def lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / rules.FILENAME
    monkeypatch.setenv(lockfile.ENV, str(path))
    run_lock.forget()
    yield path
    run_lock.forget()


def test_a_model_the_lock_file_pins_and_the_device_holds_is_not_downloaded(
        tmp_path: Path, lock_file: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The knob names a hub file with no sha256: the lock file's is known without the
    network, so a device holding that file verified needs nothing from the hub, not even
    the HEAD that would resolve the sha256."""
    _, data, sha = _model_url(tmp_path, monkeypatch)
    url = "https://huggingface.co/x/y/resolve/main/tiny.gguf"
    lock_file.write_text(rules.dumps(Lock(models={"tiny": ModelPin(Pin(url, sha, len(data)))})))

    def no_fetch(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was downloaded")

    monkeypatch.setattr(local_model, "fetch", no_fetch)
    monkeypatch.setattr(local_model.hubauth, "session", no_fetch)
    facts = {**load_fixture("debian"),
             f"StoreState({MODELS})": {"files": [f"{sha}.gguf", f"{sha}.ok"],
                                       "links": {"current.gguf": f"{sha}.gguf"}},
             f"StoredHeader({MODELS},{sha})": {"size": len(data),
                                                "header": data[:HEADER_BYTES]}}
    empty = tmp_path / "another-laptop"
    with caplog.at_level(logging.INFO):
        run = run_deploy("debian.local", knobs(ssh_user="me", model={"name": "tiny", "url": url},
                                               cache_dir=str(empty)), facts)
    assert not run.names()[0].startswith("Preflight | Refuse"), run.names()
    assert not [n for n in run.names() if "Push" in n]
    assert not (empty / "models").exists()
    assert "tiny.gguf: verified on this device already" in caplog.text


def test_a_device_without_the_model_still_gets_it_downloaded(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    knob, data, sha = _model_url(tmp_path, monkeypatch)
    fetched = []

    def fetch(url: str, dest: Path, sha256: str, **_: Any) -> None:
        fetched.append(url)
        dest.write_bytes(data)

    monkeypatch.setattr(local_model, "fetch", fetch)
    run = run_deploy("debian.local", knobs(ssh_user="me", model=knob,
                                           cache_dir=str(tmp_path / "cache")),
                     load_fixture("debian"))
    assert fetched == ["http://models.lan/tiny.gguf"]
    assert [n for n in run.names() if "Push" in n]
