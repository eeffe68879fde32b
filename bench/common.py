"""What every benchmark shares: the lab devices, deploy runs, side-by-side timing, results.

Timings on a 2-core machine shared with other work swing by tens of percent from one minute
to the next, so a figure is only ever a ratio of two things measured in the same run,
interleaved (A B, B A, A B ...), and the median of several rounds.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import results

# The lab module reads this at import: a lab state of our own, apart from the tests' one.
os.environ.setdefault("LLAMA_LAB_DIR", str(results.REPO / ".lab-bench"))

from tests.lab import images, lab  # noqa: E402 - after LLAMA_LAB_DIR
from tests.lab.tiny_model import write_tiny_gguf  # noqa: E402

REPO = lab.REPO
WORK = lab.STATE / "work"
MIB, GIB = 1 << 20, 1 << 30
# Bench devices use lab indexes 40-49 (fixed IPs apart from the tests'); BENCH_FIRST_INDEX moves
# them, so two benchmarks can run side by side on one machine.
FIRST_INDEX = int(os.environ.get("BENCH_FIRST_INDEX", "40"))
PREFIX = "bench" if FIRST_INDEX == 40 else f"bench{FIRST_INDEX}"
QUICK = os.environ.get("BENCH_QUICK") == "1"  # smaller files and fewer rounds, for trying


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


@dataclass
class Row:
    """One line of the table in docs/BENCHMARKS.md."""

    benchmark: str
    ours: str
    reference: str
    ratio: float | None
    goal: str
    met: bool | None


@dataclass
class Result:
    name: str
    rows: list[Row]
    details: str = ""
    seconds: float = 0.0
    extra: dict[str, float | str] = field(default_factory=dict)  # figures reused elsewhere
    date: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M %Z"))
    commit: str = ""  # the code measured (report.commit())
    command: str = ""  # the command that measured it, e.g. `python3 -m bench push`
    machine: list[str] = field(default_factory=list)  # where (report.machine())


def rounds(default: int) -> int:
    return 1 if QUICK else default


def interleave(variants: dict[str, Callable[[], float]], n: int,
               between: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """Run each variant once per round, rotating the order so none always goes first."""
    names = list(variants)
    got: dict[str, list[float]] = {k: [] for k in names}
    for r in range(n):
        for k in names[r % len(names):] + names[:r % len(names)]:
            got[k].append(variants[k]())
            if between:
                between()
        log(f"round {r + 1}/{n}: " + ", ".join(f"{k} {got[k][-1]:.2f}" for k in names))
    return got


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def ratio_rounds(ref: list[float], ours: list[float]) -> float:
    """Median over rounds of ref/ours (paired: each round's two ran back to back)."""
    return med([r / o for r, o in zip(ref, ours, strict=True)])


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(cmd: list[str], *, timeout: float = 600, check: bool = True, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout)[-2000:]}")
    return proc.stdout


def idle_cpu_seconds() -> float:
    """CPU seconds this machine has left idle since boot, all cores (/proc/stat: idle and
    iowait): read before and after a run, what no process used while it ran."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")


def mbs(nbytes: float, seconds: float) -> str:
    return f"{nbytes / seconds / 1e6:.0f} MB/s"


# -- results -------------------------------------------------------------------------------

def load_results() -> dict[str, dict]:
    return results.load()


def save_result(res: Result) -> None:
    """Replace this benchmark's result in docs/benchmarks.json; the others stay."""
    results.record(asdict(res))


def push_rate() -> float | None:
    """Bytes/s of push() measured by the push benchmark (its latest run), if any."""
    rate = load_results().get("push", {}).get("extra", {}).get("rate")
    return float(rate) if rate else None


# -- models --------------------------------------------------------------------------------

