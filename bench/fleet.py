"""Fleet scaling: first-deploy wall time for N = 1, 2, 4, the server image built once and
shipped against built on every device, side by side; and the model's fan-out against the
push floor.

Fresh devices would spend most of a run installing docker.io from Debian's mirror, which says
nothing about llama-docker, so the devices keep docker and its base image, and before each
run lose everything llama-docker put there: unit, server image, build context, model store,
and the controller's cache. A first deploy is then a real one minus the docker install, in
two ways, in the same round: "built once" (the default: the first device builds, its archive
goes to the controller's cache and is pushed to the others, verified and loaded) and "built
per device" (image_source = "device": each device builds its own from Debian's mirror, as
every device did before the cache). A second run per N removes only the model store: the
model's fan-out alone. The floor is N x size / the push rate measured by the push benchmark
(all transfers share this machine's two cores, so N pushes in parallel cannot beat it here;
on a real LAN the controller's uplink sets the same kind of floor).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from llama_docker.device.image import image_tag, pinned_build_args
from llama_docker.device.store import Store
from llama_docker.transfer.push import push

from .common import (
    MIB,
    REPO,
    WORK,
    Lab,
    Result,
    Row,
    idle_cpu_seconds,
    inventory,
    lab,
    log,
    med,
    model,
    push_rate,
    rounds,
    write_knobs,
)
from .push import device_has_aes, target_for

SHAPE = {"n_embd": 1024, "n_ff": 4096, "n_layer": 4, "n_head": 16}  # 256 MiB
BASE = "docker.io/library/debian:forky-slim"
GOAL = 1.3  # first deploy to 4 devices within 1.3x of one, the image built once

RESET_ALL = ("systemctl stop llama-docker 2>/dev/null; rm -f /etc/systemd/system/llama-docker"
             ".service; systemctl daemon-reload; docker rm -f llama >/dev/null 2>&1; "
             "docker images -q llama-docker/server | xargs -r docker rmi -f >/dev/null; "
             "rm -rf /var/lib/llama-docker /opt/llama-docker; true")
RESET_MODEL = "systemctl stop llama-docker 2>/dev/null; rm -rf /var/lib/llama-docker; true"
# The two ways the server image reaches a device, as knobs.
WAYS = {"built once": {}, "built per device": {"image_source": "device"}}
STEP = re.compile(r"--> Starting (?:nested )?operation: (?:llama-docker \| )?(.*)")
# pyinfra operations worth naming apart (their names without the deploy's prefix).
STEPS = {"model push": "Model | Push", "health": "Health |"}
# What the image step says it spent (tasks/image_once.py): the build, the save into the
# controller's cache, and on each other device the push with its hash, then the load.
PARTS = {"build": re.compile(r"built \S+ on this device in ([\d.]+) s"),
         "save": re.compile(r"saved in ([\d.]+) s"),
         "push+hash": re.compile(r"push and hash ([\d.]+) s"),
         "load": re.compile(r", load ([\d.]+) s\)")}


def fleet_model() -> tuple[str, str, int]:
    path, sha = model("fleet", seed=300, **SHAPE)
    return str(path), sha, path.stat().st_size


def _measure_rate(dev: lab.Device, local: str, sha: str, size: int) -> float:
    """push() rate to one device, for when the push benchmark has not run."""
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


def steps(lines: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """(operation, seconds) from a timestamped pyinfra log: each operation lasts until the
    next one starts (the last one until the log ends); the same name twice is summed."""
    starts = [(t, m.group(1).strip()) for t, line in lines if (m := STEP.search(line))]
    end = lines[-1][0] if lines else 0.0
    got: dict[str, float] = {}
    for (t, name), nxt in zip(starts, [*[s[0] for s in starts[1:]], end], strict=True):
        got[name] = got.get(name, 0.0) + nxt - t
    return sorted(got.items(), key=lambda kv: -kv[1])


def image_parts(lines: list[tuple[float, str]]) -> dict[str, float]:
    """The image step's own times: the slowest device's for each part (they run at once)."""
    got: dict[str, float] = {}
    for _, line in lines:
        for part, rx in PARTS.items():
            if m := rx.search(line):
                got[part] = max(got.get(part, 0.0), float(m.group(1)))
    return got


def stamped(inv: Path, log_file: Path, entry: str = "deploy.py", timeout: float = 900
            ) -> tuple[float, list[tuple[float, str]], float]:
    """`pyinfra -y INV ENTRY`, each output line stamped as it comes (written to log_file);
    the wall time, the lines and the share of the machine's CPU time that
    was busy (controller and every device alike) while it ran."""
    env = {**os.environ, "PYINFRA_PROGRESS": "off", "PYTHONPATH": str(REPO),
           "PYTHONUNBUFFERED": "1"}
    idle0, t0 = idle_cpu_seconds(), time.perf_counter()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(["pyinfra", "-y", str(inv), entry], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))
        code = proc.wait()
        timer.cancel()
    wall = time.perf_counter() - t0
    busy = 1 - (idle_cpu_seconds() - idle0) / ((os.cpu_count() or 1) * wall)
    log_file.write_text("".join(f"{t:7.2f} {line}\n" for t, line in lines))
    if code != 0:
        tail = "\n".join(line for _, line in lines[-60:])
        raise RuntimeError(f"{entry} failed (exit {code}), log {log_file}:\n{tail}")
    return wall, lines, busy


def timed_deploy(inv: Path, log_file: Path, timeout: float = 900
                 ) -> tuple[float, list[tuple[str, float]], dict[str, float], float]:
    """`pyinfra -y INV deploy.py` (stamped): the wall time, the slowest steps, the image's
    parts and the share of the machine's CPU time that was busy while it ran."""
    wall, lines, busy = stamped(inv, log_file, timeout=timeout)
    return wall, steps(lines), image_parts(lines), busy


