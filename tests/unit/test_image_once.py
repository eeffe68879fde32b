"""The server image made once: its archive read and filed by image ID, the pins as build
args, the knobs that set them, and the commands that build and label it."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from llama_docker.device.image import (
    VERSION_LABEL,
    build_args,
    image_tag,
    pinned_build_args,
    snapshot_url,
)
from llama_docker.device.store import images_dir
from llama_docker.knobs import config
from llama_docker.knobs.defaults import DEFAULTS
from llama_docker.knobs.errors import ConfigError, LlamaDockerError
from llama_docker.transfer import image_ship
from llama_docker.transfer.image_archive import (
    CachedImage,
    DeviceImage,
    ImageCache,
    inspect_archive,
    plain_id,
)
from llama_docker.transfer.image_ship import build_script, load_command, save_via_ssh, stage_tag

BASE = "docker.io/library/debian:forky-slim"
TAG = "llama-docker/server:0123456789ab"
LAYER = hashlib.sha256(b"\0" * 1024).hexdigest()


def write_archive(path: Path, arch: str = "amd64", version: str = "1:0.7.0+dfsg-2",
                  name: str | None = None) -> str:
    """A docker-archive as `docker save` writes it: manifest.json naming the config by its
    sha256, the config, a layer. Returns the image ID."""
    cfg = json.dumps({"architecture": arch, "os": "linux",
                      "config": {"Labels": {VERSION_LABEL: version}},
                      "rootfs": {"type": "layers", "diff_ids": [f"sha256:{LAYER}"]}}).encode()
    image_id = hashlib.sha256(cfg).hexdigest()
    members = {f"{name or image_id}.json": cfg, "layer.tar": b"\0" * 1024,
               "manifest.json": json.dumps([{"Config": f"{name or image_id}.json",
                                             "RepoTags": [TAG],
                                             "Layers": ["layer.tar"]}]).encode()}
    with tarfile.open(path, "w") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return image_id


def test_archive_says_its_image_id_arch_and_version(tmp_path: Path) -> None:
    image_id = write_archive(tmp_path / "a.tar", arch="arm64")
    info = inspect_archive(tmp_path / "a.tar")
    assert (info.image_id, info.arch, info.version) == (image_id, "arm64", "1:0.7.0+dfsg-2")
    assert info.layers == (LAYER,)


def entry(image_id: str, layers: tuple[str, ...]) -> CachedImage:
    return CachedImage(tag=TAG, arch="amd64", image_id=image_id, sha256="0" * 64, size=1,
                       version="v", made_on="pi", path="/x.tar", layers=layers)


@pytest.mark.parametrize(("line", "holds"), [
    (f"sha256:{'c' * 64}|sha256:{'1' * 64},sha256:{'2' * 64},|v", True),  # its own config ID
    (f"{'c' * 64}|{'1' * 64},{'2' * 64},|v", True),  # podman: bare hex
    # docker's containerd image store: a manifest's digest, the archive's layers
    (f"sha256:{'d' * 64}|sha256:{'1' * 64},sha256:{'2' * 64},|v", True),
    (f"sha256:{'d' * 64}|sha256:{'1' * 64},|v", False),  # a layer short
    (f"sha256:{'d' * 64}|sha256:{'2' * 64},sha256:{'1' * 64},|v", False),  # another order
    (f"sha256:{'c' * 64}", True),  # an ID alone (the form of older fact fixtures)
    (f"sha256:{'d' * 64}", False),
])
def test_a_device_holds_the_archive_by_config_or_by_layers(line: str, holds: bool) -> None:
    have = DeviceImage.parse(line)
    assert have is not None and have.holds(entry("c" * 64, ("1" * 64, "2" * 64))) is holds


def test_an_index_without_layers_matches_by_config_only() -> None:
    have = DeviceImage.parse(f"sha256:{'d' * 64}||v")
    assert have is not None and have.layers == () and have.version == "v"
    assert not have.holds(entry("c" * 64, ()))
    assert DeviceImage.parse("") is None and DeviceImage.parse(None) is None


def test_archive_whose_config_is_not_its_name_refused(tmp_path: Path) -> None:
    write_archive(tmp_path / "a.tar", name="f" * 64)
    with pytest.raises(LlamaDockerError, match="hashes"):
        inspect_archive(tmp_path / "a.tar")


def test_truncated_archive_refused(tmp_path: Path) -> None:
    write_archive(tmp_path / "a.tar")
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:700])
    with pytest.raises(LlamaDockerError, match="not a readable image archive"):
        inspect_archive(tmp_path / "cut.tar")


def test_cache_files_by_image_id_and_finds_by_tag_and_arch(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    part = cache.part(TAG, "amd64")
    part.parent.mkdir(parents=True)
    image_id = write_archive(part)
    entry = cache.add(TAG, "amd64", part, "a" * 64, "pi.local")
    assert Path(entry.path) == tmp_path / "images" / f"{image_id}.tar"
    assert not part.exists()
    assert cache.lookup(TAG, "amd64") == entry and entry.layers == (LAYER,)
    assert cache.lookup(TAG, "arm64") is None  # another architecture: another image
    index = cache.index(TAG, "amd64")  # written before layers were recorded: still found
    index.write_text(json.dumps({k: v for k, v in json.loads(index.read_text()).items()
                                 if k != "layers"}))
    assert cache.lookup(TAG, "amd64") == replace(entry, layers=())
    cache.forget(TAG, "amd64")
    assert cache.lookup(TAG, "amd64") is None and not Path(entry.path).exists()


def test_cache_refuses_an_archive_of_another_arch(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    part = cache.part(TAG, "arm64")
    part.parent.mkdir(parents=True)
    write_archive(part, arch="amd64")
    with pytest.raises(LlamaDockerError, match="holds a amd64 image, not arm64"):
        cache.add(TAG, "arm64", part, "a" * 64, "pi.local")


def test_cache_entry_without_its_archive_is_no_entry(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path)
    part = cache.part(TAG, "amd64")
    part.parent.mkdir(parents=True)
    write_archive(part)
    entry = cache.add(TAG, "amd64", part, "a" * 64, "pi.local")
    Path(entry.path).unlink()
    assert cache.lookup(TAG, "amd64") is None


def test_unpinned_tag_is_unchanged_pins_and_rebuild_make_new_tags() -> None:
    plain = image_tag(build_args(BASE, True))
    assert image_tag(pinned_build_args(BASE, True)) == plain
    tags = {image_tag(pinned_build_args(BASE, True, llama_cpp_version="1:0.7.0+dfsg-2")),
            image_tag(pinned_build_args(BASE, True, debian_snapshot="20250601T000000Z")),
            image_tag(pinned_build_args(BASE, True, rebuild="2"))}
    assert len(tags) == 3 and plain not in tags


def test_snapshot_date_becomes_a_snapshot_debian_org_url() -> None:
    assert snapshot_url("20250601T000000Z") == \
        "http://snapshot.debian.org/archive/debian/20250601T000000Z"
    assert snapshot_url("http://snap.lan/archive/debian/20250601/") == \
        "http://snap.lan/archive/debian/20250601"
    assert snapshot_url("") == ""
    args = pinned_build_args(BASE, True, debian_snapshot="20250601")
    assert args["DEBIAN_SNAPSHOT_URL"] == "http://snapshot.debian.org/archive/debian/20250601"


def test_containerfile_takes_the_pins() -> None:
    text = (Path(__file__).resolve().parents[2] / "files" / "Containerfile").read_text()
    for arg in ("LLAMA_CPP_VERSION", "DEBIAN_SNAPSHOT_URL", "REBUILD"):
        assert f"ARG {arg}=" in text
    assert '"llama.cpp-tools${LLAMA_CPP_VERSION:+=$LLAMA_CPP_VERSION}"' in text


@pytest.mark.parametrize(("knob", "good", "bad"), [
    ("llama_cpp_version", "1:0.7.0+dfsg-2", "0.7 ; rm"),
    ("debian_snapshot", "20250601T000000Z", "yesterday"),
    ("debian_snapshot", "http://snap.lan/archive/debian/20250601", "ftp://x"),
    ("image_rebuild", "2025-06", "two words"),
    ("image_source", "device", "each"),
])
def test_pin_knobs_checked(knob: str, good: str, bad: str) -> None:
    assert getattr(config.load({**DEFAULTS, knob: good}), knob) == good
    with pytest.raises(ConfigError, match=f"knob {knob}="):
        config.load({**DEFAULTS, knob: bad}, host="pi")


def test_build_script_labels_the_version_dpkg_installed() -> None:
    script = build_script("docker", "DOCKER_BUILDKIT=0 docker build -t X-stage ctx", TAG, "/b")
    assert script.startswith("set -e; DOCKER_BUILDKIT=0 docker build -t X-stage ctx; ")
    assert f"--entrypoint dpkg-query {stage_tag(TAG)} -W -f '${{Version}}' llama.cpp-tools" \
        in script
    assert f'LABEL {VERSION_LABEL}="%s"' in script
    assert f"DOCKER_BUILDKIT=0 docker build -t {TAG} -f /b/Labelfile /b" in script
    assert script.endswith(f"docker rmi {stage_tag(TAG)} >/dev/null")


def test_image_ids_compare_across_runtimes() -> None:
    assert plain_id("sha256:" + "a" * 64) == plain_id("a" * 64) == "a" * 64
    assert plain_id(None) is None


def test_archives_land_beside_the_model_store() -> None:
    assert images_dir("/var/lib/llama-docker/models") == "/var/lib/llama-docker/images"
    assert images_dir("/home/deck/.local/share/llama-docker/models/") == \
        "/home/deck/.local/share/llama-docker/images"


def fake_runtime(tmp_path: Path, loaded: str, load_code: int = 0) -> Path:
    """A `rt` whose load prints `loaded` and whose tag writes its arguments to tagged."""
    rt = tmp_path / "rt"
    rt.write_text(f'#!/bin/sh\ncase "$1" in\n  load) printf "%s\\n" "{loaded}"; '
                  f'exit {load_code};;\n  tag) echo "$2 $3" > {tmp_path}/tagged;;\nesac\n')
    rt.chmod(0o755)
    return rt


@pytest.mark.parametrize(("loaded", "tagged_from"), [
    (f"Loaded image: {TAG}", TAG),  # docker
    (f"Loaded image: localhost/{TAG}", f"localhost/{TAG}"),  # podman's name, loaded by either
    (f"Loaded image(s): localhost/{TAG},localhost/other:1", f"localhost/{TAG}"),  # podman 3
    (f"Loaded image ID: sha256:{'e' * 64}", "f" * 64),  # no name: the config's ID
])
def test_load_tags_the_image_it_loaded(tmp_path: Path, loaded: str, tagged_from: str) -> None:
    rt = fake_runtime(tmp_path, loaded)
    proc = subprocess.run(["sh", "-c", load_command(str(rt), "/x/ab.tar", "f" * 64, TAG)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "tagged").read_text().split() == [tagged_from, TAG]


def test_failed_load_tags_nothing(tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "Error: payload does not match any of the supported formats", 125)
    proc = subprocess.run(["sh", "-c", load_command(str(rt), "/x/ab.tar", "f" * 64, TAG)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 125 and not (tmp_path / "tagged").exists()


# `sh -c` stands in for the OpenSSH client: save_via_ssh runs [*ssh_argv, command].
def test_save_via_ssh_writes_and_hashes_the_stream(tmp_path: Path) -> None:
    part = tmp_path / "images" / "x.tar.part"
    data = b"archive bytes " * 100_000
    (tmp_path / "src").write_bytes(data)
    sha = save_via_ssh(["sh", "-c"], f"cat {tmp_path / 'src'}", None, part)
    assert sha == hashlib.sha256(data).hexdigest() and part.read_bytes() == data


def test_save_via_ssh_feeds_the_sudo_password_on_stdin(tmp_path: Path) -> None:
    part = tmp_path / "x.tar.part"
    save_via_ssh(["sh", "-c"], 'read pw; printf %s "$pw"', "s3cret", part)
    assert part.read_bytes() == b"s3cret"


def test_save_via_ssh_failure_leaves_no_part(tmp_path: Path) -> None:
    part = tmp_path / "x.tar.part"
    with pytest.raises(LlamaDockerError, match="failed: no such image"):
        save_via_ssh(["sh", "-c"], "printf half; echo no such image >&2; exit 1", None, part)
    assert not part.exists()


def test_save_via_ssh_that_stalls_is_ended_and_leaves_no_part(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """A save that sends some bytes, then nothing on a live link (a runtime stuck on its
    disk): ended after the stall time, not waited on for ever."""
    monkeypatch.setattr(image_ship, "STALL_SECONDS", 1)
    part = tmp_path / "x.tar.part"
    started = time.monotonic()
    with pytest.raises(LlamaDockerError, match="failed: no byte came for 1 s"):
        save_via_ssh(["sh", "-c"], "printf half; exec sleep 60", None, part)
    assert time.monotonic() - started < 10 and not part.exists()
