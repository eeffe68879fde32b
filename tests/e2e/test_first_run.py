"""What a new user meets first: a dry run before anything is cached, the summary of a run
whose only device cannot be reached, a refused device and a failed image build.

One fresh device, used in file order: dry runs (nothing changes), a knob typo, a build that
apt refuses, then a real deploy.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import (
    PYINFRA,
    REPO,
    Run,
    deploy,
    fresh_device,
    inventory,
    wait_healthy,
    write_knobs,
)
from tests.lab import lab
from tests.lab.fault_server import FaultServer
from tests.lab.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.lab
HOST = "e2e-first"
PATH = "/lab/tiny-GGUF/resolve/main/tiny-first.gguf"

device = fresh_device(HOST, index=37)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("m") / "tiny-first.gguf"
    write_tiny_gguf(path, seed=37)
    return path.read_bytes()


@pytest.fixture(scope="module")
def hub(model: bytes) -> FaultServer:
    with FaultServer({PATH: model}) as srv:
        srv.hub(PATH, sha256=hashlib.sha256(model).hexdigest(), size=len(model))
        yield srv


@pytest.fixture(scope="module")
def inv(device: lab.Device, hub: FaultServer, tmp_path_factory: pytest.TempPathFactory
        ) -> Path:
    folder = tmp_path_factory.mktemp("inv")
    inventory(folder, [device])
    write_knobs(folder, model={"name": "tiny-first", "url": hub.url(PATH)})
    return folder


def run(inv: Path, *extra: str, yes: bool = True, hub: FaultServer | None = None,
        inventory_file: str = "inventory.py") -> Run:
    """pyinfra as a user runs it, from the checkout (where config.py is), with or without -y."""
    env = {"HF_ENDPOINT": hub.url("").rstrip("/")} if hub else {}
    if yes:
        return deploy(inv / inventory_file, *extra, env=env)
    proc = subprocess.run([*PYINFRA, str(inv / inventory_file), "deploy.py", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    return Run(proc.returncode, proc.stdout + proc.stderr)


def summary(out: str) -> str:
    return out[out.index("--> llama-docker summary"):]


@pytest.mark.parametrize("yes", [True, False], ids=["with-y", "without-y"])
def test_first_dry_run_plans_every_step_without_downloading(
        device: lab.Device, hub: FaultServer, inv: Path, model: bytes, yes: bool) -> None:
    """A dry run on a fresh device with an empty controller cache shows the whole plan and the
    bytes it would move, downloads nothing and changes nothing."""
    before = hub.bytes_sent
    result = run(inv, "--dry", yes=yes, hub=hub)
    assert result.code == 0, result.output[-3000:]
    table = summary(result.output)
    assert "(--dry: nothing was changed)" in table
    for step in ("Install docker", "Server image llama-docker/server:", "Push ", "Serve tiny-first",
                 "Unit llama-docker.service", "Wait for http://127.0.0.1:8080/health"):
        assert f"- {step}" in table or f"| {step}" in table, table
    size = len(model)
    assert re.search(rf"would move: download tiny-first.gguf \({size / 2**20:.1f} MiB\) once "
                     rf"to this controller; push {size / 2**20:.1f} MiB to 1 device", table), table
    assert hub.bytes_sent == before  # HEAD requests only: not a body byte
    models = inv / "cache" / "models"
    assert not models.exists() or not any(models.iterdir())
    assert "not installed" in device.exec("sh", "-c", "command -v docker || echo not installed")


def test_a_typo_knob_is_said_once_in_the_run_and_once_in_the_summary(inv: Path,
                                                                      hub: FaultServer) -> None:
    knobs = inv / "group_data" / "lab.py"
    kept = knobs.read_text()
    knobs.write_text(kept + "ctx_sise = 4096\n")
    try:
        result = run(inv, hub=hub)
    finally:
        knobs.write_text(kept)
    assert result.code != 0
    line = "knob ctx_sise=4096 is invalid"
    assert result.output.count(line) == 2, result.output[-3000:]  # the run, the summary
    assert re.search(rf"{HOST}\s+REFUSED\s+{line}", summary(result.output))


def test_a_refused_dry_run_says_refused(inv: Path, hub: FaultServer) -> None:
    knobs = inv / "group_data" / "lab.py"
    kept = knobs.read_text()
    knobs.write_text(kept + "ram_margin_mib = 1048576\n")  # more RAM than any machine has
    try:
        result = run(inv, "--dry", hub=hub)
    finally:
        knobs.write_text(kept)
    assert re.search(rf"{HOST}\s+REFUSED\s+not enough RAM for tiny-first",
                     summary(result.output)), result.output[-3000:]
    assert " ok" not in summary(result.output)


def test_only_host_unreachable_still_gets_its_line(device: lab.Device, inv: Path,
                                                   hub: FaultServer) -> None:
    """The only device refuses the connection, or shows another host key: pyinfra stops
    before any deploy file runs, and the summary still names the host and the reason."""
    data = device.host_data()
    closed = {**data, "ssh_port": 1}
    (inv / "closed.py").write_text(f"lab = {[(HOST, closed)]!r}\n")
    result = run(inv, hub=hub, inventory_file="closed.py")
    assert result.code != 0
    assert re.search(rf"{HOST}\s+UNREACHABLE\s+could not connect: .*port 1",
                     summary(result.output)), result.output[-3000:]

    other = inv / "other_known_hosts"
    key = (lab.STATE / "other-key")
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True, timeout=30)
    other.write_text(f"[127.0.0.1]:{device.ssh_port} "
                     + " ".join(key.with_suffix(".pub").read_text().split()[:2]) + "\n")
    (inv / "changed.py").write_text(
        f"lab = {[(HOST, {**data, 'ssh_known_hosts_file': str(other)})]!r}\n")
    result = run(inv, hub=hub, inventory_file="changed.py")
    assert result.code != 0
    assert re.search(rf"{HOST}\s+UNREACHABLE\s+.*host key .*does not match",
                     summary(result.output), re.IGNORECASE), result.output[-3000:]


def test_a_failed_build_names_the_cause_and_the_knob(inv: Path, hub: FaultServer) -> None:
    """apt in the image build refuses the lab mirror's expired Release file: the summary says
    FAILED (not UNREACHABLE: the host was reached) with apt's own line and the knob."""
    knobs = inv / "group_data" / "lab.py"
    kept = knobs.read_text()
    knobs.write_text(kept.replace("apt_check_valid_until = False",
                                  "apt_check_valid_until = True"))
    try:
        result = run(inv, hub=hub)
    finally:
        knobs.write_text(kept)
    assert result.code != 0
    table = summary(result.output)
    assert "UNREACHABLE" not in table
    assert re.search(rf"{HOST}\s+FAILED\s+building llama-docker/server:\S+ failed: E: Release "
                     r"file for .* is expired", table), table
    assert "set apt_check_valid_until = False" in table


