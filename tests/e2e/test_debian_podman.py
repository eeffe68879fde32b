"""Debian with `runtime = "podman"`: rootful podman from apt, a plain systemd unit running
`podman run` (bookworm's podman 4.3 has no Quadlet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Run, deploy, fresh_device, http_json, inventory, make_model, write_knobs
from tests.lab import lab

pytestmark = pytest.mark.lab
HOST = "e2e-podman"


device = fresh_device(HOST, index=29)


@pytest.fixture(scope="module")
def inv(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return inventory(tmp_path_factory.mktemp("inv"), [device])


@pytest.fixture(scope="module")
def first_run(inv: Path) -> Run:
    write_knobs(inv.parent, model=make_model(inv.parent, "tiny-podman", seed=51),
                runtime="podman")
    return deploy(inv)


def test_converges(first_run: Run) -> None:
    assert first_run.code == 0, first_run.output[-4000:]


def test_podman_not_docker(device: lab.Device, first_run: Run) -> None:
    assert device.exec("podman", "ps", "--format", "{{.Names}}").split() == ["llama"]
    assert lab.docker("exec", device.container, "test", "-e", "/usr/bin/dockerd",
                      check=False).returncode != 0


def test_unit_active_and_answers(device: lab.Device, first_run: Run) -> None:
    assert device.exec("systemctl", "is-active", "llama-docker").strip() == "active"
    status, body = http_json(f"http://127.0.0.1:{device.http_port}/completion",
                             {"prompt": "Hello", "n_predict": 4, "ignore_eos": True})
    assert status == 200 and body["tokens_predicted"] == 4


def test_second_run_changes_nothing(inv: Path, first_run: Run) -> None:
    again = deploy(inv)
    assert again.code == 0, again.output[-3000:]
    assert again.changed(HOST) == 0, again.output[-3000:]
