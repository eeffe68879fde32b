"""Serving overhead: llama-server in our hardened container against the same binary plain.

Both run on the same lab device from the same image (so the same llama-server build) with
the same model file, --ctx-size and --threads: ours is the systemd unit the deploy wrote
(published port, read-only root, no capabilities, pids limit); the reference is `docker run
--network host --entrypoint llama-server` with no limits. They are queried in turn, never at
once, with the same prompt, n_predict and temperature 0; tokens/s is llama-server's own
`timings.predicted_per_second`. Also: seconds from `systemctl restart llama-docker` to the
first /health 200, against starting the plain container to its first /health 200.
"""

from __future__ import annotations

import json
import re
import shlex

from .common import (
    WORK,
    Lab,
    Result,
    Row,
    deploy,
    interleave,
    inventory,
    lab,
    med,
    ratio_rounds,
    rounds,
)
from .common import write_knobs as knobs
from .fleet import fleet_model

PORT, DIRECT_PORT = 8080, 8081
N_PREDICT = 16  # short requests, many pairs: each pair sees the same load
PROMPT = "The quick brown fox jumps over the lazy dog. " * 4
DIRECT = "bench-direct"
HEALTH_WAIT = (  # bounded: 600 polls of 0.1 s
    "i=0; while [ $i -lt 600 ]; do [ \"$(curl -s -o /dev/null -w '%{{http_code}}' "
    "http://127.0.0.1:{port}/health)\" = 200 ] && break; i=$((i+1)); sleep 0.1; done")


def _tokens_per_s(dev: lab.Device, port: int) -> float:
    body = json.dumps({"prompt": PROMPT, "n_predict": N_PREDICT, "temperature": 0,
                       "cache_prompt": False})
    out = dev.exec("curl", "-sf", "--max-time", "120", "-H", "Content-Type: application/json",
                   "-d", body, f"http://127.0.0.1:{port}/completion", timeout=150)
    reply = json.loads(out)
    assert reply["tokens_predicted"] == N_PREDICT, reply.get("tokens_predicted")
    return float(reply["timings"]["predicted_per_second"])


def _timed_on_device(dev: lab.Device, action: str, port: int) -> float:
    """Seconds from `action` to the first /health 200, measured by the device's clock."""
    script = (f"t0=$(date +%s.%N); {action}; {HEALTH_WAIT.format(port=port)}; "
              "t1=$(date +%s.%N); echo \"$t0 $t1\"")
    t0, t1 = dev.exec("sh", "-c", script, timeout=120).split()
    return float(t1) - float(t0)


def bench(L: Lab) -> Result:
    (dev,) = L.converge(1)
    local, sha, size = fleet_model()
    folder = WORK / "serve"
    inv = inventory(folder, [dev])
    knobs(folder, model={"name": "fleet", "path": local, "sha256": sha})
    deploy(inv).ok()  # serves the fleet model (a no-op when the fleet benchmark left it there)
    unit = dev.exec("cat", "/etc/systemd/system/llama-docker.service")
    image = re.search(r"(llama-docker/server:\w+)", unit).group(1)  # type: ignore[union-attr]
    ctx = re.search(r"--ctx-size (\d+)", unit).group(1)  # type: ignore[union-attr]
    threads = re.search(r"--threads (\d+)", unit).group(1)  # type: ignore[union-attr]
    run_direct = " ".join(shlex.quote(a) for a in [
        "docker", "run", "-d", "--rm", "--name", DIRECT, "--network", "host", "--entrypoint",
        "llama-server", "-v", "/var/lib/llama-docker/models:/models:ro", image, "--host",
        "127.0.0.1", "--port", str(DIRECT_PORT), "--model", "/models/current.gguf",
        "--ctx-size", ctx, "--threads", threads]) + " >/dev/null"
    stop_direct = f"docker rm -f {DIRECT} >/dev/null 2>&1; true"
    try:
        dev.exec("sh", "-c", f"{stop_direct}; {run_direct}")
        _timed_on_device(dev, "true", DIRECT_PORT)
        _timed_on_device(dev, "true", PORT)
        for port in (PORT, DIRECT_PORT):  # warm both (page cache, first-request setup)
            _tokens_per_s(dev, port)
        tps = interleave({"container": lambda: _tokens_per_s(dev, PORT),
                          "direct": lambda: _tokens_per_s(dev, DIRECT_PORT)}, rounds(15))
        start = interleave({
            "restart": lambda: _timed_on_device(dev, "systemctl restart llama-docker", PORT),
            "direct start": lambda: _timed_on_device(dev, f"{stop_direct}; {run_direct}",
                                                     DIRECT_PORT)}, rounds(3))
    finally:
        dev.exec("sh", "-c", stop_direct)
    pairs = sorted(a / b for a, b in zip(tps["container"], tps["direct"], strict=True))
    r = med(pairs)
    s = ratio_rounds(start["direct start"], start["restart"])
    rows = [
        Row("serving tokens/s, our container", f"{med(tps['container']):.1f} tok/s",
            f"plain docker run, host network {med(tps['direct']):.1f} tok/s", r, ">= 0.95",
            r >= 0.95),
        Row("restart to first /health 200", f"{med(start['restart']):.2f} s",
            f"plain container start {med(start['direct start']):.2f} s", s,
            "report (> 1: ours faster)", None),
    ]
    details = (
        f"Model: the {size >> 20} MiB generated F32 model of the fleet benchmark; "
        f"--ctx-size {ctx} --threads {threads} for both; {N_PREDICT} tokens at temperature 0 "
        "per request, the requests made from inside the device, each server queried in turn "
        "(the other idle). tokens/s per round: container "
        + ", ".join(f"{x:.1f}" for x in tps["container"]) + "; direct "
        + ", ".join(f"{x:.1f}" for x in tps["direct"])
        + f". Per-pair ratios from {pairs[0]:.2f} to {pairs[-1]:.2f}, middle half "
        f"{pairs[len(pairs) // 4]:.2f} to {pairs[(3 * len(pairs)) // 4]:.2f}"
        + ". Restart to /health 200 (s): ours " + ", ".join(f"{x:.2f}" for x in start["restart"])
        + "; plain container start " + ", ".join(f"{x:.2f}" for x in start["direct start"])
        + ". Ratio = median over rounds of container/direct (each round is a back-to-back "
        "pair: llama.cpp's threads wait on each other at every step, so any other load on "
        "these 2 cores swings tokens/s several-fold from one minute to the next; the pairs "
        "see the same load). A restart does more than a first start: systemd stops the old "
        "container (ExecStop `docker stop --time 10`), removes it (ExecStartPre `docker rm "
        "-f`), then `docker run` publishes the port (docker-proxy, iptables) and starts it; "
        "the reference only removes and starts a container on the host network.")
    return Result("serve", rows, details)
