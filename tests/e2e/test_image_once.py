"""One server image per CPU architecture: built once, the same bits on every device.

Two fresh Debian devices with docker in one run (one build, counted), a third added later
that gets the cached archive (its first push cut half-way), and a damaged archive refused
while the old server keeps serving. The third is a SteamOS device: the archive `docker save`
wrote on a Debian device is what rootless podman loads there, as user deck, with no build and
no package manager, and podman reports the same image ID (the sha256 of the image's config,
which a load does not rewrite). A fourth runs Debian testing's docker with the containerd
image store, which names images by manifest: the same archive loads there, the same layers.
Every device here is amd64: the arm64 image cannot run in an emulated device
(tests/e2e/test_arm64.py says why).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from llama_docker.device.image import image_tag, pinned_build_args
from llama_docker.transfer.image_archive import ImageCache
from tests.conftest import deploy, http_json, inventory, make_model, wait_healthy, write_knobs
from tests.lab import images, lab

pytestmark = pytest.mark.lab
NAMES = ("e2e-img-1", "e2e-img-2")
LATER = "e2e-img-3"
TESTING = "e2e-img-4"
IMAGES = "/var/lib/llama-docker/images"
STORE = "/var/lib/llama-docker/models"
DECK_IMAGES = "/home/deck/.local/share/llama-docker/images"
LABEL = "org.llama-docker.llama-cpp-version"
BASE = "docker.io/library/debian:forky-slim"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One controller for the whole module: its cache is what the later devices get."""
    path = tmp_path_factory.mktemp("img")
    write_knobs(path, model=make_model(path, "tiny-img", seed=81))
    return path


@pytest.fixture(scope="module")
def pair(device_image: str) -> Iterator[list[lab.Device]]:
    devs = [lab.start_device(n, device_image, index=80 + i, fresh=True)
            for i, n in enumerate(NAMES)]
    yield devs
    for d in devs:
        lab.remove_device(d)


@pytest.fixture(scope="module")
def later(lab_ready: None) -> Iterator[lab.Device]:
    """A SteamOS device: rootless podman as deck, no package manager (tests/e2e/test_steamos)."""
    dev = lab.start_device(LATER, images.build_steamos(), index=82, fresh=True,
                           profile="steamos")
    yield dev
    lab.remove_device(dev)


@pytest.fixture(scope="module")
def testing(device_image: str) -> Iterator[lab.Device]:
    """A Debian device that takes new packages from Debian testing (forky), with docker's
    containerd image store switched on in its daemon.json before docker is there."""
    dev = lab.start_device(TESTING, device_image, index=83, fresh=True)
    dev.write("/etc/apt/sources.list.d/forky.list",
              b"deb http://deb.debian.org/debian forky main\n")
    # What is installed from now on comes from testing (the lab's snapshot of it has expired).
    dev.write("/etc/apt/apt.conf.d/90lab-forky", b'Acquire::Check-Valid-Until "false";\n'
                                                 b'APT::Default-Release "forky";\n')
    dev.exec("mkdir", "-p", "/etc/docker")
    dev.write("/etc/docker/daemon.json", b'{"features": {"containerd-snapshotter": true}}\n')
    yield dev
    lab.remove_device(dev)


def cached(folder: Path, rebuild: str = "") -> dict:
    """The controller cache's index entry for the lab's knobs (and a rebuild mark)."""
    tag = image_tag(pinned_build_args(BASE, False, rebuild=rebuild))
    entry = ImageCache(folder / "cache").lookup(tag, "amd64")
    assert entry is not None, f"no {tag} in the controller cache"
    return asdict(entry)


def image_of(dev: lab.Device, tag: str) -> tuple[str, str]:
    out = dev.exec("docker", "image", "inspect", "--format",
                   f'{{{{.Id}}}} {{{{index .Config.Labels "{LABEL}"}}}}', tag)
    image_id, _, version = out.strip().partition(" ")
    return image_id.removeprefix("sha256:"), version


