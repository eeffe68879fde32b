"""Debian-family hosts set up by their users: the docker engine they installed from apt (used,
never replaced), docker from a snap and an OS whose packages are 32-bit on a 64-bit kernel
(both refused before any change).
Pure logic and the fixture of a Raspberry Pi (tests/unit/fixtures/debian.json)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llama_docker.device.apt import update_waiting
from tasks.runtime.debian import engine
from tests.unit.fixtures.harness import deploy_fixture

DOCKER_CE = {"docker-ce": {"5:27.3.1-1~debian.12~bookworm"}, "containerd.io": {"1.7.22-1"},
             "curl": {"7.88.1-10"}}


@pytest.mark.parametrize(("installed", "expected"), [
    ({}, "docker.io"),
    ({"docker.io": {"20.10.24"}}, "docker.io"),
    (DOCKER_CE, "docker-ce"),
    ({"moby-engine": {"27.3.1"}}, "moby-engine"),
    ({"docker-ce-cli": {"5:27.3.1"}}, "docker.io"),  # a client alone is no engine
])
def test_engine(installed: dict[str, set[str]], expected: str) -> None:
    assert engine(installed) == expected


def test_docker_ce_is_not_replaced(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "debian", {"DebPackages": DOCKER_CE})
    assert not [n for n in run.names() if n.startswith("Container runtime | Install")]
    assert not [c for op in run.ops for c in op.commands if "apt-get" in c]


def test_docker_io_installed_where_there_is_no_engine(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "debian")
    refresh = run.op("Container runtime | Refresh the package lists").commands
    assert refresh == [update_waiting()]
    install = run.op("Container runtime | Install docker").commands
    assert install[-1].endswith(" install --no-install-recommends -o DPkg::Lock::Timeout=300 "
                                "docker.io"), install


def test_32bit_packages_on_a_64bit_kernel_refused_before_any_change(tmp_path: Path) -> None:
    (op,) = deploy_fixture(tmp_path, "debian", {"PackageArch": "armhf"}).ops
    assert op.name == "Preflight | Refuse this host"
    assert op.calls[0]["message"] == (
        "this OS is 32-bit (armhf packages on a 64-bit aarch64 kernel): the server image is "
        "arm64; install the 64-bit OS (on a Raspberry Pi: Raspberry Pi OS (64-bit))")


def test_docker_from_a_snap_refused_before_any_change(tmp_path: Path) -> None:
    (op,) = deploy_fixture(tmp_path, "debian", {"PathExists(/snap/bin/docker)": True}).ops
    assert op.name == "Preflight | Refuse this host"
    assert op.calls[0]["message"] == (
        "docker is installed as a snap (/snap/bin/docker), which cannot mount the model store "
        "(/var/lib/llama-docker/models): remove it (sudo snap remove docker) or set runtime "
        '= "podman"')


def test_a_snap_beside_docker_ce_is_no_matter(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "debian", {"DebPackages": DOCKER_CE,
                                              "PathExists(/snap/bin/docker)": True})
    assert "Preflight | Refuse this host" not in run.names() and not run.missing


def fake_apt(tmp_path: Path, fails: int, message: str) -> dict[str, str]:
    """An apt-get on PATH that fails `fails` times with `message`, then succeeds."""
    tool = tmp_path / "apt-get"
    tool.write_text(f'#!/bin/sh\nn=$(cat {tmp_path}/n 2>/dev/null || echo 0)\n'
                    f'echo $((n + 1)) > {tmp_path}/n\n'
                    f'[ "$n" -ge {fails} ] && exit 0\necho "{message}" >&2\nexit 100\n')
    tool.chmod(0o755)
    return {"PATH": f"{tmp_path}:/usr/bin:/bin"}


LOCKED = "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 7 (apt-get)"


@pytest.mark.parametrize(("fails", "message", "code", "tries"), [
    (1, LOCKED, 0, 2),  # the other apt finishes: the update goes on
    (99, LOCKED, 100, None),  # still held at the end of the wait: apt's own line, failed
    (2, "E: The repository 'http://x bookworm Release' does not have a Release file.", 100, 1),
])
def test_update_waits_only_for_the_lock(tmp_path: Path, fails: int, message: str, code: int,
                                        tries: int | None) -> None:
    proc = subprocess.run(["sh", "-c", update_waiting(seconds=2, every=1)], text=True,
                          capture_output=True, env=fake_apt(tmp_path, fails, message),
                          timeout=30)
    assert proc.returncode == code, proc.stderr
    if code:
        assert proc.stderr.splitlines()[-1] == message
    if tries is not None:
        assert int((tmp_path / "n").read_text()) == tries
