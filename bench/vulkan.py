"""Vulkan against the CPU: tokens/s of the same server, same device, same model, side by side.

The lab has no GPU: its Vulkan device is lavapipe, Mesa's software rasteriser, made visible
to ggml by the lab's hook (LLAMA_DOCKER_LAB_VK_VISIBLE_DEVICES, tasks/gpu.py). So this row
proves the Vulkan path serves and measures what it costs here; a ratio below 1 is expected and
no speed-up is claimed (a Steam Deck's RADV is a real GPU: see README). One device of its own
(e2e-gpu-bench, lab index 62), deployed with `gpu = "vulkan"`; the CPU reference is the same
image and model run plainly with `--device none` on another port. The two are queried in
turn, never at once; tokens/s is llama-server's own `timings.predicted_per_second`.
"""

from __future__ import annotations

import json
import re
import shlex

from llama_docker.tasks.gpu import LAB_VISIBLE

from .common import (
    WORK,
    Lab,
    Result,
    Row,
    deploy,
    images,
    interleave,
    inventory,
    lab,
    log,
    med,
    model,
    rounds,
    write_knobs,
)

NAME, INDEX = "e2e-gpu-bench", 62
PORT, CPU_PORT = 8080, 8082
N_PREDICT = 16
PROMPT = "The quick brown fox jumps over the lazy dog. " * 4
CPU = "bench-cpu"
SHAPE = {"n_embd": 256, "n_ff": 1024, "n_layer": 4, "n_head": 8}
HEALTH_WAIT = ("i=0; while [ $i -lt 600 ]; do [ \"$(curl -s -o /dev/null -w '%{{http_code}}' "
               "http://127.0.0.1:{port}/health)\" = 200 ] && break; i=$((i+1)); sleep 0.2; done")


def _tokens_per_s(dev: lab.Device, port: int) -> float:
    body = json.dumps({"prompt": PROMPT, "n_predict": N_PREDICT, "temperature": 0,
                       "cache_prompt": False, "ignore_eos": True})
    out = dev.exec("curl", "-sf", "--max-time", "120", "-H", "Content-Type: application/json",
                   "-d", body, f"http://127.0.0.1:{port}/completion", timeout=150)
    reply = json.loads(out)
    assert reply["tokens_predicted"] == N_PREDICT, reply.get("tokens_predicted")
    return float(reply["timings"]["predicted_per_second"])


def bench(L: Lab) -> Result:
    L.devices(0)  # the lab's images, network, DNS and registry
    dev = lab.start_device(NAME, images.DEVICE.tag, INDEX, fresh=True)
    try:
        return _measure(dev)
    finally:
        lab.remove_device(dev)


def _measure(dev: lab.Device) -> Result:
    path, sha = model("vulkan", seed=62, **SHAPE)
    folder = WORK / "vulkan"
    inv = inventory(folder, [dev])
    write_knobs(folder, model={"name": "vk", "path": str(path), "sha256": sha}, gpu="vulkan")
    log("deploy with gpu = 'vulkan' (lavapipe)")
    deploy(inv, extra_env={LAB_VISIBLE: "0"}).ok()
    unit = dev.exec("cat", "/etc/systemd/system/llama-docker.service")
    image = re.search(r"(llama-docker/server:\w+)", unit).group(1)  # type: ignore[union-attr]
    ctx = re.search(r"--ctx-size (\d+)", unit).group(1)  # type: ignore[union-attr]
    threads = re.search(r"--threads (\d+)", unit).group(1)  # type: ignore[union-attr]
    log_lines = dev.exec("sh", "-c", "docker logs llama 2>&1 | grep -E 'using device|offloaded'")
    assert "Vulkan0" in log_lines, log_lines
    run_cpu = " ".join(shlex.quote(a) for a in [
        "docker", "run", "-d", "--rm", "--name", CPU, "--network", "host", "--entrypoint",
        "llama-server", "-v", "/var/lib/llama-docker/models:/models:ro", image, "--host",
        "127.0.0.1", "--port", str(CPU_PORT), "--model", "/models/current.gguf",
        "--ctx-size", ctx, "--threads", threads, "--device", "none"]) + " >/dev/null"
    stop_cpu = f"docker rm -f {CPU} >/dev/null 2>&1; true"
    try:
        dev.exec("sh", "-c", f"{stop_cpu}; {run_cpu}; {HEALTH_WAIT.format(port=CPU_PORT)}",
                 timeout=200)
        for port in (PORT, CPU_PORT):  # warm both
            _tokens_per_s(dev, port)
        tps = interleave({"vulkan": lambda: _tokens_per_s(dev, PORT),
                          "cpu": lambda: _tokens_per_s(dev, CPU_PORT)}, rounds(9))
    finally:
        dev.exec("sh", "-c", stop_cpu)
    pairs = sorted(v / c for v, c in zip(tps["vulkan"], tps["cpu"], strict=True))
    r = med(pairs)
    rows = [Row("tokens/s, Vulkan (lab: lavapipe, software) over CPU",
                f"{med(tps['vulkan']):.1f} tok/s", f"same image on the CPU "
                f"{med(tps['cpu']):.1f} tok/s", r,
                "report (lab's software Vulkan: below 1 expected, no speed claimed)", None)]
    details = (
        f"Model: a generated F32 model ({SHAPE['n_layer']} layers, embedding "
        f"{SHAPE['n_embd']}), every layer offloaded (`{log_lines.strip().splitlines()[-1]}`"
        f"); --ctx-size {ctx} --threads {threads} for both; {N_PREDICT} tokens at temperature "
        "0 per request, from inside the device, each server queried in turn. tokens/s per "
        "round: vulkan " + ", ".join(f"{x:.1f}" for x in tps["vulkan"]) + "; cpu "
        + ", ".join(f"{x:.1f}" for x in tps["cpu"]) + ". Vulkan here is lavapipe: Mesa "
        "compiles ggml's shaders for the CPU and runs them on llvmpipe's threads, so this "
        "measures the plumbing's cost, not a GPU.")
    return Result("vulkan", rows, details, extra={"ratio": r})
