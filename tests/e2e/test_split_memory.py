"""A model bigger than any one device, split over three small ones: lab devices with a
container memory limit (their /proc/meminfo shows this machine's RAM; only their cgroup says
how small they are). The model fits none alone and all three together: the deploy
converges, the head answers the API, status shows the split, a second run changes nothing.
A worker's restart with its tensor cache: the link carries a small fraction of the bytes of
a cold start. A model the three together cannot hold: refused before any byte moves."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, deploy, http_json, wait_healthy, write_knobs
from tests.e2e.test_split import _inventory, _loopback_bytes
from tests.lab import lab
from tests.lab.tiny_model import write_tiny_gguf

pytestmark = pytest.mark.lab
HEAD, W1, W2 = "e2e-split-m0", "e2e-split-m1", "e2e-split-m2"
INDEX = {HEAD: 126, W1: 127, W2: 128}
LIMIT_MIB = 640
# Every weight tensor of a layer is 10 MiB or more (the worker's tensor cache keeps only
# those): n_embd 1664 (its square in F32 is 10.6 MiB), n_ff 2048 (13 MiB). 8 layers: about
# 650 MiB, more than one device's limit, so no device holds it alone.
SHAPE = {"n_embd": 1664, "n_ff": 2048, "n_head": 13, "n_layer": 8}
CACHE = "/var/lib/llama-docker/rpc-cache"


@pytest.fixture(scope="module")
def devices(device_image: str) -> Iterator[dict[str, lab.Device]]:
    devs = {n: lab.start_device(n, device_image, index=i, fresh=True, own_keys=True,
                                run_flags=("--memory", f"{LIMIT_MIB}m"))
            for n, i in INDEX.items()}
    yield devs
    for d in devs.values():
        lab.remove_device(d)


def _model(folder: Path, name: str, **shape: int) -> dict:
    path = folder / f"{name}.gguf"
    sha = write_tiny_gguf(path, seed=31, **{**SHAPE, **shape})
    return {"name": name, "path": str(path), "sha256": sha}


@pytest.fixture(scope="module")
def fleet(devices: dict[str, lab.Device], tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("split-memory")
    model = _model(folder, "tiny-big")
    assert Path(model["path"]).stat().st_size > LIMIT_MIB * 2**20
    write_knobs(folder, model=model, ctx_size=256, ram_margin_mib=32)
    inv = _inventory(folder, list(devices.values()), {HEAD: {"split_over": [W1, W2]}})
    start = time.monotonic()
    run = deploy(inv, timeout=2400)
    print(f"first run: {time.monotonic() - start:.0f} s")
    assert run.code == 0, run.output[-8000:]
    return {"folder": folder, "inv": inv, "model": model, "run": run}


def _status(inv: Path) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "status.py", str(inv)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_each_device_reads_its_cgroup_limit(devices: dict[str, lab.Device],
                                            fleet: dict[str, object]) -> None:
    """Seen: the run's split line gives each device less free memory than its limit (its
    /proc/meminfo says the machine's GiBs), and three shares"""
    run = fleet["run"]
    m = re.search(rf"\[{HEAD}\]\s+split: (\d+) layers here \((\d+) MiB free\), (\d+) layers on "
                  rf"{W1} \((\d+) MiB free\), (\d+) layers on {W2} \((\d+) MiB free\)",
                  run.output)  # type: ignore[attr-defined]
    assert m, run.output[-6000:]  # type: ignore[attr-defined]
    print(m.group(0))
    layers, free = [int(g) for g in m.groups()[0::2]], [int(g) for g in m.groups()[1::2]]
    assert sum(layers) == SHAPE["n_layer"] and all(n > 0 for n in layers), m.group(0)
    assert all(0 < f < LIMIT_MIB for f in free), m.group(0)
    meminfo = devices[W1].exec("awk", "/^MemTotal:/ {print $2}", "/proc/meminfo")
    assert int(meminfo) > 2 * LIMIT_MIB * 1024  # what a reading of /proc/meminfo alone sees


