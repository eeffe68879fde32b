"""Fleet scaling: first-deploy wall time for N = 1, 2, 4 against the push floor.

Fresh devices would spend most of a run installing docker.io from Debian's mirror, which says
nothing about llama-docker, so the devices keep docker and its base image, and before each
run lose everything llama-docker put there: unit, server image, build context, model store.
The first run per N is then a real first deploy minus the docker install (image built on
each device, model pushed to each, service started, health). A second run per N removes only
the model store: the model's fan-out alone. The floor is N x size / the push rate measured by
the push benchmark (all transfers share this machine's two cores, so N pushes in parallel
cannot beat it here; on a real LAN the controller's uplink sets the same kind of floor).
"""

from __future__ import annotations

import shutil
import threading
import time

from llama_docker.push import Store, push

from .common import (
    MIB,
    QUICK,
    WORK,
    Lab,
    Result,
    Row,
    deploy,
    inventory,
    lab,
    log,
    model,
    push_rate,
    write_knobs,
)
from .push import device_has_aes, target_for

SHAPE = {"n_embd": 1024, "n_ff": 4096, "n_layer": 1 if QUICK else 4, "n_head": 16}  # 256 MiB

RESET_ALL = ("systemctl stop llama-docker 2>/dev/null; rm -f /etc/systemd/system/llama-docker"
             ".service; systemctl daemon-reload; docker rm -f llama >/dev/null 2>&1; "
             "docker images -q llama-docker/server | xargs -r docker rmi -f >/dev/null; "
             "rm -rf /var/lib/llama-docker /opt/llama-docker; true")
RESET_MODEL = "systemctl stop llama-docker 2>/dev/null; rm -rf /var/lib/llama-docker; true"


def fleet_model() -> tuple[str, str, int]:
    path, sha = model("fleet", seed=300, **SHAPE)
    return str(path), sha, path.stat().st_size


def _measure_rate(dev: lab.Device, local: str, sha: str, size: int) -> float:
    """push() rate to one device, for when the push benchmark has not run."""
    from pathlib import Path

    client = dev.paramiko()
    root = "/var/tmp/bench-rate"
    dev.exec("sh", "-c", f"mkdir -p {root} && chown {dev.user} {root}")
    t = time.perf_counter()
    push(client, Path(local), sha, Store(root), "rate", target_for(dev), device_has_aes(dev))
    t = time.perf_counter() - t
    dev.exec("rm", "-rf", root)
    client.close()
    return size / t


def _reset(devs: list[lab.Device], script: str) -> None:
    threads = [threading.Thread(target=d.exec, args=("sh", "-c", script)) for d in devs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


def bench(L: Lab) -> Result:
    devs = L.converge(4)
    local, sha, size = fleet_model()
    rate = push_rate() or _measure_rate(devs[0], local, sha, size)
    got: dict[tuple[str, int], float] = {}
    for n in (1, 2, 4):
        folder = WORK / f"fleet-{n}"
        inv = inventory(folder, devs[:n])
        for kind, script in (("first deploy", RESET_ALL), ("model only", RESET_MODEL)):
            _reset(devs[:n], script)
            shutil.rmtree(folder / "cache", ignore_errors=True)
            write_knobs(folder, model={"name": "fleet", "path": local, "sha256": sha})
            log(f"{kind} to {n} device(s), {size / MIB:.0f} MiB model")
            got[(kind, n)] = deploy(inv).ok().seconds
    rows = []
    for kind in ("first deploy", "model only"):
        for n in (1, 2, 4):
            floor = n * size / rate
            secs = got[(kind, n)]
            rows.append(Row(f"fleet {kind}, N={n}", f"{secs:.1f} s",
                            f"push floor {floor:.1f} s", secs / floor, "report", None))
    details = (
        f"A {size / MIB:.0f} MiB generated model from a path on the controller (fresh "
        "controller cache each run). 'first deploy': unit, server image, build context and "
        "model store removed from each device before the run (docker.io and the base image "
        "kept: installing docker from Debian's mirror is not llama-docker's cost); 'model "
        "only': just the model store removed. Floor = N x size / push rate "
        f"({rate / 1e6:.0f} MB/s, push() with its on-device sha256, from the push benchmark). "
        "Ratio = wall time / floor. Wall time (s): "
        + "; ".join(f"{k} N={n} {v:.1f}" for (k, n), v in got.items())
        + ". The time above the floor in 'first deploy' is the image build on each device "
        "(apt inside docker build) and the server's start; in 'model only' it is pyinfra's "
        "connect and facts, the restart and the health check.")
    return Result("fleet", rows, details)
