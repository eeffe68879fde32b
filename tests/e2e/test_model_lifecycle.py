"""A model's life on a device: interrupted push, bad model rolled back, rollback, prune, full
disk. One device, tests in file order."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (
    PYINFRA,
    REPO,
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
from tests.lab.tiny_model import sha256_file, write_tiny_gguf

pytestmark = pytest.mark.lab
HOST = "e2e-lifecycle"
STORE = "/var/lib/llama-docker/models"


device = fresh_device(HOST, index=21)


@pytest.fixture(scope="module")
def inv(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return inventory(tmp_path_factory.mktemp("inv"), [device]).parent


@pytest.fixture(scope="module")
def models(inv: Path) -> dict[str, dict]:
    big = inv / "tiny-big.gguf"
    bad = inv / "not-a-model.gguf"
    bad.write_bytes(b"this is not a GGUF file\n" * 1000)
    return {
        "a": make_model(inv, "tiny-a", seed=11),
        "big": {"name": "tiny-big", "path": str(big),
                "sha256": write_tiny_gguf(big, seed=12, n_embd=1024, n_ff=4096,
                                                  n_head=16)},
        "bad": {"name": "broken", "path": str(bad), "sha256": sha256_file(bad)},
    }


def current(device: lab.Device, link: str = "current.gguf") -> str:
    return device.exec("readlink", f"{STORE}/{link}").strip()


def part_size(device: lab.Device, sha: str) -> int:
    out = device.exec("sh", "-c", f"wc -c < {STORE}/{sha}.gguf.part 2>/dev/null || echo 0")
    return int(out.strip() or 0)


def deploy_ok(inv: Path, **knobs: object) -> Run:
    write_knobs(inv, **knobs)
    run = deploy(inv / "inventory.py")
    assert run.code == 0, run.output[-4000:]
    return run


def test_first_model(device: lab.Device, inv: Path, models: dict) -> None:
    deploy_ok(inv, model=models["a"])
    assert current(device) == f"{models['a']['sha256']}.gguf"


def test_interrupted_push_resumes_from_the_device_part(device: lab.Device, inv: Path,
                                                       models: dict) -> None:
    """Fault: the link drops mid-push (controller killed at a quarter of the file) | Seen:
    the next run says `resumed from byte N` | Left: old model serving meanwhile; the `.part`
    kept and completed, verified, then switched"""
    big = models["big"]
    size = Path(big["path"]).stat().st_size
    write_knobs(inv, model=big)
    device.limit_rate(400)  # 50 MB/s: slow enough to cut the push at a quarter
    proc = subprocess.Popen([*PYINFRA, "-y", str(inv / "inventory.py"), "deploy.py"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and part_size(device, big["sha256"]) < size // 4:
            assert proc.poll() is None, "deploy finished before it could be interrupted"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the link drops: pyinfra and its ssh die
        proc.wait(timeout=30)
        device.limit_rate(None)
    kept = part_size(device, big["sha256"])
    assert 0 < kept < size
    assert current(device) == f"{models['a']['sha256']}.gguf"  # old model still served
    run = deploy_ok(inv, model=big)
    m = re.search(r"sent (\d+) bytes of tiny-big.gguf via \w+, resumed from byte (\d+)",
                  run.output)
    assert m, run.output[-3000:]
    sent, resumed = int(m[1]), int(m[2])
    assert resumed >= kept and sent == size - resumed
    assert current(device) == f"{big['sha256']}.gguf"
    out = device.exec("sha256sum", f"{STORE}/{big['sha256']}.gguf")
    assert out.split()[0] == big["sha256"]


def test_model_that_fails_health_is_rolled_back(device: lab.Device, inv: Path,
                                                models: dict) -> None:
    """Fault: a new model that llama-server cannot load | Seen: `the new model failed its
    health check (...); rolled back to <sha>.gguf, it answers again` | Left: the previous
    model serving; the run fails that host"""
    write_knobs(inv, model=models["bad"], health_timeout=20)
    run = deploy(inv / "inventory.py")
    assert run.code != 0
    assert "the new model failed its health check" in run.output
    assert f"rolled back to {models['big']['sha256']}.gguf, it answers again" in run.output
    assert current(device) == f"{models['big']['sha256']}.gguf"
    assert current(device, "previous.gguf") == f"{models['a']['sha256']}.gguf"
    wait_healthy(device.http_port, seconds=60)


def test_rollback_command_serves_previous(device: lab.Device, inv: Path, models: dict) -> None:
    write_knobs(inv, model=models["big"])
    run = deploy(inv / "inventory.py", entry="rollback.py")
    assert run.code == 0, run.output[-3000:]
    assert current(device) == f"{models['a']['sha256']}.gguf"
    assert current(device, "previous.gguf") == f"{models['big']['sha256']}.gguf"
    status, body = http_json(f"http://127.0.0.1:{device.http_port}/completion",
                             {"prompt": "Hi", "n_predict": 2, "ignore_eos": True})
    assert status == 200 and body["tokens_predicted"] == 2


def test_prune_keeps_current_and_previous(device: lab.Device, inv: Path, models: dict) -> None:
    before = device.exec("ls", STORE).split()
    assert f"{models['bad']['sha256']}.gguf" in before
    deploy_ok(inv, model=models["a"], models_keep=2)
    after = device.exec("ls", STORE).split()
    assert f"{models['bad']['sha256']}.gguf" not in after
    assert f"{models['bad']['sha256']}.ok" not in after
    for key in ("a", "big"):
        assert f"{models[key]['sha256']}.gguf" in after


def test_new_model_leaves_keep_models_and_a_quiet_next_run(device: lab.Device, inv: Path,
                                                           models: dict) -> None:
    new = make_model(inv, "tiny-next", seed=15)
    deploy_ok(inv, model=new, models_keep=2)
    stored = sorted(n for n in device.exec("ls", STORE).split() if re.fullmatch(
        r"[0-9a-f]{64}\.gguf", n))
    assert stored == sorted([f"{new['sha256']}.gguf", f"{models['a']['sha256']}.gguf"])
    again = deploy_ok(inv, model=new, models_keep=2)
    assert again.changed(HOST) == 0, again.output[-3000:]
    deploy_ok(inv, model=models["a"], models_keep=2)  # back, for the tests below


def test_full_disk_refused_before_transfer(device: lab.Device, inv: Path, models: dict) -> None:
    """Fault: models_dir on a disk too small for the model | Seen: `not enough disk at <dir>:
    needs N, has M free` | Left: not a byte written; the old model still serving"""
    device.exec("sh", "-c", "mkdir -p /mnt/small && mount -t tmpfs -o size=4m tmpfs /mnt/small")
    new = make_model(inv, "tiny-new", seed=13)
    write_knobs(inv, model=dict(new, path=models["big"]["path"],
                                sha256=models["big"]["sha256"]),
                models_dir="/mnt/small/models", disk_margin_mib=1)
    run = deploy(inv / "inventory.py")
    assert run.code != 0
    assert "not enough disk at /mnt/small/models" in run.output
    assert "Traceback" not in run.output
    assert device.exec("ls", "-A", "/mnt/small").split() == []  # not a byte moved
    assert current(device) == f"{models['a']['sha256']}.gguf"
    status, _ = http_json(f"http://127.0.0.1:{device.http_port}/health")
    assert status == 200


def test_two_deploys_at_once_do_not_corrupt_the_store(device: lab.Device, inv: Path) -> None:
    """Fault: two deploys to the same device at once | Seen: the second says `another deploy
    (<controller> <pid>) is writing this model on the device` | Left: the first completes;
    the stored file verifies"""
    path = inv / "tiny-conc.gguf"
    sha = write_tiny_gguf(path, seed=14, n_embd=1024, n_ff=4096, n_head=16)
    write_knobs(inv, model={"name": "tiny-conc", "path": str(path), "sha256": sha})
    device.limit_rate(200)
    first = subprocess.Popen([*PYINFRA, "-y", str(inv / "inventory.py"), "deploy.py"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and part_size(device, sha) == 0:
            assert first.poll() is None, "the first deploy ended before it pushed"
            time.sleep(0.1)
        second = deploy(inv / "inventory.py")
        assert second.code != 0
        assert "is writing this model on the device" in second.output, second.output[-2000:]
        out, _ = first.communicate(timeout=600)
    finally:
        device.limit_rate(None)
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out[-3000:]
    assert current(device) == f"{sha}.gguf"
    assert device.exec("sha256sum", f"{STORE}/{sha}.gguf").split()[0] == sha