def as_deck(dev: lab.Device, *cmd: str, check: bool = True) -> str:
    return dev.exec("runuser", "-u", "deck", "--", "env", "XDG_RUNTIME_DIR=/run/user/1000",
                    *cmd, check=check)


def podman_image_of(dev: lab.Device, tag: str) -> tuple[str, str]:
    out = as_deck(dev, "podman", "image", "inspect", "--format",
                  f'{{{{.Id}}}} {{{{index .Config.Labels "{LABEL}"}}}}', tag)
    image_id, _, version = out.strip().partition(" ")
    return image_id.removeprefix("sha256:"), version


def has_base(dev: lab.Device) -> bool:
    """The build's base image: on a device only if a build ran there."""
    return dev.exec("docker", "image", "inspect", BASE, check=False).strip() not in ("", "[]")


def serves(dev: lab.Device) -> bool:
    status, body = http_json(f"http://127.0.0.1:{dev.http_port}/completion",
                             {"prompt": "Hi", "n_predict": 3, "ignore_eos": True})
    return status == 200 and body.get("tokens_predicted") == 3


def running_image(dev: lab.Device) -> str:
    return dev.exec("docker", "inspect", "--format", "{{.Image}}", "llama").strip() \
        .removeprefix("sha256:")


def test_two_devices_one_build_same_image(pair: list[lab.Device], folder: Path) -> None:
    inv = inventory(folder, pair)
    run = deploy(inv)
    assert run.code == 0, run.output[-4000:]
    # One build: its first line (a slow build adds progress lines, "building ...: 30 s, ...").
    builds = re.findall(r"building llama-docker/server:\S+ for \S+ on this device", run.output)
    assert len(builds) == 1, run.output[-4000:]
    entry = cached(folder)
    assert [has_base(d) for d in pair].count(True) == 1  # one build, on one device
    assert entry["made_on"] in NAMES and entry["version"]
    for dev in pair:
        assert image_of(dev, entry["tag"]) == (entry["image_id"], entry["version"])
        assert serves(dev)
    receiver = next(d for d in pair if d.name != entry["made_on"])
    assert f"[{receiver.name}] loaded {entry['tag']}" in run.output
    assert receiver.exec("ls", "-A", IMAGES).strip() == ""  # the archive is not kept
    # The model moved while the image was made: stored and verified on the receiver before
    # its image was even loaded (it waited for the other device's build and save).
    marker = receiver.exec("sh", "-c", f"ls {STORE}/*.ok").split()[0]
    stored_at = float(receiver.exec("date", "-r", marker, "+%s.%N"))
    tagged_at = int(receiver.exec("docker", "image", "inspect", "-f",
                                  "{{.Metadata.LastTagTime.UnixNano}}", entry["tag"])) / 1e9
    assert stored_at < tagged_at, (marker, stored_at, tagged_at)

    again = deploy(inv)
    assert again.code == 0, again.output[-3000:]
    for dev in pair:
        assert again.changed(dev.name) == 0, again.output[-3000:]


