"""Fixtures for the lab tests: real devices, a real deploy over real SSH."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab import lab
from tests.lab.tiny_model import write_tiny_gguf

REPO = lab.REPO


@dataclass
class Run:
    """One `pyinfra ... deploy.py` run and what it reported."""

    code: int
    output: str

    def changed(self, host: str) -> int:
        """Operations pyinfra reports as changed ('Success') on this host."""
        return len(re.findall(rf"\[{re.escape(host)}\]\s+Success", self.output))

    def no_change(self, host: str) -> int:
        return len(re.findall(rf"\[{re.escape(host)}\]\s+No changes", self.output))


# This interpreter's pyinfra, not the first on PATH: another one may import another
# checkout's tasks (an editable install elsewhere).
PYINFRA = [sys.executable, "-m", "pyinfra"]

def make_model(folder: Path, name: str, seed: int) -> dict:
    path = folder / f"{name}.gguf"
    sha = write_tiny_gguf(path, seed=seed)
    return {"name": name, "path": str(path), "sha256": sha}


def free_port() -> int:
    """A port free on 127.0.0.1 now (for a lab HTTP server the test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def old_and_new_models(folder: Path, seeds: tuple[int, int]) -> dict[str, bytes]:
    """The file a model server serves first, and what it serves later under the same URL."""
    out = {}
    for key, seed in zip(("old", "new"), seeds, strict=True):
        path = folder / f"{key}.gguf"
        write_tiny_gguf(path, seed=seed)
        out[key] = path.read_bytes()
    assert sha256_of(out["old"]) != sha256_of(out["new"])
    return out


def write_knobs(inv_dir: Path, **knobs: object) -> None:
    """Lab knobs for the group 'lab' beside the inventory (pyinfra reads them from there)."""
    # GitHub is not reachable from the lab: the upstream UI only where a test serves it.
    base = {"registry_mirror": lab.REGISTRY, "apt_check_valid_until": False,
            "cache_dir": str(inv_dir / "cache"), "webui": "simplechat"}
    base.update(knobs)
    (inv_dir / "group_data").mkdir(parents=True, exist_ok=True)
    text = "".join(f"{k} = {v!r}\n" for k, v in base.items())
    (inv_dir / "group_data" / "lab.py").write_text(text)


def deploy(inventory: Path, *extra: str, entry: str = "deploy.py", timeout: int = 1200,
           env: dict[str, str] | None = None) -> Run:
    # A generated API key goes to the inventory's folder, never the runner's ~/.config.
    own = {"XDG_CONFIG_HOME": str(Path(inventory).parent / "config")}
    proc = subprocess.run(
        [*PYINFRA, "-y", str(inventory), entry, *extra], cwd=REPO,
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **own, **(env or {})},
    )
    return Run(proc.returncode, proc.stdout + proc.stderr)


def http_json(url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def wait_healthy(port: int, seconds: float = 120) -> None:
    """Bounded wait for /health 200 on a published lab port."""
    deadline = time.monotonic() + seconds
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, _ = http_json(f"http://127.0.0.1:{port}/health", timeout=3)
            if status == 200:
                return
            last = status
        except OSError as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"/health on 127.0.0.1:{port} not 200 after {seconds}s: {last}")


# Lab modules, slowest first (a full run's times), then the rest (then any unit tests): the
# test workers (`-n 2 --dist loadfile`, Makefile) take modules in this order, so no worker
# starts a long module last while the other one idles.
SLOW_FIRST = ("test_arm64", "test_gpu", "test_image_once", "test_relay",
              "test_interrupt_and_clock", "test_split_memory", "test_gateway",
              "test_user_config", "test_model_lifecycle", "test_ssh_config", "test_split",
              "test_split_steamos",
              "test_steamos", "test_debian_docker", "test_port_and_cors", "test_packaged",
              "test_first_run", "test_bundle", "test_fanout", "test_debian_podman",
              "test_several_models", "test_faults", "test_webui", "test_lock", "test_direct",
              "test_status_and_webui", "test_simplechat_port", "test_empty_cache")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        if "/unit/" in module:  # unit modules share some names with the lab's
            return len(SLOW_FIRST) + 1
        name = Path(module).stem
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: each module keeps its own order


@pytest.fixture(scope="session")
def lab_ready() -> None:
    """Images, network, forwarder and mirror: built once per session (under a lock, so test
    workers running side by side build them once, the others finding them ready)."""
    with lab.locked("setup"):
        tags = lab.images.build_all()
        lab.ensure_network()
        lab.ensure_keys()
        lab.ensure_dns(tags["infra"])
        lab.ensure_registry(tags["infra"], tags["debian-forky"])


def own_known_hosts(folder: Path, device: lab.Device) -> dict:
    """The device's host data with a known_hosts file of the module's own: other lab tests,
    run beside this one, rewrite the shared file as their devices come and go."""
    pub = (lab.STATE / device.name / "ssh_host_ed25519_key.pub").read_text().split()
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{device.ssh_port} {pub[0]} {pub[1]}\n")
    return {**device.host_data(), "ssh_known_hosts_file": str(known)}


def inventory(folder: Path, devices: list[lab.Device]) -> Path:
    path = folder / "inventory.py"
    path.write_text(f"lab = {[(d.name, d.host_data()) for d in devices]!r}\n")
    return path


@pytest.fixture(scope="session")
def device_image(lab_ready: None) -> str:
    return lab.images.DEVICE.tag


def fresh_device(name: str, index: int):  # noqa: ANN201 - a pytest fixture
    """A module's own fresh Debian lab device, removed when the module is done."""

    @pytest.fixture(scope="module")
    def device(device_image: str) -> Iterator[lab.Device]:
        dev = lab.start_device(name, device_image, index=index, fresh=True)
        yield dev
        lab.remove_device(dev)

    return device
