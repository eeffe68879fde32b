"""arm64 (a Raspberry Pi) proved on this x86_64 machine, through qemu-user.

Two halves, because no container runtime works inside an emulated device (dockerd fails on
iptables under qemu-user, and runc's shim after that):
- an arm64 Debian device over real SSH: pyinfra's facts say aarch64 and Debian, the deploy's
  preflight gets past the CPU and OS checks to a refusal the test controls (RAM), and nothing
  on the device changes;
- the arm64 server image, built from files/Containerfile with the deploy's own build script
  (the llama.cpp label included) on this machine's docker through binfmt, and run here:
  llama-server for aarch64 serves the tiny model. It is saved once into a controller cache
  as the deploy saves it (the archive's config says arm64, its ID is the image's), and that
  archive is pushed to the arm64 device with the deploy's verified push: the device's own
  sha256 of the file is the cached one.
What is not tested: loading the archive on the arm64 device and serving from it there (the
deploy's `docker load` and image-ID check after the push), since no runtime runs under
qemu-user; the load itself is tested on amd64 devices (tests/e2e/test_image_once.py).
Base images are cached by recipe hash; the server image and container are removed after.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_docker.device import profile
from llama_docker.device.image import BUILD_FILES, build_args, build_command, image_tag
from llama_docker.device.store import Store, images_dir
from llama_docker.device.units import FILES
from llama_docker.transfer.image_archive import CachedImage, ImageCache, inspect_archive
from llama_docker.transfer.image_ship import build_script, stage_tag
from llama_docker.transfer.push import SshTarget, push
from tests.conftest import PYINFRA, REPO, deploy, http_json, make_model, wait_healthy, write_knobs
from tests.lab import images, lab
from tests.lab.sh import docker, out
from tests.lab.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.lab
HOST = "e2e-arm64"
SERVER = lab.PREFIX + "arm64-server"
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
HUGE_MARGIN_MIB = 1 << 20  # 1 TiB: no lab machine has it, so preflight must refuse on RAM
IMAGES = images_dir("/var/lib/llama-docker/models")  # where the deploy pushes the archive
LABEL = "org.llama-docker.llama-cpp-version"


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
        [*PYINFRA, "--json", str(inv / "inventory.py"), "fact", "server.Arch",
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
def server_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Built exactly as the deploy builds it on a Pi (build_script: the build, then the
    llama.cpp version as a label), from an arm64 debian:forky-slim."""
    require_qemu()
    args = build_args(images.build_foreign(images.FORKY_ARM64), check_valid_until=False)
    tag = image_tag(args)
    context = tmp_path_factory.mktemp("arm64-context")
    for name in BUILD_FILES:
        shutil.copy(FILES / name, context / name)
    script = build_script("docker", build_command("docker", args, stage_tag(tag), str(context)),
                          tag, str(context))
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    yield tag
    docker("rmi", "-f", tag, check=False, capture=True)


@pytest.fixture(scope="module")
def archive(server_image: str, tmp_path_factory: pytest.TempPathFactory) -> CachedImage:
    """The image saved once into a controller cache, hashed as it streams, as the deploy
    saves the image of the first device of an architecture."""
    cache = ImageCache(tmp_path_factory.mktemp("arm64-cache"))
    part = cache.part(server_image, "arm64")
    part.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with subprocess.Popen(["docker", "save", server_image], stdout=subprocess.PIPE) as proc, \
            open(part, "wb") as f:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 20):
            f.write(chunk)
            h.update(chunk)
    assert proc.returncode == 0
    cache.add(server_image, "arm64", part, h.hexdigest(), "this machine (binfmt)")
    entry = cache.lookup(server_image, "arm64")
    assert entry is not None
    return entry


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


def test_archive_made_once_holds_the_arm64_image(server_image: str,
                                                  archive: CachedImage) -> None:
    """The cache's one archive: its config says arm64, its ID and label are the image's."""
    image_id, version = out("image", "inspect", "-f",
                            f'{{{{.Id}}}} {{{{index .Config.Labels "{LABEL}"}}}}',
                            server_image).split(" ", 1)
    info = inspect_archive(Path(archive.path))
    assert (info.arch, info.image_id, info.version) == ("arm64", archive.image_id, version)
    assert image_id == f"sha256:{archive.image_id}" and version
    assert [p.name for p in Path(archive.path).parent.glob("*.tar")] == [
        f"{archive.image_id}.tar"]


def test_archive_pushed_to_the_arm64_device_verified(device: lab.Device,
                                                     archive: CachedImage) -> None:
    """The deploy's push of the archive: hashed on the emulated device before it takes its
    final name; the device's own sha256sum of it is the cached one. (Its `docker load` is
    what cannot run here.)"""
    device.exec("install", "-d", "-o", device.user, IMAGES)
    store = Store(IMAGES, ext="tar")
    client = device.paramiko()
    try:
        sent, offset = push(client, Path(archive.path), archive.sha256, store, HOST,
                            SshTarget.from_data(HOST, device.host_data()), aes=True)
    finally:
        client.close()
    assert (sent, offset) == (archive.size, 0)
    assert device.exec("sha256sum", store.final(archive.sha256)).split()[0] == archive.sha256
    device.exec("rm", "-rf", IMAGES)


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