def test_the_head_serves_the_model_none_of_them_holds_alone(
        devices: dict[str, lab.Device], fleet: dict[str, object]) -> None:
    """Seen: /completion and /v1/chat/completions answered by the head; status shows the
    split, every device healthy | Left: a second run changes nothing"""
    head = devices[HEAD]
    wait_healthy(head.http_port, 300)
    status, body = http_json(f"http://127.0.0.1:{head.http_port}/completion",
                             {"prompt": "Hello", "n_predict": 8}, timeout=120)
    assert status == 200 and body.get("tokens_predicted", 0) > 0, body
    status, body = http_json(f"http://127.0.0.1:{head.http_port}/v1/chat/completions",
                             {"messages": [{"role": "user", "content": "Hi"}],
                              "max_tokens": 8}, timeout=120)
    assert status == 200 and body["choices"][0]["message"] is not None, body
    code, table = _status(fleet["inv"])  # type: ignore[arg-type]
    assert code == 0 and "3 of 3 hosts healthy" in table, table
    assert re.search(rf"split on {HEAD}: \d+ layers on {W1} \(up\), \d+ on {W2} \(up\)",
                     table), table
    again = deploy(fleet["inv"], timeout=1200)  # type: ignore[arg-type]
    assert again.code == 0, again.output[-4000:]
    for name in INDEX:
        assert again.changed(name) == 0, again.output[-4000:]


def _restart_worker_and_count(head: lab.Device, worker: lab.Device, *, cold: bool) -> int:
    """Bytes over the worker's loopback (its sshd handing the head's tensors to its RPC
    server) from its worker's restart until the head serves again."""
    if cold:
        worker.exec("sh", "-c", f"rm -rf {CACHE}/*")
    before = _loopback_bytes(worker)
    worker.exec("systemctl", "restart", "llama-docker-rpc.service")
    deadline = time.monotonic() + 240
    time.sleep(5)
    while time.monotonic() < deadline:
        try:
            status, body = http_json(f"http://127.0.0.1:{head.http_port}/completion",
                                     {"prompt": "Hello", "n_predict": 2}, timeout=30)
            if status == 200 and body.get("tokens_predicted", 0) > 0:
                return _loopback_bytes(worker) - before
        except OSError:
            pass
        time.sleep(2)
    raise AssertionError("the head did not serve again after its worker's restart:\n"
                         + lab.logs(head)[-3000:])


def test_a_worker_restart_with_its_tensor_cache_sends_little(
        devices: dict[str, lab.Device], fleet: dict[str, object]) -> None:
    """Seen: after a cold restart (cache emptied) the link carries the worker's layers; after
    a warm one (cache kept) a small fraction of that"""
    head, worker = devices[HEAD], devices[W1]
    wait_healthy(head.http_port, 300)
    cold = _restart_worker_and_count(head, worker, cold=True)
    cached = worker.exec("sh", "-c", f"find {CACHE} -type f | wc -l")
    warm = _restart_worker_and_count(head, worker, cold=False)
    print(f"bytes over the worker's loopback: cold {cold:,}, warm {warm:,} "
          f"({warm / cold:.3f}); {cached.strip()} tensors cached")
    assert cold > 50 * 2**20 and int(cached) > 0, (cold, cached)
    assert warm < cold * 0.15, (cold, warm)


def test_a_sum_that_does_not_fit_is_refused_before_any_byte_moves(
        devices: dict[str, lab.Device], fleet: dict[str, object]) -> None:
    """Seen: a model the three cannot hold is refused on the head in one line with the
    numbers; its file is on no device (not even a .part); the split model still serves"""
    folder = fleet["folder"]
    assert isinstance(folder, Path)
    big = _model(folder, "tiny-huge", n_layer=30)
    write_knobs(folder, model=big, ctx_size=256, ram_margin_mib=32)
    run = deploy(fleet["inv"], timeout=1200)  # type: ignore[arg-type]
    assert run.code != 0, run.output[-4000:]
    size = r"[\d.]+ [GM]iB"
    line = re.search(rf"not enough memory for tiny-huge split over 3 devices: needs {size} "
                     rf"\({size} model \+ {size} context\), has {size} free after a "
                     rf"32 MiB margin on each \({HEAD} {size}, {W1} {size}, {W2} {size} free\)",
                     run.output)
    assert line, run.output[-4000:]
    print(line.group(0))
    for dev in devices.values():
        store = dev.exec("sh", "-c", "ls -a /var/lib/llama-docker/models 2>&1; true")
        assert big["sha256"] not in store, (dev.name, store)
    wait_healthy(devices[HEAD].http_port, 120)
