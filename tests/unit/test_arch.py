"""Arch Linux / Manjaro: what the deploy runs on a Pinebook Pro, from fact fixtures.

The real tasks run against a fake host (tests/unit/fixtures/arch.json): pacman installs only
what is missing, never apt; docker.service is enabled and started; the server's systemd unit
is byte for byte the one the Debian path writes (tests/unit/fixtures/debian.json).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llama_docker.device.daemon_json import BACKUP, with_mirror
from llama_docker.device.image import build_args, image_tag
from llama_docker.tasks.runtime.rootful import PODMAN_MIRROR, registries_conf

from .fixtures.harness import (
    MODEL_SHA,
    Run,
    check_golden,
    converged,
    deploy_fixture,
    ui_served,
)
from .fixtures.image_cache import IMAGE_ID, seed_image_cache

TAG = image_tag(build_args("docker.io/library/debian:forky-slim", True))
UNIT = "/etc/systemd/system/llama-docker.service"
DEBIAN_ONLY = ("apt", "dpkg", "DEBIAN_FRONTEND")
DOCKER = {"SystemdStatus(*)": {}, "SystemdEnabled(*)": {}}


def no_debian_tools(run: Run) -> None:
    for command in run.commands():
        assert not any(word in command for word in DEBIAN_ONLY), command
    assert not [key for key, _, _ in run.facts if key.startswith("Deb")]


def test_golden_command_list(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "arch")
    assert not run.missing, f"facts the fixture does not answer: {run.missing}"
    check_golden(run, "arch-docker", {TAG: "<image>"})


def test_docker_from_pacman_as_root(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "arch")
    op = run.op("Container runtime | Install docker")
    assert op.commands == ["pacman --noconfirm -S docker"] and op.sudo
    assert not [c for c in run.commands() if c.startswith("pacman -Sy")]  # no partial upgrade
    no_debian_tools(run)


def test_docker_service_enabled_and_started(tmp_path: Path) -> None:
    op = deploy_fixture(tmp_path, "arch").op("Container runtime | docker runs now")
    assert op.commands == ["systemctl start docker.service", "systemctl enable docker.service"]
    assert op.sudo


def test_missing_curl_is_installed_with_the_runtime(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "arch", facts={"PacmanPackages": {"systemd": ["257"]}})
    assert run.op("Container runtime | Install docker").commands == [
        "pacman --noconfirm -S docker curl"]


def test_installed_runtime_is_not_installed_again(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "arch", facts={
        "PacmanPackages": {"docker": ["1:28.3.3-1"], "curl": ["8.11.1-1"]}})
    assert not [c for c in run.commands() if c.startswith("pacman")]
    assert not [key for key, _, _ in run.facts if key.startswith("PacmanUnpackGroup")]


def test_registry_mirror_goes_to_daemon_json_and_restarts_docker(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "arch", registry_mirror="mirror.lan:5000")
    assert json.loads(run.upload("/etc/docker/daemon.json")) == {
        "registry-mirrors": ["http://mirror.lan:5000"], "insecure-registries": ["mirror.lan:5000"]}
    assert run.upload("/etc/docker/daemon.json") == with_mirror(None, "mirror.lan:5000")
    assert run.op("Container runtime | Merge the registry mirror").sudo
    assert not [c for c in run.commands() if BACKUP in c]  # there was nothing to keep
    assert run.op("Container runtime | docker runs now").commands[0] == (
        "systemctl start docker.service")  # not running yet: started with the mirror


USERS = '{"log-driver": "local", "log-opts": {"max-size": "10m"}}'
DAEMON = "TextFile(/etc/docker/daemon.json)"


def test_users_daemon_json_is_kept_once_then_merged(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "arch", registry_mirror="mirror.lan:5000",
                         facts={DAEMON: ["file", USERS]})
    names = run.names()
    keep, merge = (names.index(n) for n in (
        f"Container runtime | Keep the previous daemon.json once as {BACKUP}",
        "Container runtime | Merge the registry mirror into docker's daemon.json"))
    assert keep < merge
    assert run.op("Container runtime | Keep").commands == [
        f"[ -e {BACKUP} ] || cp -p /etc/docker/daemon.json {BACKUP}"]
    assert json.loads(run.upload("/etc/docker/daemon.json")) == {
        "log-driver": "local", "log-opts": {"max-size": "10m"},
        "registry-mirrors": ["http://mirror.lan:5000"], "insecure-registries": ["mirror.lan:5000"]}
    assert not [c for c in run.op("Container runtime | Merge").commands if "chmod" in c]


def test_daemon_json_with_the_mirror_is_left_alone_and_docker_not_restarted(tmp_path: Path
                                                                            ) -> None:
    merged = with_mirror(USERS, "mirror.lan:5000")
    run = deploy_fixture(tmp_path, "arch", registry_mirror="mirror.lan:5000", facts={
        DAEMON: ["file", merged], "PacmanPackages": {"docker": ["1"], "curl": ["1"]},
        "SystemdStatus(*)": {"docker.service": True},
        "SystemdEnabled(*)": {"docker.service": True}})
    assert not [n for n in run.names() if n.startswith("Container runtime")]
    assert not [c for c in run.commands() if c.endswith(" docker.service")]


def test_invalid_daemon_json_refuses_the_host_before_anything(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "arch", registry_mirror="mirror.lan:5000",
                         facts={DAEMON: ["file", '{"log-driver": "local",']})
    (op,) = run.ops
    assert op.calls[0]["message"].startswith("/etc/docker/daemon.json is not valid JSON")


@pytest.mark.parametrize("runtime", ["docker", "podman"])
def test_unit_is_exactly_the_debian_one(tmp_path: Path, runtime: str) -> None:
    arch = deploy_fixture(tmp_path, "arch", runtime=runtime)
    debian = deploy_fixture(tmp_path, "debian", runtime=runtime)
    assert arch.upload(UNIT) == debian.upload(UNIT)
    service = [op for op in arch.ops if op.name.startswith("Service |")]
    assert service == [op for op in debian.ops if op.name.startswith("Service |")]
    assert f"ExecStart=/usr/bin/{runtime} run --rm --name llama" in arch.upload(UNIT)


def test_podman_from_pacman_no_docker_service(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "arch", runtime="podman")
    assert not run.missing, f"facts the fixture does not answer: {run.missing}"
    assert run.op("Container runtime | Install podman").commands == [
        "pacman --noconfirm -S podman"]
    assert not [c for c in run.commands() if c.endswith(" docker.service")]
    assert "Requires=docker.service" not in run.upload(UNIT)
    need = run.op("Server image | Server image").calls[0]["need"]
    assert need.stage_build.startswith("podman build ") and need.sudo
    no_debian_tools(run)


def test_podman_registry_mirror_drop_in(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "arch", runtime="podman", registry_mirror="mirror.lan:5000")
    assert run.upload(PODMAN_MIRROR) == registries_conf("mirror.lan:5000")
    assert run.op("Container runtime | Pull docker.io through the registry mirror").sudo


def test_native_is_refused_on_arch(tmp_path: Path) -> None:
    (op,) = deploy_fixture(tmp_path, "arch", runtime="native").ops
    assert op.name == "Preflight | Refuse this host"
    assert op.calls[0]["message"] == ("runtime 'native' is for macOS; "
                                      "use 'docker' or 'podman' here")


def test_clock_years_behind_refused_before_any_change(tmp_path: Path) -> None:
    behind = int(time.time()) - 2383 * 86400
    (op,) = deploy_fixture(tmp_path, "arch", facts={"DeviceClock": behind}).ops
    message = op.calls[0]["message"]
    assert message.startswith("the device clock is 2383 days behind this controller (")
    assert message.endswith("): enable NTP (timedatectl set-ntp true) or set the date")


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    first = deploy_fixture(tmp_path, "arch")
    seed_image_cache(tmp_path / "cache", TAG, "arm64")
    models = "/var/lib/llama-docker/models"
    again = deploy_fixture(tmp_path, "arch", facts={
        **converged(first, user="root", group="root"), **ui_served(tmp_path),
        "PacmanPackages": {"docker": ["1:28.3.3-1"], "curl": ["8.11.1-1"]},
        "SystemdStatus(*)": {"docker.service": True, "llama-docker.service": True},
        "SystemdEnabled(*)": {"docker.service": True, "llama-docker.service": True},
        f"ImageId(docker,{TAG})": f"sha256:{IMAGE_ID}",
        f"Directory({models})": {"mode": 755, "user": "me", "group": "me"},
        f"StoreState({models})": {"files": [f"{MODEL_SHA}.gguf", f"{MODEL_SHA}.ok"],
                                   "links": {"current.gguf": f"{MODEL_SHA}.gguf"}},
        "HttpStatus(*)": 200})
    assert again.ops == []
    assert again.trips == 2  # who the device is, what it holds: one command each


def test_bad_knob_refused_naming_it_once(tmp_path: Path) -> None:
    (op,) = deploy_fixture(tmp_path, "arch", port=70000).ops
    # pyinfra prefixes every line with the host: the message itself does not repeat it
    assert op.calls[0]["message"] == ("knob port=70000 is invalid: expected a whole "
                                      "number from 1 to 65535")
