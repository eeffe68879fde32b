"""arm64 (a Raspberry Pi) proved on this x86_64 machine, through qemu-user.

Two halves, because no container runtime works inside an emulated device (dockerd fails on
iptables under qemu-user, and runc's shim after that):
- an arm64 Debian device over real SSH: pyinfra's facts say aarch64 and Debian, the deploy's
  preflight gets past the CPU and OS checks to a refusal the test controls (RAM), and nothing
  on the device changes;
- the arm64 server image, built from files/Containerfile with the deploy's own build command
  on this machine's docker and run here: llama-server for aarch64 serves the tiny model.
Base images are cached by recipe hash; the server image and container are removed after.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_docker import profile
from llama_docker.image import build_args, image_tag
from llama_docker.tasks.image import build_command
from llama_docker.units import FILES
from tests.conftest import REPO, deploy, http_json, make_model, wait_healthy, write_knobs
from tests.lab import images, lab
from tests.lab.sh import docker, out
from tests.lab.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.lab
HOST = "e2e-arm64"
SERVER = lab.PREFIX + "arm64-server"
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
HUGE_MARGIN_MIB = 1 << 20  # 1 TiB: no lab machine has it, so preflight must refuse on RAM


def require_qemu() -> None:
    """Fail with the fix, not with an exec format error deep in mmdebstrap or docker."""
    text = BINFMT.read_text() if BINFMT.exists() else ""
    flags = re.search(r"^flags: (\w*)", text, re.M)
    if not text.startswith("enabled") or not flags or not {"F", "C"} <= set(flags[1]):
        pytest.fail("qemu-aarch64 is not registered with the F and C flags (F: usable in "
                    "containers; C: setuid sudo works): run tests/lab/setup-host.sh")


# --- the device ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def device(lab_ready: None) -> Iterator[lab.Device]:
    require_qemu()
    tag = images.build_foreign(images.DEVICE_ARM64)
    dev = lab.start_device(HOST, tag, index=35, fresh=True)
    yield dev
    lab.remove_device(dev)


@pytest.fixture(scope="module")
def inv(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inv-arm64")
    (folder / "inventory.py").write_text(f"lab = {[(device.name, device.host_data())]!r}\n")
    return folder


def test_device_is_arm64(device: lab.Device) -> None:
    assert device.exec("uname", "-m").strip() == "aarch64"
    assert device.exec("dpkg", "--print-architecture").strip() == "arm64"


def test_facts_over_ssh_choose_arm64_debian(inv: Path) -> None:
    """The facts preflight reads, fetched by pyinfra over SSH, through the product's rules."""
    proc = subprocess.run(
        ["pyinfra", "--json", str(inv / "inventory.py"), "fact", "server.Arch",
         "server.Kernel", "server.LinuxDistribution"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = {name: by_host[HOST] for name, by_host in json.loads(proc.stdout).items()}
    assert facts["server.Arch"] == "aarch64"
    assert profile.image_arch(facts["server.Arch"]) == "arm64"
    meta = facts["server.LinuxDistribution"]["release_meta"]
    assert profile.detect(facts["server.Kernel"], meta) == "debian"


def test_preflight_passes_cpu_then_refuses_ram(device: lab.Device, inv: Path) -> None:
    """Fault: a model bigger than the device's RAM | Seen: `not enough RAM for <model>` |
    Left: nothing installed. Reaching the RAM check means the CPU, OS and sudo checks passed
    on the arm64 device."""
    write_knobs(inv, model=make_model(inv, "tiny-arm64", seed=3),
                ram_margin_mib=HUGE_MARGIN_MIB)
    run = deploy(inv / "inventory.py", timeout=900)
    assert run.code != 0
    assert "llama-docker: not enough RAM for tiny-arm64" in run.output, run.output[-3000:]
    assert "no server image for CPU" not in run.output
    assert "unsupported OS" not in run.output
    assert "Traceback" not in run.output
    assert re.search(rf"{HOST}\s+REFUSED\s+not enough RAM", run.output)
    assert device.exec("sh", "-c", "command -v docker podman || echo none").strip() == "none"
    assert not device.exec("sh", "-c", "ls /etc/systemd/system | grep llama || true").strip()


# --- the server image ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server_image() -> Iterator[str]:
    """Built exactly as the deploy builds it on a Pi, from an arm64 debian:forky-slim."""
    require_qemu()
    args = build_args(images.build_foreign(images.FORKY_ARM64), check_valid_until=False)
    tag = image_tag(args)
    proc = subprocess.run(["sh", "-c", build_command("docker", args, tag, str(FILES))],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    yield tag
    docker("rmi", "-f", tag, check=False, capture=True)


@pytest.fixture(scope="module")
def server(server_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The container with the unit's hardening flags; its published port once healthy."""
    model = tmp_path_factory.mktemp("arm64-model") / "tiny.gguf"
    write_tiny_gguf(model, seed=5)
    docker("rm", "-f", SERVER, check=False, capture=True)
    docker("run", "-d", "--name", SERVER, "-p", "127.0.0.1::8080",
           "-v", f"{model}:/models/current.gguf:ro", "--read-only", "--tmpfs", "/tmp",
           "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           server_image, "--ctx-size", "256", "--threads", "2", capture=True)
    try:
        port = int(out("port", SERVER, "8080/tcp").splitlines()[0].rsplit(":", 1)[1])
        try:
            wait_healthy(port, seconds=600)  # emulated: loading is slower than native
        except AssertionError as exc:
            logs = docker("logs", "--tail", "30", SERVER, check=False, capture=True)
            raise AssertionError(f"{exc}\n{logs.stdout}{logs.stderr}") from None
        yield port
    finally:
        docker("rm", "-f", SERVER, check=False, capture=True)


def test_server_image_is_arm64(server_image: str) -> None:
    assert out("image", "inspect", "-f", "{{.Architecture}}", server_image) == "arm64"


def test_server_runs_as_aarch64(server: int) -> None:
    assert out("exec", SERVER, "uname", "-m") == "aarch64"


def test_server_health(server: int) -> None:
    status, body = http_json(f"http://127.0.0.1:{server}/health")
    assert (status, body.get("status")) == (200, "ok")


def test_server_completion_generates_tokens(server: int) -> None:
    status, body = http_json(f"http://127.0.0.1:{server}/completion",
                             {"prompt": "Hello", "n_predict": 8, "ignore_eos": True, "seed": 1},
                             timeout=300)
    assert status == 200
    assert body["tokens_predicted"] == 8 and body["content"]
