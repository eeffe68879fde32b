"""The status table's BACKEND column and `gpu_device`: the status script run here against
stub docker/podman logs (the lines are llama-server's own, seen in the lab)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from llama_docker.device.target import choose
from llama_docker.knobs import config
from llama_docker.knobs.defaults import DEFAULTS
from llama_docker.status import gpu as gpu_status
from llama_docker.status import parse, probe, table
from llama_docker.status.row import Row

USING = ("0.00.794.200 I llama_prepare_model_devices: using device Vulkan0 (llvmpipe (LLVM "
         "21.1.8, 256 bits)) (unknown id) - 22472 MiB free")
FELL = "llama-docker: gpu vulkan: llama-server sees no Vulkan device; serving on the CPU"


def run(tmp_path: Path, profile: str, log: str | None) -> Row:
    """The real status script with stub commands; `log` None: no container to read."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    runtime = "podman" if profile == "steamos" else "docker"
    inspect = "exit 1" if log is None else "exit 0"
    stubs = {
        runtime: (f'echo "$*" >> {tmp_path}/rt.log\n'
                  f'case "$1" in container) {inspect};; logs) printf "%s\\n" "hello" '
                  f"{json.dumps(log or '')} 'offloaded 3/3 layers to GPU';; esac"),
        "sudo": '[ "$1" = -n ] && shift; exec "$@"',
        "systemctl": "echo active",
        "curl": "exit 7",
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    c = config.load({**DEFAULTS, "models_dir": str(tmp_path / "m")}, "h")
    t = choose(profile, "auto", c.models_dir, str(tmp_path), c.service_name)
    proc = subprocess.run(["sh", "-c", probe.script(c, t, 1000)], capture_output=True,
                          text=True, timeout=30,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)})
    return parse.row_from("h", c, t, parse.parse(proc.stdout.splitlines()))


def test_vulkan_row_names_the_device(tmp_path: Path) -> None:
    row = run(tmp_path, "debian", USING)
    assert row.backend == "vulkan"
    assert row.gpu_device == "Vulkan0: llvmpipe (LLVM 21.1.8, 256 bits)"
    assert table.table([row]).splitlines()[1].endswith("  vulkan")
    assert json.loads(table.to_json([row]))[0]["gpu_device"].startswith("Vulkan0")
    # rootful: the log is root's, read with sudo -n
    assert (tmp_path / "rt.log").read_text().splitlines()[-2:] == ["container inspect llama",
                                                                   "logs llama"]


def test_cpu_rows(tmp_path: Path) -> None:
    assert run(tmp_path / "a", "debian", "").backend == "cpu"  # a CPU server names no device
    fell = run(tmp_path / "b", "steamos", FELL)
    assert (fell.backend, fell.gpu_device) == ("cpu", None)
    assert run(tmp_path / "c", "debian", None).backend is None  # nothing to read: unknown


def test_macs() -> None:
    c = config.load(DEFAULTS, "mac")
    native = choose("macos", "native", c.models_dir, "/Users/me", c.service_name)
    colima = choose("macos", "docker", c.models_dir, "/Users/me", c.service_name)
    assert gpu_status.backend(native, {}) == ("metal", None)
    assert gpu_status.backend(colima, {}) == ("cpu", None)