def model(name: str, seed: int, **shape: int) -> tuple[Path, str]:
    """A generated GGUF (deterministic, so kept between runs) and its sha256; a shape's
    `f16=1`: its weight matrices in F16."""
    path = WORK / "models" / f"{name}.gguf"
    sha_file = path.with_suffix(".sha256")
    key = json.dumps({"seed": seed, **shape}, sort_keys=True)
    if path.exists() and sha_file.exists() and sha_file.read_text().startswith(key + " "):
        return path, sha_file.read_text().split()[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    f16 = bool(shape.pop("f16", 0))
    sha = write_tiny_gguf(path, seed=seed, f16=f16, **shape)
    sha_file.write_text(f"{key} {sha}")
    return path, sha


# -- the lab -------------------------------------------------------------------------------

class Lab:
    """Bench devices bench-1..N, started fresh once per process and removed at the end."""

    def __init__(self) -> None:
        self.up = False
        self.devs: list[lab.Device] = []
        self.converged: set[str] = set()  # devices a deploy has brought to a serving state

    def devices(self, n: int) -> list[lab.Device]:
        if not self.up:
            tags = images.build_all()
            lab.ensure_network()
            lab.ensure_keys()
            lab.ensure_dns(tags["infra"])
            lab.ensure_registry(tags["infra"], tags["debian-forky"])
            self.up = True
        while len(self.devs) < n:
            i = len(self.devs)
            log(f"starting device {PREFIX}-{i + 1}")
            # own_keys: the user's authorized_keys is the device's own file, as on a real
            # device, so the relay's links can be authorized there (bench/relay.py).
            self.devs.append(lab.start_device(f"{PREFIX}-{i + 1}", images.DEVICE.tag,
                                              FIRST_INDEX + i, fresh=True, own_keys=True))
        return self.devs[:n]

    def converge(self, n: int) -> list[lab.Device]:
        """Devices 1..n with docker, the image and a small model: one parallel first deploy."""
        devs = self.devices(n)
        if any(d.name not in self.converged for d in devs):
            path, sha = model("base", seed=7)
            folder = WORK / "converge"
            inv = inventory(folder, devs)
            write_knobs(folder, model={"name": "base", "path": str(path), "sha256": sha})
            log(f"first deploy to {n} device(s) (docker, image, model)")
            deploy(inv).ok()
            self.converged |= {d.name for d in devs}
        return devs

    def remove(self) -> None:
        for d in self.devs:
            lab.remove_device(d)
        self.devs.clear()
        self.converged.clear()


def ssh_argv(dev: lab.Device) -> list[str]:
    """OpenSSH options for a lab device (scp takes the same ones)."""
    return ["-i", str(lab.STATE / "id_ed25519"), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={lab.STATE / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes"]


def inventory(folder: Path, devices: list[lab.Device]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "inventory.py"
    path.write_text(f"lab = {[(d.name, d.host_data()) for d in devices]!r}\n")
    return path


def write_knobs(folder: Path, **knobs: object) -> None:
    """The lab's knobs for group 'lab' beside the inventory, where pyinfra reads them."""
    base: dict[str, object] = {"registry_mirror": lab.REGISTRY, "apt_check_valid_until": False,
                               "webui": "simplechat",
                               "cache_dir": str(folder / "cache")}
    base.update(knobs)
    (folder / "group_data").mkdir(parents=True, exist_ok=True)
    (folder / "group_data" / "lab.py").write_text(
        "".join(f"{k} = {v!r}\n" for k, v in base.items()))


@dataclass
class Deploy:
    code: int
    output: str
    seconds: float

    def ok(self) -> Deploy:
        if self.code != 0:
            raise RuntimeError(f"deploy failed (exit {self.code}):\n{self.output[-4000:]}")
        return self

    def changed(self) -> int:
        return len(re.findall(r"\] Success", self.output))


def deploy(inv: Path, *args: str, entry: str = "deploy.py", counted: Path | None = None,
           timeout: float = 900, extra_env: dict[str, str] | None = None) -> Deploy:
    """`pyinfra -y INV deploy.py` from the checkout; `counted` also counts hashed bytes;
    `extra_env`: more of the controller's environment (the lab's Vulkan hook)."""
    cmd = ["pyinfra", "-y", str(inv), entry, *args]
    # This checkout's code first, even where another one is installed in editable mode.
    env = {**os.environ, "PYINFRA_PROGRESS": "off", "PYTHONPATH": str(REPO),
           **(extra_env or {})}
    if counted is not None:
        cmd = [sys.executable, "-m", "bench.counted", *cmd[1:]]
        env["BENCH_HASH_COUNT"] = str(counted)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=env)
    return Deploy(proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - t)


DEVICE_HASH_LOG = "/var/tmp/bench-sha256.log"
HASH_TOOLS = ("sha256sum", "openssl")  # the device verifies with openssl, else sha256sum


def _counting(tool: str) -> str:
    """A wrapper for /usr/local/bin that logs the size of every file it is given, then runs
    the real tool (for openssl only its `dgst` subcommand reads a model)."""
    only = '[ "$1" = dgst ] && ' if tool == "openssl" else ""
    return (f"#!/bin/sh\n# bench: count the bytes {tool} hashes on this device.\n"
            f'{only}for f in "$@"; do [ -f "$f" ] && stat -c %s "$f" >> {DEVICE_HASH_LOG}; '
            f'done\nexec /usr/bin/{tool} "$@"\n')


def count_device_hashing(dev: lab.Device) -> None:
    """Put counting hash tools first on PATH (/usr/local/bin) and zero their log."""
    for tool in HASH_TOOLS:
        dev.write(f"/usr/local/bin/{tool}", _counting(tool).encode())
    dev.exec("sh", "-c", "chmod 755 " + " ".join(f"/usr/local/bin/{t}" for t in HASH_TOOLS)
             + f"; : > {DEVICE_HASH_LOG}; chmod 666 {DEVICE_HASH_LOG}")


def device_hashed(dev: lab.Device) -> int:
    text = dev.exec("sh", "-c", f"cat {DEVICE_HASH_LOG} 2>/dev/null || true")
    return sum(int(x) for x in text.split() if x.isdigit())


def reset_device_hashing(dev: lab.Device) -> None:
    dev.exec("sh", "-c", f": > {DEVICE_HASH_LOG}")