def test_steamos_added_later_loads_the_same_archive_resumed(
        pair: list[lab.Device], later: lab.Device, folder: Path) -> None:
    """Fault: the image archive's push to a SteamOS device is cut half-way | Seen: `resumed
    from byte N` | Left: rootless podman (user deck) loads the archive a Debian device's
    docker saved, under the same image ID; nothing built, no package manager called"""
    entry = cached(folder)
    data = Path(entry["path"]).read_bytes()
    part = f"{DECK_IMAGES}/{entry['sha256']}.tar.part"
    as_deck(later, "mkdir", "-p", DECK_IMAGES)
    later.write(part, data[:len(data) // 2])
    later.exec("chown", "deck:deck", part)
    run = deploy(inventory(folder, [*pair, later]))
    assert run.code == 0, run.output[-4000:]
    assert "building llama-docker/server:" not in run.output
    assert f"[{LATER}] loaded {entry['tag']}" in run.output
    assert f"resumed from byte {len(data) // 2}; sha256 verified before the load" in run.output
    assert later.exec("cat", "/var/log/lab-forbidden.log", check=False).strip() == ""
    # No build ran there: the build's base image never reached deck's podman.
    assert as_deck(later, "sh", "-c", f"podman image exists {BASE}; echo $?").strip() == "1"
    assert podman_image_of(later, entry["tag"]) == (entry["image_id"], entry["version"])
    assert as_deck(later, "ls", "-A", DECK_IMAGES).strip() == ""  # the archive is not kept
    users = later.exec("ps", "-C", "llama-server", "-o", "user=").split()
    assert users and set(users) == {"deck"}
    assert serves(later)
    for dev in pair:
        assert run.changed(dev.name) == 0, run.output[-3000:]


def test_flipped_byte_refused_old_server_serving(pair: list[lab.Device], folder: Path) -> None:
    """Fault: a byte of the image archive flipped on its way to the device | Seen: `... on
    the device hashes X, expected Y` | Left: nothing loaded, the old server still serving"""
    old = cached(folder)
    builder = next(d for d in pair if d.name == old["made_on"])
    other = next(d for d in pair if d is not builder)
    # A rebuild (a new value of image_rebuild), made on the builder only.
    write_knobs(folder, model=make_model(folder, "tiny-img", seed=81), image_rebuild="r2")
    made = deploy(inventory(folder, [builder]))
    assert made.code == 0, made.output[-4000:]
    new = cached(folder, rebuild="r2")
    assert new["image_id"] != old["image_id"]
    data = bytearray(Path(new["path"]).read_bytes())
    data[len(data) // 3] ^= 0xFF
    other.exec("install", "-d", "-o", other.user, IMAGES)
    other.write(f"{IMAGES}/{new['sha256']}.tar.part", bytes(data))  # whole, one byte off
    other.exec("chown", other.user, f"{IMAGES}/{new['sha256']}.tar.part")
    before = running_image(other)
    run = deploy(inventory(folder, [other]))
    assert run.code != 0
    assert "on the device hashes " in run.output and f"expected {new['sha256']}" in run.output
    assert other.exec("docker", "image", "inspect", new["tag"], check=False).strip() in ("", "[]")
    assert other.exec("ls", "-A", IMAGES).strip() == ""  # the bad copy is deleted
    assert running_image(other) == before
    wait_healthy(other.http_port, 30)
    assert serves(other)

    fixed = deploy(inventory(folder, [other]))  # the next run sends it whole and loads it
    assert fixed.code == 0, fixed.output[-4000:]
    assert image_of(other, new["tag"]) == (new["image_id"], new["version"])
    wait_healthy(other.http_port, 120)
    assert serves(other)


def test_podman_builds_and_docker_loads_the_same_image(
        pair: list[lab.Device], later: lab.Device, folder: Path) -> None:
    """The other way round: rootless podman (SteamOS) builds a new image and saves it, a
    Debian device's docker loads that archive: the same image ID and llama.cpp version on
    both, both serve, no build on the docker device. The tag goes on by ID, so docker names
    it as the deploy does, not as podman did (`localhost/...`)."""
    write_knobs(folder, model=make_model(folder, "tiny-img", seed=81), image_rebuild="r3")
    made = deploy(inventory(folder, [later]))
    assert made.code == 0, made.output[-4000:]
    assert f"[{LATER}] building llama-docker/server:" in made.output, made.output[-4000:]
    entry = cached(folder, rebuild="r3")
    assert entry["made_on"] == LATER
    assert podman_image_of(later, entry["tag"]) == (entry["image_id"], entry["version"])
    dev = pair[0]
    run = deploy(inventory(folder, [dev]))
    assert run.code == 0, run.output[-4000:]
    assert "building llama-docker/server:" not in run.output
    assert f"[{dev.name}] loaded {entry['tag']}" in run.output
    assert image_of(dev, entry["tag"]) == (entry["image_id"], entry["version"])
    assert running_image(dev) == entry["image_id"]
    for d in (later, dev):
        wait_healthy(d.http_port, 120)
        assert serves(d)


def test_containerd_image_store_loads_the_same_layers(testing: lab.Device, folder: Path
                                                      ) -> None:
    """Debian testing's docker (its client a package of its own, which the deploy installs)
    with the containerd image store names a loaded image by a manifest digest, not the
    config's: the deploy knows the archive's image there by its layers. The archive of Debian
    12's docker loads, nothing built; serves; a second run changes nothing."""
    write_knobs(folder, model=make_model(folder, "tiny-img", seed=81))
    entry = cached(folder)  # the first test's image, saved by Debian 12's docker
    inv = inventory(folder, [testing])
    run = deploy(inv)
    assert run.code == 0, run.output[-4000:]
    installed = testing.exec("dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "docker.io",
                             "docker-cli")
    versions = dict(line.split() for line in installed.splitlines())
    assert set(versions) == {"docker.io", "docker-cli"}, installed
    assert int(versions["docker.io"].split(".")[0]) >= 28, installed
    assert "io.containerd.snapshotter" in testing.exec("docker", "info", "--format",
                                                        "{{json .DriverStatus}}")
    assert "building llama-docker/server:" not in run.output and not has_base(testing)
    assert f"[{TESTING}] loaded {entry['tag']}" in run.output
    out = testing.exec("docker", "image", "inspect", "--format",
                       '{{.Id}} {{json .RootFS.Layers}}', entry["tag"])
    image_id, layers = out.strip().split(" ", 1)
    assert image_id.removeprefix("sha256:") != entry["image_id"]  # a manifest's digest
    assert tuple(x.removeprefix("sha256:") for x in json.loads(layers)) == entry["layers"]
    wait_healthy(testing.http_port, 120)
    assert serves(testing)
    again = deploy(inv)
    assert again.code == 0 and again.changed(TESTING) == 0, again.output[-3000:]


def test_containerd_image_store_builds_after_a_load(pair: list[lab.Device], testing: lab.Device,
                                                    folder: Path) -> None:
    """Fault: the containerd image store builds a rebuild when its only image is one it
    loaded, which holds the base's layer (the store then pulls the base without that layer's
    content) | Seen: `... was built, but docker cannot read its layers ...: run sudo
    systemctl stop llama-docker && sudo docker image prune -a -f on the device` | Left: the
    server still serving; after the named commands the next run builds, and Debian 12's
    docker loads that archive under the config's ID"""
    write_knobs(folder, model=make_model(folder, "tiny-img", seed=81), image_rebuild="r4")
    inv = inventory(folder, [testing])
    run = deploy(inv)
    assert run.code != 0
    line = next((x for x in run.output.splitlines() if "cannot read its layers" in x), "")
    assert "sudo systemctl stop llama-docker && sudo docker image prune -a -f" in line, \
        run.output[-3000:]
    assert serves(testing)
    testing.exec("sh", "-c", "systemctl stop llama-docker && docker image prune -a -f")
    fixed = deploy(inv)
    assert fixed.code == 0, fixed.output[-4000:]
    assert f"[{TESTING}] building llama-docker/server:" in fixed.output
    entry = cached(folder, rebuild="r4")
    assert entry["made_on"] == TESTING and entry["layers"]
    dev = pair[0]
    run = deploy(inventory(folder, [dev]))
    assert run.code == 0, run.output[-4000:]
    assert f"[{dev.name}] loaded {entry['tag']}" in run.output
    assert image_of(dev, entry["tag"]) == (entry["image_id"], entry["version"])
    for d in (testing, dev):
        wait_healthy(d.http_port, 120)
        assert serves(d)
