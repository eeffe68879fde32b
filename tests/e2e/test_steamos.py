"""A Steam Deck as far as a container can be one: SteamOS's os-release, user `deck`, podman
preinstalled, `/` read-only, and package managers that fail and log. The server must run
rootless from a systemd user unit, everything under /home/deck, never touching packages."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Run, deploy, http_json, inventory, make_model, wait_healthy, write_knobs
from tests.lab import images, lab

pytestmark = pytest.mark.lab
HOST = "e2e-steamos"
HOME = "/home/deck"
STORE = f"{HOME}/.local/share/llama-docker/models"


@pytest.fixture(scope="module")
def device(lab_ready: None) -> lab.Device:
    dev = lab.start_device(HOST, images.build_steamos(), index=25, fresh=True,
                           profile="steamos")
    yield dev
    lab.remove_device(dev)


@pytest.fixture(scope="module")
def inv(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return inventory(tmp_path_factory.mktemp("inv"), [device])


@pytest.fixture(scope="module")
def model(inv: Path) -> dict:
    return make_model(inv.parent, "tiny-deck", seed=31)


@pytest.fixture(scope="module")
def first_run(inv: Path, model: dict) -> Run:
    write_knobs(inv.parent, model=model)
    return deploy(inv)


def as_deck(device: lab.Device, *cmd: str, check: bool = True) -> str:
    return device.exec("runuser", "-u", "deck", "--", "env", "XDG_RUNTIME_DIR=/run/user/1000",
                       *cmd, check=check)


def test_converges(first_run: Run) -> None:
    assert first_run.code == 0, first_run.output[-4000:]


def test_no_package_manager_was_called(device: lab.Device, first_run: Run) -> None:
    log = device.exec("cat", "/var/log/lab-forbidden.log", check=False)
    assert log.strip() == ""


def test_root_filesystem_untouched(device: lab.Device, first_run: Run) -> None:
    for path in ("/etc/llama-docker", "/etc/systemd/system/llama-docker.service",
                 "/opt/llama-docker", "/var/lib/llama-docker"):
        exists = lab.docker("exec", device.container, "test", "-e", path, check=False)
        assert exists.returncode != 0, f"{path} exists"


def test_user_unit_active_and_enabled(device: lab.Device, first_run: Run) -> None:
    assert as_deck(device, "systemctl", "--user", "is-active", "llama-docker").strip() == "active"
    assert as_deck(device, "systemctl", "--user", "is-enabled",
                   "llama-docker").strip() == "enabled"


def test_linger_so_it_runs_without_a_login(device: lab.Device, first_run: Run) -> None:
    device.exec("test", "-f", "/var/lib/systemd/linger/deck")


def test_server_runs_as_deck_not_root(device: lab.Device, first_run: Run) -> None:
    users = device.exec("ps", "-C", "llama-server", "-o", "user=").split()
    assert users and set(users) == {"deck"}


def test_answers_with_the_pinned_model(device: lab.Device, model: dict, first_run: Run) -> None:
    status, body = http_json(f"http://127.0.0.1:{device.http_port}/completion",
                             {"prompt": "Hello", "n_predict": 4, "ignore_eos": True})
    assert status == 200 and body["tokens_predicted"] == 4
    assert device.exec("sha256sum", f"{STORE}/current.gguf").split()[0] == model["sha256"]


def test_second_run_changes_nothing(inv: Path, first_run: Run) -> None:
    again = deploy(inv)
    assert again.code == 0, again.output[-3000:]
    assert again.changed(HOST) == 0, again.output[-3000:]


def test_reboot_brings_service_back(device: lab.Device, first_run: Run) -> None:
    lab.restart_device(device)
    wait_healthy(device.http_port, seconds=240)