def _base_everywhere(devs: list[lab.Device]) -> None:
    """The build's base image on every device (a first deploy from the cache leaves it on
    the builder only): the per-device builds start as the old benchmark's did."""
    for d in devs:
        d.exec("docker", "pull", "-q", BASE)


def bench(L: Lab) -> Result:
    devs = L.converge(4)
    _base_everywhere(devs)
    local, sha, size = fleet_model()
    rate = push_rate() or _measure_rate(devs[0], local, sha, size)
    tag = image_tag(pinned_build_args(BASE, False))
    got: dict[tuple[str, int], list[float]] = {}
    parts: dict[tuple[str, int], dict[str, list[float]]] = {}
    busy: dict[tuple[str, int], list[float]] = {}
    archive = 0
    for r in range(rounds(3)):
        for i, n in enumerate((1, 2, 4)):
            folder = WORK / f"fleet-{n}"
            inv = inventory(folder, devs[:n])
            ways = list(WAYS)
            if (r + i) % 2:
                ways.reverse()  # neither way always goes first
            for way in ways:
                _reset(devs[:n], RESET_ALL)
                shutil.rmtree(folder / "cache", ignore_errors=True)
                write_knobs(folder, model={"name": "fleet", "path": local, "sha256": sha},
                            **WAYS[way])
                log(f"round {r + 1}: first deploy to {n} device(s), image {way}")
                secs, slow, image, cpu = timed_deploy(
                    inv, folder / f"{way.replace(' ', '-')}-{r + 1}.log")
                got.setdefault((way, n), []).append(secs)
                busy.setdefault((way, n), []).append(cpu)
                split = {**image, **{k: t for name, t in slow for k, prefix in STEPS.items()
                                     if name.startswith(prefix)}}
                for k, t in split.items():
                    parts.setdefault((way, n), {}).setdefault(k, []).append(t)
                log(f"  {secs:.1f} s, CPU {cpu:.0%} busy: "
                    + ", ".join(f"{k} {t:.1f}" for k, t in split.items()))
                tars = list((folder / "cache" / "images").glob("*.tar"))
                archive = tars[0].stat().st_size if tars else archive
            if r == 0:  # the model's fan-out alone, once per N
                _reset(devs[:n], RESET_MODEL)
                log(f"model only to {n} device(s)")
                secs, _, _, cpu = timed_deploy(inv, folder / "model-only.log")
                got[("model only", n)] = [secs]
                busy[("model only", n)] = [cpu]

    once = {n: med(got[("built once", n)]) for n in (1, 2, 4)}
    each = {n: med(got[("built per device", n)]) for n in (1, 2, 4)}
    rows = [Row("fleet first deploy N=4 / N=1, image built once", f"{once[4]:.1f} s",
                f"N=1 {once[1]:.1f} s", once[4] / once[1], f"<= {GOAL}",
                once[4] / once[1] <= GOAL),
            Row("fleet first deploy N=4 / N=1, image built per device", f"{each[4]:.1f} s",
                f"N=1 {each[1]:.1f} s", each[4] / each[1], "report", None)]
    for n in (1, 2, 4):
        rows.append(Row(f"fleet first deploy N={n}, built once / built per device",
                        f"{once[n]:.1f} s", f"{each[n]:.1f} s", once[n] / each[n], "report",
                        None))
    for n in (1, 2, 4):  # what bounds the ratio here: controller and devices share the CPUs
        rows.append(Row(f"fleet first deploy N={n}, image built once: machine CPU busy",
                        f"{med(busy[('built once', n)]):.0%} of {os.cpu_count()} cores",
                        f"model only {busy[('model only', n)][0]:.0%}",
                        med(busy[("built once", n)]), "report", None))
    for n in (1, 2, 4):
        floor = n * size / rate
        secs = got[("model only", n)][0]
        rows.append(Row(f"fleet model only, N={n}", f"{secs:.1f} s", f"push floor {floor:.1f} s",
                        secs / floor, "report", None))
    details = (
        f"A {size / MIB:.0f} MiB generated model from a path on the controller; the server "
        f"image {tag} ({archive / MIB:.0f} MiB as an archive). 'first deploy': unit, server "
        "image, build context, model store and the controller's cache removed before each "
        "run (docker.io and the base image kept on every device: installing docker from "
        "Debian's mirror is not llama-docker's cost). 'built once': the default, the first "
        "device builds, its archive is saved into the controller's cache and pushed to the "
        "others, hashed there and loaded. 'built per device': image_source = \"device\", "
        "every device builds its own (apt inside docker build, on each device, all at once), "
        f"as before the cache. Both ways in each round, alternating which goes first; "
        f"{rounds(3)} round(s), median. Wall time (s): "
        + "; ".join(f"{way} N={n} " + "/".join(f"{v:.1f}" for v in got[(way, n)])
                    for way in WAYS for n in (1, 2, 4))
        + ". Where the time goes (s, median over the rounds; build and save on the one "
        "device that builds, push+hash and load on the slowest other device, as the image "
        "step reports them; model push and health are pyinfra operations, each timed until "
        "the next starts): " + " | ".join(f"{way} N={n}: " + ", ".join(
            f"{k} {med(v):.1f}" for k, v in parts.get((way, n), {}).items())
            for way in WAYS for n in (1, 2, 4))
        + ". 'model only': just the model store removed, then a deploy: the model's fan-out "
        f"against a floor of N x size / push rate ({rate / 1e6:.0f} MB/s, push() with its "
        "on-device sha256, from the push benchmark); wall time (s): "
        + "; ".join(f"N={n} {got[('model only', n)][0]:.1f}" for n in (1, 2, 4)) + ". "
        "Machine CPU busy: 1 - idle CPU time (/proc/stat) / (cores x wall time) over each "
        "deploy, the controller, every device and anything else on the machine together; "
        "built once: " + "; ".join(f"N={n} " + "/".join(f"{v:.0%}" for v in busy[("built once", n)])
                                   for n in (1, 2, 4)) + ".")
    return Result("fleet", rows, details)
