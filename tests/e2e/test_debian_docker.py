"""A fresh Debian device (a flashed Raspberry Pi, as far as a container can be one).

Converge, verify the device's real state, converge again (nothing changes), reboot, and
refuse models whose bytes are not the ones pinned. The tests run in file order and share
one device.
"""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import (
    Run,
    deploy,
    fresh_device,
    http_json,
    inventory,
    make_model,
    wait_healthy,
    write_knobs,
)
from tests.lab import lab

pytestmark = pytest.mark.lab
HOST = "e2e-debian"
STORE = "/var/lib/llama-docker/models"


device = fresh_device(HOST, index=20)


@pytest.fixture(scope="module")
def inv(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return inventory(tmp_path_factory.mktemp("inv"), [device]).parent


@pytest.fixture(scope="module")
def models(inv: Path) -> dict[str, dict]:
    return {"a": make_model(inv, "tiny-a", seed=1), "b": make_model(inv, "tiny-b", seed=2)}


@pytest.fixture(scope="module")
def first_run(inv: Path, models: dict[str, dict]) -> Run:
    write_knobs(inv, model=models["a"])
    return deploy(inv / "inventory.py")


def unit_invocation(device: lab.Device) -> str:
    return device.exec("systemctl", "show", "-p", "InvocationID", "--value",
                       "llama-docker").strip()


def test_first_deploy_converges(first_run: Run) -> None:
    assert first_run.code == 0, first_run.output[-4000:]
    assert first_run.changed(HOST) >= 8


def test_docker_installed_and_running(device: lab.Device, first_run: Run) -> None:
    assert device.exec("systemctl", "is-active", "docker").strip() == "active"


def test_service_active(device: lab.Device, first_run: Run) -> None:
    assert device.exec("systemctl", "is-active", "llama-docker").strip() == "active"


def test_service_enabled_at_boot(device: lab.Device, first_run: Run) -> None:
    assert device.exec("systemctl", "is-enabled", "llama-docker").strip() == "enabled"


def test_unit_verifies(device: lab.Device, first_run: Run) -> None:
    out = device.exec("systemd-analyze", "verify", "/etc/systemd/system/llama-docker.service",
                      check=False)
    assert "llama-docker.service" not in out, out


def test_health_answers_on_published_port(device: lab.Device, first_run: Run) -> None:
    status, body = http_json(f"http://127.0.0.1:{device.http_port}/health")
    assert (status, body.get("status")) == (200, "ok")


def test_completion_generates_tokens(device: lab.Device, first_run: Run) -> None:
    status, body = http_json(f"http://127.0.0.1:{device.http_port}/completion",
                             {"prompt": "Hello", "n_predict": 8, "ignore_eos": True, "seed": 1})
    assert status == 200
    assert body["tokens_predicted"] == 8 and body["content"]


def test_model_on_device_has_pinned_sha(device: lab.Device, models: dict, first_run: Run
                                        ) -> None:
    sha = models["a"]["sha256"]
    out = device.exec("sha256sum", f"{STORE}/current.gguf")
    assert out.split()[0] == sha
    assert device.exec("readlink", f"{STORE}/current.gguf").strip() == f"{sha}.gguf"


def test_server_runs_as_non_root_read_only(device: lab.Device, first_run: Run) -> None:
    fmt = "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}"
    assert device.exec("docker", "inspect", "-f", fmt, "llama").split() == [
        "10001", "true", "[ALL]"]


def test_only_ssh_and_the_server_port_listen(device: lab.Device, first_run: Run) -> None:
    """Reachable from the LAN: sshd and the server, nothing else (loopback-only listeners,
    such as containerd's stream server, are not reachable from outside)."""
    listening = [line.split()[3] for line in device.exec("ss", "-Hltn").splitlines() if line]
    outside = {a.rsplit(":", 1)[1] for a in listening
               if not a.startswith(("127.", "[::1]", "[::ffff:127."))}
    assert outside == {"22", "8080"}, listening


def test_container_memory_capped_from_model_size(device: lab.Device, first_run: Run) -> None:
    limit = int(device.exec("docker", "inspect", "-f", "{{.HostConfig.Memory}}", "llama"))
    assert 512 << 20 < limit < 2 << 30  # a tiny model: weights + context + 512 MiB


def test_second_run_changes_nothing(device: lab.Device, inv: Path, first_run: Run) -> None:
    before = unit_invocation(device)
    again = deploy(inv / "inventory.py", "--debug")
    assert again.code == 0, again.output[-3000:]
    assert again.changed(HOST) == 0, again.output[-3000:]
    assert unit_invocation(device) == before  # not restarted
    # Read in two round trips (who the device is, what it holds): tasks/batch.py
    assert again.output.count(f"Running command on {HOST}:") == 2, again.output[-3000:]


def test_wrong_sha_refused_before_any_byte(device: lab.Device, inv: Path, models: dict,
                                           first_run: Run) -> None:
    """Fault: the model file does not match its pinned sha256 | Seen: `<file> hashes X,
    expected Y` on the controller | Left: nothing sent; the old model serving"""
    bad = dict(models["b"], sha256="0" * 64)
    write_knobs(inv, model=bad)
    run = deploy(inv / "inventory.py")
    write_knobs(inv, model=models["a"])
    assert run.code != 0
    assert f"hashes {models['b']['sha256']}, expected {'0' * 64}" in run.output
    assert "Traceback" not in run.output
    sha_a = models["a"]["sha256"]
    assert device.exec("readlink", f"{STORE}/current.gguf").strip() == f"{sha_a}.gguf"
    assert "0" * 64 not in device.exec("ls", STORE)


def test_corrupted_transfer_never_served(device: lab.Device, inv: Path, models: dict,
                                         first_run: Run) -> None:
    """Fault: one byte corrupted in the device's copy | Seen: `<file> on the device hashes X,
    expected Y: the partial file was deleted` | Left: never linked, never served; the next
    run sends it again"""
    b = models["b"]
    data = bytearray(Path(b["path"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    part = f"{STORE}/{b['sha256']}.gguf.part"
    device.write(part, bytes(data))
    assert hashlib.sha256(bytes(data)).hexdigest() != b["sha256"]
    write_knobs(inv, model=b)
    run = deploy(inv / "inventory.py")
    assert run.code != 0
    assert "on the device hashes" in run.output and f"expected {b['sha256']}" in run.output
    listing = device.exec("ls", "-a", STORE)
    assert f"{b['sha256']}.gguf" not in listing.split()
    assert f"{b['sha256']}.gguf.part" not in listing.split()
    sha_a = models["a"]["sha256"]
    assert device.exec("readlink", f"{STORE}/current.gguf").strip() == f"{sha_a}.gguf"
    status, _ = http_json(f"http://127.0.0.1:{device.http_port}/health")
    assert status == 200


def test_model_change_redeploys_and_keeps_previous(device: lab.Device, inv: Path,
                                                   models: dict, first_run: Run) -> None:
    before = unit_invocation(device)
    write_knobs(inv, model=models["b"])
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-3000:]
    sha_a, sha_b = models["a"]["sha256"], models["b"]["sha256"]
    assert device.exec("readlink", f"{STORE}/current.gguf").strip() == f"{sha_b}.gguf"
    assert device.exec("readlink", f"{STORE}/previous.gguf").strip() == f"{sha_a}.gguf"
    assert unit_invocation(device) != before  # restarted for the new model
    status, body = http_json(f"http://127.0.0.1:{device.http_port}/completion",
                             {"prompt": "Hi", "n_predict": 2})
    assert status == 200 and body["model"] == models["b"]["name"]  # the alias: its own name


KEY = "lab-key-" + "k3y" * 8


def test_api_key_locks_the_api_but_never_shows(device: lab.Device, inv: Path, models: dict,
                                               first_run: Run) -> None:
    write_knobs(inv, model=models["b"], api_key=KEY)
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-3000:]
    assert KEY not in run.output
    url = f"http://127.0.0.1:{device.http_port}"
    assert http_json(f"{url}/completion", {"prompt": "Hi", "n_predict": 2})[0] == 401
    assert http_json(f"{url}/health")[0] == 200  # health stays open for monitoring
    req = urllib.request.Request(f"{url}/completion", data=b'{"prompt":"Hi","n_predict":2}',
                                 headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    assert KEY not in device.exec("ps", "auxww")
    assert KEY not in device.exec("docker", "inspect", "llama")
    assert KEY not in device.exec("cat", "/etc/systemd/system/llama-docker.service")
    assert device.exec("stat", "-c", "%a %u", "/etc/llama-docker/api-key").split() == [
        "400", "10001"]
    before = unit_invocation(device)
    again = deploy(inv / "inventory.py")
    assert again.code == 0 and again.changed(HOST) == 0, again.output[-3000:]
    assert unit_invocation(device) == before  # the key's owner has no name: not a change


def test_api_key_removed_again(device: lab.Device, inv: Path, models: dict,
                               first_run: Run) -> None:
    write_knobs(inv, model=models["b"])
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-3000:]
    assert device.exec("ls", "/etc/llama-docker", check=False).split() == []
    status, _ = http_json(f"http://127.0.0.1:{device.http_port}/completion",
                          {"prompt": "Hi", "n_predict": 2})
    assert status == 200


def test_reboot_brings_service_back(device: lab.Device, first_run: Run) -> None:
    """Fault: the device reboots (power cut) | Seen: nothing | Left: docker and the unit start
    at boot; the same model serving again"""
    lab.restart_device(device)
    wait_healthy(device.http_port, seconds=180)
    assert device.exec("systemctl", "is-active", "llama-docker").strip() == "active"
