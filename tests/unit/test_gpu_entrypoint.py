"""The server image's entrypoint on a GPU device, run here with a stub llama-server: every
layer offloaded at -lv 4 when a Vulkan device answers, the CPU with one line when none does
or when the server dies on the GPU. (The real llama-server's side is the lab's test_gpu.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

from llama_docker.device.units import FILES

# --list-devices answers FAKE_DEVICES; a GPU run exits FAKE_GPU_EXIT; a CPU run says so.
STUB = """#!/bin/sh
echo "run $*" >> "$FAKE_LOG"
case "$*" in
  --list-devices) printf 'Available devices:\\n%s\\n' "${FAKE_DEVICES:-  (none)}"; exit 0;;
  *"--device none"*) echo "cpu run"; exit 0;;
  *) exit "${FAKE_GPU_EXIT:-0}";;
esac
"""


def start(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "llama-server").write_text(STUB)
    (bin_dir / "llama-server").chmod(0o755)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x")
    log = tmp_path / "calls.log"
    proc = subprocess.run(
        ["sh", str(FILES / "entrypoint.sh"), "--ctx-size", "512"], capture_output=True,
        text=True, timeout=30,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "LLAMA_MODEL": str(model),
             "FAKE_LOG": str(log), **{f"FAKE_{k.upper()}": v for k, v in env.items()},
             **({"LLAMA_GPU": "vulkan", "LLAMA_GPU_LAYERS": "all"}
                if env.pop("gpu", "yes") == "yes" else {})})
    return proc, log.read_text().splitlines()


def test_vulkan_device_serves_with_every_layer_and_the_device_line(tmp_path: Path) -> None:
    proc, calls = start(tmp_path, devices="  Vulkan0: llvmpipe (LLVM 21.1.8, 256 bits)")
    assert proc.returncode == 0 and proc.stderr == ""
    assert calls[0] == "run --list-devices"
    assert calls[1].endswith("--ctx-size 512 --n-gpu-layers all --log-verbosity 4")
    assert len(calls) == 2


def test_no_vulkan_device_serves_on_cpu_with_one_line(tmp_path: Path) -> None:
    proc, calls = start(tmp_path)
    assert proc.stderr.strip() == ("llama-docker: gpu vulkan: llama-server sees no Vulkan "
                                   "device; serving on the CPU")
    assert calls[1].endswith("--ctx-size 512 --device none") and proc.stdout == "cpu run\n"


def test_server_dying_on_the_gpu_falls_back_to_cpu(tmp_path: Path) -> None:
    proc, calls = start(tmp_path, devices="  Vulkan0: AMD Custom GPU 0405 (RADV VANGOGH)",
                        gpu_exit="134")
    assert "llama-server exited with status 134 on the GPU; serving on the CPU" in proc.stderr
    assert calls[2].endswith("--device none") and proc.returncode == 0


def test_cpu_device_is_untouched(tmp_path: Path) -> None:
    proc, calls = start(tmp_path, gpu="no")
    assert calls == [f"run --host 0.0.0.0 --port 8080 --model {tmp_path}/m.gguf --ctx-size 512"]
