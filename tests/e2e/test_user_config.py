"""A device set up the way a user's own is: docker from docker.com's apt repository
(docker-ce and containerd.io), its own /etc/docker/daemon.json, and an inventory shared with
the user's other deploys (host data that is not ours).

The deploy uses the user's docker-ce (Debian's docker.io conflicts with it: installing it
would remove theirs), merges the registry mirror into the user's daemon.json (their keys
kept, the original kept once as a backup), ignores the foreign host data, and converges
again with no change; a daemon.json docker could not read stops the host untouched. The
tests run in file order and share one device.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, Run, deploy, fresh_device, http_json, make_model, write_knobs
from tests.lab import lab

pytestmark = pytest.mark.lab
HOST = "e2e-dk-userconf"
CONF = "/etc/docker/daemon.json"
BACKUP = CONF + ".llama-docker.bak"
USERS = b'{"log-driver": "local", "log-opts": {"max-size": "10m"}}\n'
BROKEN = b'{"log-driver": "local",\n'
FOREIGN = {"profile": "raspi", "lab_ip": "10.0.0.5"}  # the user's other deploys' data

device = fresh_device(HOST, index=40)


@pytest.fixture(scope="module")
def inv(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inv")
    data = {**device.host_data(), **FOREIGN}
    (folder / "inventory.py").write_text(f"lab = {[(device.name, data)]!r}\n")
    write_knobs(folder, model=make_model(folder, "tiny-userconf", seed=40))
    return folder


@pytest.fixture(scope="module")
def first_run(device: lab.Device, inv: Path) -> Run:
    device.write("/tmp/docker_ce.sh", (REPO / "tests" / "lab" / "docker_ce.sh").read_bytes())
    device.exec("sh", "/tmp/docker_ce.sh", timeout=900)
    assert installed(device) == {"containerd.io", "docker-ce"}
    device.exec("mkdir", "-p", "/etc/docker")
    device.write(CONF, USERS)
    return deploy(inv / "inventory.py")


def installed(device: lab.Device) -> set[str]:
    """The docker engine's packages installed on the device."""
    out = device.exec("dpkg-query", "-W", "-f", "${db:Status-Status} ${Package}\\n",
                      "docker*", "containerd*", "runc", check=False)
    return {line.split()[1] for line in out.splitlines() if line.startswith("installed ")}


def docker_start(device: lab.Device) -> str:
    return device.exec("systemctl", "show", "-p", "ExecMainStartTimestampMonotonic",
                       "--value", "docker").strip()


def test_converges_with_foreign_host_data(first_run: Run) -> None:
    assert first_run.code == 0, first_run.output[-4000:]
    assert "is invalid" not in first_run.output


def test_the_users_docker_ce_is_used_not_replaced(device: lab.Device, first_run: Run) -> None:
    assert installed(device) == {"containerd.io", "docker-ce"}  # no docker.io, containerd
    version = device.exec("dpkg-query", "-W", "-f", "${Version}", "docker-ce").strip()
    line = f"docker: docker-ce {version} is installed; using it"
    assert line in first_run.output, first_run.output[-3000:]


def test_users_keys_kept_and_mirror_added(device: lab.Device, first_run: Run) -> None:
    conf = json.loads(device.exec("cat", CONF))
    assert conf["log-driver"] == "local" and conf["log-opts"] == {"max-size": "10m"}
    assert conf["registry-mirrors"] == [f"http://{lab.REGISTRY}"]
    assert conf["insecure-registries"] == [lab.REGISTRY]


def test_original_kept_as_backup(device: lab.Device, first_run: Run) -> None:
    assert device.exec("cat", BACKUP).encode() == USERS


def test_docker_runs_with_the_users_log_driver_and_the_mirror(device: lab.Device,
                                                              first_run: Run) -> None:
    info = json.loads(device.exec("docker", "info", "--format", "{{json .}}"))
    assert info["LoggingDriver"] == "local"
    assert f"http://{lab.REGISTRY}/" in info["RegistryConfig"]["Mirrors"]


def test_health_on_published_port(device: lab.Device, first_run: Run) -> None:
    status, _ = http_json(f"http://127.0.0.1:{device.http_port}/health")
    assert status == 200


def test_second_run_changes_nothing_and_leaves_docker_alone(device: lab.Device, inv: Path,
                                                            first_run: Run) -> None:
    before, conf = docker_start(device), device.exec("cat", CONF)
    again = deploy(inv / "inventory.py", "--debug")
    assert again.code == 0, again.output[-3000:]
    assert again.changed(HOST) == 0, again.output[-3000:]
    assert docker_start(device) == before  # not restarted
    assert device.exec("cat", CONF) == conf
    assert device.exec("cat", BACKUP).encode() == USERS  # kept once, not overwritten
    assert again.output.count(f"Running command on {HOST}:") == 2, again.output[-3000:]
    assert "host data not used by llama-docker: lab_ip, profile" in again.output


def test_invalid_daemon_json_stops_the_host_untouched(device: lab.Device, inv: Path,
                                                      first_run: Run) -> None:
    """Fault: daemon.json is not valid JSON | Seen: one line naming the file and what to do
    | Left: the file byte for byte; docker not restarted; the server still serving"""
    before = docker_start(device)
    device.write(CONF, BROKEN)
    run = deploy(inv / "inventory.py")
    assert run.code != 0
    lines = [line for line in run.output.splitlines()
             if f"{CONF} is not valid JSON" in line]
    assert lines and "fix or remove it" in lines[0], run.output[-3000:]
    assert "Traceback" not in run.output
    assert device.exec("cat", CONF).encode() == BROKEN
    assert device.exec("cat", BACKUP).encode() == USERS
    assert docker_start(device) == before
    assert http_json(f"http://127.0.0.1:{device.http_port}/health")[0] == 200
