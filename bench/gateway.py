"""Gateway latency: a short completion through the fleet gateway against the device directly.

Three bench devices: one serves a tiny model, one is a gateway-only box (`gateway = "only"`,
HAProxy in its container), and a third is the client, as a laptop on the LAN would be: it
asks the server directly and through the gateway, alternating (D G, G D, ...), with curl,
which times each request itself (`time_total`, a new connection each, like the reference).
So both paths cross the lab network once to their first hop; the gateway's path adds the
gateway box's DNAT, HAProxy (parsing the body for its "model") and one more hop. Also the
gateway container's memory, from `docker stats`, after the run.
"""

from __future__ import annotations

import json
import math
import shlex

from .common import WORK, Lab, Result, Row, deploy, lab, log, model, rounds, write_knobs

PORT = 8080  # the server's port, and the gateway's on its own box
PAIRS = 300
WARM = 10
BODY = {"model": "gw-tiny", "prompt": "Hi", "max_tokens": 4, "temperature": 0,
        "ignore_eos": True}


def _inventory(server: lab.Device, box: lab.Device, local: str, sha: str) -> None:
    folder = WORK / "gateway"
    folder.mkdir(parents=True, exist_ok=True)
    hosts = [(server.name, {**server.host_data(), "lan_address": server.ip,
                            "model": {"name": "gw-tiny", "path": local, "sha256": sha},
                            "threads": 1}),
             (box.name, {**box.host_data(), "lan_address": box.ip, "gateway": "only",
                         "gateway_port": PORT})]
    (folder / "inventory.py").write_text(f"lab = {hosts!r}\n")
    write_knobs(folder)


def _script(direct: str, gateway: str, pairs: int) -> str:
    """Prints `d|g seconds http_code` per request, the two paths alternating in order."""
    curl = ("curl -s -o /dev/null --max-time 30 -H 'Content-Type: application/json' -d "
            + shlex.quote(json.dumps(BODY)) + " -w '%{time_total} %{http_code}\\n'")
    return (f"for i in $(seq {pairs}); do "
            "if [ $((i % 2)) = 0 ]; then order='d g'; else order='g d'; fi; "
            "for w in $order; do printf '%s ' $w; "
            f'if [ $w = d ]; then {curl} {shlex.quote(direct)}; '
            f"else {curl} {shlex.quote(gateway)}; fi; done; done")


def _measure(client: lab.Device, direct: str, gateway: str, pairs: int
             ) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {"d": [], "g": []}
    out = client.exec("sh", "-c", _script(direct, gateway, pairs), timeout=60 + pairs * 2)
    for line in out.splitlines():
        which, seconds, code = line.split()
        if code != "200":
            raise RuntimeError(f"{'direct' if which == 'd' else 'gateway'} answered {code}")
        got[which].append(float(seconds) * 1000)
    if len(got["d"]) != pairs or len(got["g"]) != pairs:
        raise RuntimeError(f"expected {pairs} answers each, got {out[-500:]}")
    return got


def pct(xs: list[float], p: float) -> float:
    """The p-th percentile, nearest rank."""
    s = sorted(xs)
    return s[min(len(s), max(1, math.ceil(p / 100 * len(s)))) - 1]


def _memory_mib(box: lab.Device) -> float:
    use = box.exec("docker", "stats", "--no-stream", "--format", "{{.MemUsage}}",
                   "llama-gateway").split("/")[0].strip()
    units = {"KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0, "B": 1 / (1 << 20)}
    for unit, factor in units.items():
        if use.endswith(unit):
            return float(use[: -len(unit)]) * factor
    raise RuntimeError(f"docker stats said {use!r}")


def bench(L: Lab) -> Result:
    server, box, client = L.devices(3)
    path, sha = model("gw-tiny", seed=81)
    _inventory(server, box, str(path), sha)
    log("deploy: a server and a gateway-only box")
    deploy(WORK / "gateway" / "inventory.py").ok()
    direct = f"http://{server.ip}:{PORT}/v1/completions"
    gateway = f"http://{box.ip}:{PORT}/v1/completions"
    _measure(client, direct, gateway, WARM)
    pairs = max(20, rounds(PAIRS))
    ms = _measure(client, direct, gateway, pairs)
    mem = _memory_mib(box)
    # Each pair ran back to back: its difference sees one load, as the percentiles do not.
    added = sorted(g - d for g, d in zip(ms["g"], ms["d"], strict=True))
    slow = {k: sum(x > 100 for x in v) for k, v in ms.items()}
    d50, g50, d95, g95 = (pct(ms["d"], 50), pct(ms["g"], 50), pct(ms["d"], 95),
                          pct(ms["g"], 95))
    log(f"p50 direct {d50:.1f} ms, gateway {g50:.1f} ms; p95 {d95:.1f} / {g95:.1f} ms; "
        f"memory {mem:.1f} MiB")
    rows = [
        Row("gateway latency, p50 of a short completion", f"{g50:.1f} ms through the gateway",
            f"{d50:.1f} ms to the device directly", g50 / d50,
            f"p50 added <= 10 ms (added {g50 - d50:.1f} ms)", g50 - d50 <= 10),
        Row("gateway latency, p95 of a short completion", f"{g95:.1f} ms through the gateway",
            f"{d95:.1f} ms to the device directly", g95 / d95,
            f"report (added {g95 - d95:.1f} ms)", None),
        Row("gateway memory (HAProxy container)", f"{mem:.1f} MiB after the run",
            "the unit's 128 MiB cap", None, "report", None),
    ]
    details = (
        f"{pairs} requests each way after {WARM} warm-up pairs, alternating direct and "
        "gateway (D G, G D, ...) from a third lab device acting as the LAN client; each "
        f"request is `POST /v1/completions` for {BODY['max_tokens']} tokens of the tiny "
        "generated model (temperature 0), timed by curl (`time_total`, a new connection "
        "each). The server is a bench device deployed by this project, with `threads = 1`: "
        "llama.cpp's threads wait on each other at every token, so with two of them any "
        "other work on the 2 shared cores swings a request's time several-fold, for both "
        "paths alike, and hides the gateway's part. The gateway is a "
        "second device with `gateway = \"only\"` (HAProxy from Debian, the same container "
        "and configuration as any gateway). Latency in ms, direct: p50 "
        f"{d50:.1f}, p95 {d95:.1f}, min {min(ms['d']):.1f}, max {max(ms['d']):.1f}; through "
        f"the gateway: p50 {g50:.1f}, p95 {g95:.1f}, min {min(ms['g']):.1f}, max "
        f"{max(ms['g']):.1f}. Per pair (the two requests back to back), gateway minus direct: "
        f"median {pct(added, 50):.1f} ms, middle half {pct(added, 25):.1f} to "
        f"{pct(added, 75):.1f} ms. Requests over 100 ms (the 2 shared cores busy with other "
        f"work, which slows llama-server's generation): direct {slow['d']}, through the "
        f"gateway {slow['g']}. Ratio = through the gateway / direct. Memory: `docker stats` "
        "of the gateway's container after the run (LiteLLM's proxy took 383 MiB when it "
        "was checked for the gateway's issue: not measured here). All devices share this "
        "machine's 2 cores.")
    return Result("gateway", rows, details, extra={"p50_added_ms": g50 - d50})
