"""The fault matrix on real lab devices: one deploy over four devices where three are broken
in different ways, then crashes of the server on the healthy one.

Each test's docstring is a row of docs/RELIABILITY.md (`Fault: … | Seen: … | Left: …`);
tests/unit/test_reliability_doc.py keeps the two in step.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import Run, deploy, http_json, wait_healthy, write_knobs
from tests.lab import lab
from tests.lab.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.lab
STORE = "/var/lib/llama-docker/models"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fleet(device_image: str) -> dict[str, lab.Device]:
    names = {"ok": "e2e-fault-ok", "nodisk": "e2e-fault-nodisk", "sudo": "e2e-fault-sudo"}
    devs = {k: lab.start_device(n, device_image, index=26 + i, fresh=True)
            for i, (k, n) in enumerate(names.items())}
    # A disk with 2 MiB free where the models go.
    devs["nodisk"].exec("sh", "-c", "mkdir -p /var/lib/llama-docker && "
                        "mount -t tmpfs -o size=2m tmpfs /var/lib/llama-docker")
    # sudo asks for a password, as on a box where NOPASSWD was never set.
    devs["sudo"].exec("rm", "-f", "/etc/sudoers.d/pi")
    devs["sudo"].exec("passwd", "-d", "pi")
    yield devs
    for d in devs.values():
        lab.remove_device(d)


@pytest.fixture(scope="module")
def run(fleet: dict[str, lab.Device], tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("inv")
    hosts = [(d.name, d.host_data()) for d in fleet.values()]
    gone = dict(fleet["ok"].host_data(), ssh_port=_closed_port(), ssh_connect_retries=0)
    hosts.append(("e2e-fault-gone", gone))
    (folder / "inventory.py").write_text(f"lab = {hosts!r}\n")
    # About 20 MiB: does not fit the 2 MiB disk.
    path = folder / "tiny-fault.gguf"
    sha = write_tiny_gguf(path, seed=41, n_embd=512, n_ff=1024, n_head=8)
    write_knobs(folder, model={"name": "tiny-fault", "path": str(path), "sha256": sha},
                disk_margin_mib=1)
    return deploy(folder / "inventory.py")


def test_unreachable_host(run: Run) -> None:
    """Fault: a device is off or unreachable | Seen: the host is reported as not connected;
    the others deploy | Left: that device untouched; the run exits non-zero"""
    assert run.code != 0
    assert "e2e-fault-gone" in run.output
    assert run.changed("e2e-fault-ok") > 5


def test_changed_host_key_refused(fleet: dict, tmp_path: Path) -> None:
    """Fault: a device's host key changed (reinstalled, or someone in the middle) | Seen:
    `REMOTE HOST IDENTIFICATION HAS CHANGED!` and `SSH host key error`, the `ssh-keygen -R`
    line to clear it | Left: nothing sent to it"""
    dev = fleet["ok"]
    wrong = tmp_path / "known_hosts"
    other = (lab.STATE / "e2e-fault-nodisk" / "ssh_host_ed25519_key.pub").read_text().split()
    wrong.write_text(f"[127.0.0.1]:{dev.ssh_port} {other[0]} {other[1]}\n")
    data = dict(dev.host_data(), ssh_known_hosts_file=str(wrong))
    (tmp_path / "inventory.py").write_text(f"lab = {[(dev.name, data)]!r}\n")
    write_knobs(tmp_path, model={"name": "x", "path": "/nonexistent", "sha256": "0" * 64})
    run = deploy(tmp_path / "inventory.py")
    assert run.code != 0
    assert re.search(r"\[e2e-fault-ok\]\s+SSH host key error", run.output), run.output[-2000:]
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in run.output


def test_healthy_host_fully_deployed_beside_broken_ones(fleet: dict, run: Run) -> None:
    """Fault: three of four devices are broken | Seen: per-host error lines | Left: the healthy
    device serves the new model"""
    dev = fleet["ok"]
    wait_healthy(dev.http_port, seconds=60)
    assert dev.exec("systemctl", "is-active", "llama-docker").strip() == "active"


def test_no_disk_room_refused_before_transfer(fleet: dict, run: Run) -> None:
    """Fault: the device's disk is too small for the model | Seen: `not enough disk at <dir>:
    needs N, has M free` before any byte moves | Left: no file written, no unit"""
    assert re.search(r"\[e2e-fault-nodisk\]\s+llama-docker: not enough disk at "
                     "/var/lib/llama-docker/models", run.output)
    dev = fleet["nodisk"]
    assert dev.exec("ls", "-A", "/var/lib/llama-docker").split() == []
    assert dev.exec("test", "-e", "/etc/systemd/system/llama-docker.service", check=False) == ""
    assert lab.docker("exec", dev.container, "test", "-e",
                      "/etc/systemd/system/llama-docker.service", check=False).returncode != 0


def test_sudo_with_password_refused(fleet: dict, run: Run) -> None:
    """Fault: sudo asks for a password and none was given | Seen: `sudo asks for a password:
    set _sudo_password ..., run pyinfra with --use-sudo-password ..., or allow NOPASSWD ...` |
    Left: nothing changed on the device"""
    assert re.search(r"\[e2e-fault-sudo\]\s+llama-docker: sudo asks for a password", run.output)
    dev = fleet["sudo"]
    assert lab.docker("exec", dev.container, "test", "-e", "/usr/bin/dockerd",
                      check=False).returncode != 0


def test_no_traceback_for_expected_failures(run: Run) -> None:
    """Fault: any expected failure above | Seen: one line per host, no Python traceback |
    Left: as above"""
    assert "Traceback" not in run.output


def test_summary_names_every_host(run: Run) -> None:
    """Fault: a mixed run | Seen: a closing table with one line per host: `ok`, `REFUSED`
    (preflight stopped it before any change) with the reason, or `UNREACHABLE` | Left: as
    above"""
    summary = run.output.split("llama-docker summary:")[1].strip().splitlines()
    exposed = [line.strip() for line in summary if "open to the whole LAN" in line]
    lines = {line.split()[0]: line.split()[1] for line in summary
             if "open to the whole LAN" not in line}
    assert lines == {"e2e-fault-ok": "ok", "e2e-fault-nodisk": "REFUSED",
                     "e2e-fault-sudo": "REFUSED", "e2e-fault-gone": "UNREACHABLE"}
    # Only the host that serves is named as open to the LAN, not those stopped before.
    assert len(exposed) == 1 and exposed[0].startswith(
        "open to the whole LAN without a key: e2e-fault-ok :8080;"), exposed


def _restarted_within(dev: lab.Device, seconds: float) -> float:
    start = time.monotonic()
    wait_healthy(dev.http_port, seconds=seconds)
    return time.monotonic() - start


def test_server_process_killed(fleet: dict, run: Run) -> None:
    """Fault: llama-server is killed (OOM killer, crash) | Seen: nothing; systemd restarts the
    container (Restart=always) | Left: the same model serving again within 60 s"""
    dev = fleet["ok"]
    sha = dev.exec("readlink", f"{STORE}/current.gguf").strip()
    dev.exec("pkill", "-9", "-x", "llama-server")
    time.sleep(1)
    assert _restarted_within(dev, 60) < 60
    assert dev.exec("readlink", f"{STORE}/current.gguf").strip() == sha


def test_container_removed_under_the_unit(fleet: dict, run: Run) -> None:
    """Fault: the container is killed or removed by hand | Seen: nothing; the unit starts a
    fresh one | Left: serving again within 60 s"""
    dev = fleet["ok"]
    dev.exec("docker", "rm", "-f", "llama")
    time.sleep(1)
    assert _restarted_within(dev, 60) < 60
    status, body = http_json(f"http://127.0.0.1:{dev.http_port}/completion",
                             {"prompt": "Hi", "n_predict": 2, "ignore_eos": True})
    assert status == 200 and body["tokens_predicted"] == 2


def test_docker_daemon_restarted(fleet: dict, run: Run) -> None:
    """Fault: the docker daemon restarts (package upgrade) | Seen: nothing; the unit follows
    docker back up | Left: serving again within 90 s"""
    dev = fleet["ok"]
    dev.exec("systemctl", "restart", "docker")
    time.sleep(2)
    assert _restarted_within(dev, 90) < 90