def test_then_a_real_run_converges(device: lab.Device, inv: Path, hub: FaultServer) -> None:
    result = run(inv, hub=hub)
    assert result.code == 0, result.output[-3000:]
    assert re.search(rf"{HOST}\s+ok", summary(result.output))
    wait_healthy(device.http_port)


def test_verified_files_are_read_only(device: lab.Device, model: bytes) -> None:
    """The store belongs to the SSH user (pushes need no sudo); what was verified cannot be
    overwritten by a stray write."""
    sha = hashlib.sha256(model).hexdigest()
    store = "/var/lib/llama-docker/models"
    modes = device.exec("stat", "-c", "%a", f"{store}/{sha}.gguf", f"{store}/{sha}.ok").split()
    assert modes == ["444", "444"]
    write = device.exec("su", "pi", "-c", f"echo x >> {store}/{sha}.gguf 2>&1 || echo refused",
                        check=False)
    assert "refused" in write


def test_a_deploy_file_that_raises_says_not_run(inv: Path, hub: FaultServer) -> None:
    """A deploy file that fails while the plan is made: no host may read `ok`."""
    broken = inv / "broken_deploy.py"
    broken.write_text('raise RuntimeError("a bug in my deploy file")\n')
    result = deploy(inv / "inventory.py", entry=str(broken),
                    env={"HF_ENDPOINT": hub.url("").rstrip("/")})
    assert result.code != 0
    assert re.search(rf"{HOST}\s+NOT RUN\s+the run stopped before changing anything",
                     summary(result.output)), result.output[-3000:]
