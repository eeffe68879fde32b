"""A model split over devices (`split_over`, llama.cpp's RPC over the devices' SSH links):
generation speed against the same model on one device, the head's restart with its worker's
tensor cache warm and cold, and a model no single device holds.

Devices of their own (not the shared bench-1..4): a head, its worker and a device that
serves the same model alone, then three devices with a container memory limit for the model
none of them holds. Tokens/s is llama-server's own `timings.predicted_per_second` of a
`/completion` made on the device itself (curl to its 127.0.0.1: no controller link in the
figure), fixed prompt, temperature 0, fixed seed, `ignore_eos`, `cache_prompt` false; each
sample is the median of a few requests after one warm-up, the split and the single device
in turn, rotating which goes first. Shaped: each device's veth (host side) gets a 1 Gbit/s
tbf, so everything a device receives (the head from its worker, the worker from its head)
crosses a gigabit link; removed when the shaped rounds end, whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .common import (
    FIRST_INDEX,
    MIB,
    PREFIX,
    QUICK,
    WORK,
    Lab,
    Result,
    Row,
    deploy,
    images,
    interleave,
    lab,
    log,
    med,
    model,
    ratio_rounds,
    rounds,
    run,
    write_knobs,
)
from .relay import _terminated

LINK_MBIT = 1000  # wired gigabit between the devices
GOAL = 0.7  # split over 2 / one device, tokens/s (llama.cpp's own 1 GbE figure: 0.67)
N_PREDICT = 64
REQUESTS = 1 if QUICK else 2  # per sample, after one warm-up
PROMPT = "Once upon a time, in a small house by the sea, there lived an old"
PORT = 8080
CTX = 256
# Shaped like a small real model's layers (TinyLlama: 2048 wide, 5632 feed-forward, 32
# heads, F16): 4 layers of about 98 MiB, 392 MiB in all; generated, never downloaded.
REAL = {"n_embd": 2048, "n_ff": 5632, "n_head": 32, "n_layer": 4, "f16": 1}
TINY = {"n_embd": 512, "n_ff": 1024, "n_head": 8, "n_layer": 4}  # tests/e2e/test_split.py's
# The same layers, 7 of them (689 MiB), on devices of 640 MiB each: none holds it alone.
BIG = {**REAL, "n_layer": 7}
LIMIT_MIB = 640
CACHE = "/var/lib/llama-docker/rpc-cache"  # the worker's tensor cache (rpc_units.cache_dir)
SHARED_CACHE = WORK / "split-cache"  # the controller's: the server image saved once
SPLIT_LINE = re.compile(r"\]\s+(split: [^\n]+)")
# Devices of this benchmark: lab indexes 4-9 after the bench's first (bench-1..4 use 0-3).
NAMES = ("head", "w1", "solo", "m0", "m1", "m2")


def _name(role: str) -> str:
    return f"{PREFIX}split-{role}"


def _index(role: str) -> int:
    return FIRST_INDEX + 4 + NAMES.index(role)


# -- devices and deploys -------------------------------------------------------------------

@dataclass
class Devices:
    """This benchmark's devices by role, removed at the end whatever happens."""

    by_role: dict[str, lab.Device] = field(default_factory=dict)

    def start(self, L: Lab, roles: tuple[str, ...], flags: tuple[str, ...] = ()
              ) -> list[lab.Device]:
        L.devices(0)  # the lab itself: images, network, DNS, registry
        for role in roles:
            log(f"starting device {_name(role)}")
            self.by_role[role] = lab.start_device(_name(role), images.DEVICE.tag, _index(role),
                                                  fresh=True, own_keys=True, run_flags=flags)
        return [self.by_role[r] for r in roles]

    def remove(self, roles: tuple[str, ...] | None = None) -> None:
        for role in list(roles or self.by_role):
            dev = self.by_role.pop(role, None)
            if dev:
                lab.remove_device(dev)


def _inventory(folder: Path, devs: list[lab.Device], knobs: dict[str, dict]) -> Path:
    """Each device as the controller reaches it, and as the others do: its lab address."""
    folder.mkdir(parents=True, exist_ok=True)
    hosts = [(d.name, {**d.host_data(), "lan_address": d.ip, "lan_ssh_port": 22,
                       **knobs.get(d.name, {})}) for d in devs]
    path = folder / "inventory.py"
    path.write_text(f"lab = {hosts!r}\n")
    return path


def _serve(folder: Path, devs: list[lab.Device], name: str, shape: dict[str, int],
           seed: int, knobs: dict[str, dict], **more: object) -> tuple[str, int]:
    """Deploy the model `name` to `devs`; the head's split line and the model's bytes."""
    path, sha = model(name, seed, **shape)
    write_knobs(folder, model={"name": name, "path": str(path), "sha256": sha},
                ctx_size=CTX, cache_dir=str(SHARED_CACHE), **more)
    log(f"deploy {name} ({path.stat().st_size / MIB:.0f} MiB) to "
        + ", ".join(d.name for d in devs))
    out = deploy(_inventory(folder, devs, knobs), timeout=2400).ok().output
    m = SPLIT_LINE.search(out)
    if not m:
        raise RuntimeError(f"no split line in the run:\n{out[-3000:]}")
    log(m.group(1))
    return m.group(1), path.stat().st_size


# -- measuring -----------------------------------------------------------------------------

def _completion(dev: lab.Device, n_predict: int = N_PREDICT) -> dict:
    body = json.dumps({"prompt": PROMPT, "n_predict": n_predict, "temperature": 0, "seed": 1,
                       "cache_prompt": False, "ignore_eos": True})
    out = dev.exec("curl", "-sf", "--max-time", "300", "-H", "Content-Type: application/json",
                   "-d", body, f"http://127.0.0.1:{PORT}/completion", timeout=330)
    reply = json.loads(out)
    if reply.get("tokens_predicted") != n_predict:
        raise RuntimeError(f"{dev.name}: {reply.get('tokens_predicted')} tokens, not {n_predict}")
    return reply


def _tok_s(dev: lab.Device) -> float:
    """One sample: a warm-up request, then the median of REQUESTS requests' tokens/s."""
    _completion(dev)
    return med([float(_completion(dev)["timings"]["predicted_per_second"])
                for _ in range(REQUESTS)])


# Polls /completion (n_predict 1) until it answers 200: 1200 tries of 0.1 s at most.
FIRST_TOKEN = (
    "i=0; while [ $i -lt 1200 ]; do c=$(curl -s -o /dev/null -w '%{{http_code}}' "
    "--max-time 120 -H 'Content-Type: application/json' -d '{body}' "
    "http://127.0.0.1:{port}/completion); [ \"$c\" = 200 ] && break; i=$((i+1)); sleep 0.1; "
    "done")


def _restart_to_first_token(dev: lab.Device) -> float:
    """Seconds from `systemctl restart llama-docker` to the first answered completion of one
    token, by the device's own clock."""
    body = json.dumps({"prompt": PROMPT, "n_predict": 1, "temperature": 0,
                       "cache_prompt": False})
    script = ("t0=$(date +%s.%N); systemctl restart llama-docker; "
              + FIRST_TOKEN.format(body=body, port=PORT) + "; t1=$(date +%s.%N); "
              "echo \"$t0 $t1 $c\"")
    t0, t1, code = dev.exec("sh", "-c", script, timeout=400).split()
    if code != "200":
        raise RuntimeError(f"{dev.name} did not answer after its restart (HTTP {code}):\n"
                           + lab.logs(dev)[-2000:])
    return float(t1) - float(t0)


def _loopback_bytes(dev: lab.Device) -> int:
    """Bytes over the device's loopback: on a worker, what its sshd hands its RPC server
    from the head's forward (the tensors) and the answers."""
    out = dev.exec("sh", "-c", "awk -F'[: ]+' '$2 == \"lo\" {print $3}' /proc/net/dev")
    return int(out.split()[0])


# -- the shaped links ----------------------------------------------------------------------

def _veth(dev: lab.Device) -> str:
    """The device's veth on this machine (its eth0's peer)."""
    index = dev.exec("cat", "/sys/class/net/eth0/iflink").strip()
    return next(p.name for p in Path("/sys/class/net").iterdir()
                if (p / "ifindex").read_text().strip() == index)


def _tbf_sent(dev: lab.Device) -> int:
    """Bytes the device's tbf has let through (0 when it has none)."""
    out = run(["tc", "-s", "qdisc", "show", "dev", _veth(dev), "root"], check=False)
    m = re.search(r"qdisc tbf .*?Sent (\d+) bytes", out, re.S)
    return int(m.group(1)) if m else 0


@contextmanager
def gigabit(devs: list[lab.Device]) -> Iterator[None]:
    """Each device's link shaped to LINK_MBIT for the block; lifted whatever happens."""
    log(f"shaping {', '.join(d.name for d in devs)}: {LINK_MBIT} Mbit/s into each (by hand, "
        "should this process die: tc qdisc del dev VETH root)")
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        for d in devs:
            d.limit_rate(LINK_MBIT)
            if "tbf" not in run(["tc", "qdisc", "show", "dev", _veth(d), "root"]):
                raise RuntimeError(f"no tbf on {d.name}'s link")
        yield
    finally:
        for d in devs:
            try:
                d.limit_rate(None)
            except Exception as exc:  # noqa: BLE001 - lift the others in any case
                log(f"could not lift the shaping of {d.name}: {exc}")
        signal.signal(signal.SIGTERM, before)
        log("shaping removed")


@contextmanager
def a_core_each(pins: list[tuple[lab.Device, str]]) -> Iterator[None]:
    """Each device's container on CPUs of its own for the block (`docker update
    --cpuset-cpus`), as separate machines have; every CPU back whatever happens."""
    every = f"0-{(os.cpu_count() or 1) - 1}"
    log("pinning " + ", ".join(f"{d.name} to CPU {c}" for d, c in pins))
    try:
        for d, cpus in pins:
            lab.docker("update", "--cpuset-cpus", cpus, d.container)
        yield
    finally:
        for d, _ in pins:
            lab.docker("update", "--cpuset-cpus", every, d.container, check=False)
        log("pinning removed")


# -- the benchmark -------------------------------------------------------------------------

@dataclass
class Speed:
    """Tokens/s by round of the split and of one device, in one phase."""

    split: list[float]
    one: list[float]

    def by_round(self) -> list[float]:
        return [s / o for s, o in zip(self.split, self.one, strict=True)]

    @property
    def ratio(self) -> float:
        return ratio_rounds(self.split, self.one)  # median of split / one, round by round

    def overhead_ms(self) -> float:
        """What the split adds to each token: its time per token less one device's."""
        return med([1000 / s - 1000 / o for s, o in zip(self.split, self.one, strict=True)])


def _speeds(head: lab.Device, solo: lab.Device, n: int) -> Speed:
    got = interleave({"split": lambda: _tok_s(head), "one device": lambda: _tok_s(solo)}, n)
    return Speed(got["split"], got["one device"])


def _each(xs: list[float], fmt: str = "{:.1f}") -> str:
    return " / ".join(fmt.format(x) for x in xs)


def _speed_row(sp: Speed, what: str, shaped: bool, goal: bool) -> Row:
    where = f"links {LINK_MBIT} Mbit/s" if shaped else "unshaped"
    return Row(f"split over 2 devices / one device, tokens/s, {what}, {where}",
               f"{med(sp.split):.1f} tok/s", f"one device {med(sp.one):.1f} tok/s", sp.ratio,
               f">= {GOAL}" if goal else "report", sp.ratio >= GOAL if goal else None)


def _speed_table(phases: dict[str, Speed]) -> str:
    rows = [f"| {k} | {_each(sp.split)} | {med(sp.split):.1f} | {_each(sp.one)} | "
            f"{med(sp.one):.1f} | {_each(sp.by_round(), '{:.2f}')} | **{sp.ratio:.2f}** | "
            f"{sp.overhead_ms():.1f} |" for k, sp in phases.items()]
    return ("| model, links | split tok/s by round | median | one device tok/s by round | "
            "median | split / one by round | median | split's extra ms per token |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def bench(L: Lab) -> Result:
    devs = Devices()
    load = os.getloadavg()[0]
    try:
        res = _bench(L, devs)
    finally:
        devs.remove()
    # What else ran on the machine shows in its load before the run (during it, the run's
    # own requests keep both cores busy).
    res.details += (f" Load average (1 min) when the run began: {load:.1f}; when it ended: "
                    f"{os.getloadavg()[0]:.1f}.")
    return res


def _bench(L: Lab, devs: Devices) -> Result:
    n = rounds(5)
    head, worker, solo = devs.start(L, ("head", "w1", "solo"))
    pair = {head.name: {"split_over": [worker.name]}}
    folder = WORK / "split"
    phases: dict[str, Speed] = {}
    lines: dict[str, str] = {}
    sizes: dict[str, int] = {}
    tbf: dict[str, int] = {}
    ttft: dict[str, list[float]] = {}
    moved: dict[str, list[int]] = {"cold": [], "warm": []}
    for key, shape, seed in (("tiny", TINY, 29), ("real", REAL, 401)):
        lines[key], sizes[key] = _serve(folder, [head, worker, solo], f"split-{key}", shape,
                                        seed, pair)
        log(f"{key}: unshaped")
        phases[f"{key}, unshaped"] = _speeds(head, solo, n)
        with gigabit([head, worker, solo]):
            sent0 = {d.name: _tbf_sent(d) for d in (head, worker)}
            log(f"{key}: links {LINK_MBIT} Mbit/s")
            phases[f"{key}, {LINK_MBIT} Mbit/s"] = _speeds(head, solo, n)
            if key == "real":
                ttft = _first_tokens(head, worker, solo, rounds(3), moved)
            tbf.update({f"{key} {d.name}": _tbf_sent(d) - sent0[d.name]
                        for d in (head, worker)})
    # As separate machines: the head and the single device on CPU 0 (they take turns), the
    # worker on CPU 1, one thread each, so neither end's threads or ssh take the other's CPU.
    own = f"real, {LINK_MBIT} Mbit/s, a core each"
    log(f"{own}: threads = 1")
    _serve(folder, [head, worker, solo], "split-real", REAL, 401, pair, threads=1)
    with a_core_each([(head, "0"), (worker, "1"), (solo, "0")]), gigabit([head, worker, solo]):
        phases[own] = _speeds(head, solo, n)
    devs.remove(("head", "w1", "solo"))  # their memory back before the small devices start

    big = _big(L, devs, n)
    rows = [
        _speed_row(phases[own], _real_label(sizes["real"]) + ", a core each", True, True),
        _speed_row(phases[f"real, {LINK_MBIT} Mbit/s"],
                   _real_label(sizes["real"]) + f", {os.cpu_count()} cores shared", True, False),
        _speed_row(phases["real, unshaped"], _real_label(sizes["real"]), False, False),
        _speed_row(phases[f"tiny, {LINK_MBIT} Mbit/s"], _tiny_label(sizes["tiny"]), True,
                   False),
        _speed_row(phases["tiny, unshaped"], _tiny_label(sizes["tiny"]), False, False),
    ]
    warm, cold, one = ttft["split, cache warm"], ttft["split, cache cold"], ttft["one device"]
    rows += [
        Row(f"restart to first token, split over 2 (worker's cache warm) / one device, "
            f"{_real_label(sizes['real'])}, links {LINK_MBIT} Mbit/s",
            f"{med(warm):.1f} s", f"one device {med(one):.1f} s", ratio_rounds(warm, one),
            "report", None),
        Row(f"restart to first token, split over 2, worker's cache cold / warm, links "
            f"{LINK_MBIT} Mbit/s", f"{med(cold):.1f} s", f"warm {med(warm):.1f} s",
            ratio_rounds(cold, warm), "report", None),
        Row(f"model no single device holds ({big['size'] / MIB:.0f} MiB, devices of "
            f"{LIMIT_MIB} MiB), split over 3, tokens/s", f"{med(big['tok_s']):.1f} tok/s",
            "none (fits no device alone)", None, "served", True),
    ]
    return Result("split", rows, _details(n, phases, lines, sizes, tbf, ttft, moved, big))


def _real_label(size: int) -> str:
    return f"4 layers 2048/5632 F16 ({size / MIB:.0f} MiB)"


def _tiny_label(size: int) -> str:
    return f"the tests' tiny model ({size / MIB:.0f} MiB)"


def _first_tokens(head: lab.Device, worker: lab.Device, solo: lab.Device, n: int,
                  moved: dict[str, list[int]]) -> dict[str, list[float]]:
    """Restart to first token: the head with its worker's tensor cache kept, and emptied;
    the single device as the reference. Also the bytes the worker received each time."""

    def split(cold: bool) -> Callable[[], float]:
        def one() -> float:
            if cold:  # the files only: a running RPC server caches nothing into a folder
                # removed under it (it makes its folder when it starts)
                worker.exec("find", CACHE, "-type", "f", "-delete")
            before = _loopback_bytes(worker)
            secs = _restart_to_first_token(head)
            moved["cold" if cold else "warm"].append(_loopback_bytes(worker) - before)
            return secs
        return one

    return interleave({"split, cache warm": split(False), "split, cache cold": split(True),
                       "one device": lambda: _restart_to_first_token(solo)}, n)


def _big(L: Lab, devs: Devices, n: int) -> dict:
    """The model none of three small devices holds, split over the three: served, tok/s."""
    m0, m1, m2 = devs.start(L, ("m0", "m1", "m2"), ("--memory", f"{LIMIT_MIB}m"))
    line, size = _serve(WORK / "split-big", [m0, m1, m2], "split-big", BIG, 403,
                        {m0.name: {"split_over": [m1.name, m2.name]}}, ram_margin_mib=32)
    if size <= LIMIT_MIB * MIB:
        raise RuntimeError(f"the model ({size} bytes) fits one device")
    tok_s = [_tok_s(m0) for _ in range(min(n, 3))]
    log(f"big: {_each(tok_s)} tok/s")
    return {"line": line, "size": size, "tok_s": tok_s,
            "memory": {d.name: _memory(d) for d in (m0, m1, m2)}}


def _memory(dev: lab.Device) -> str:
    """The device's container memory now, read on this machine from its cgroup: anonymous
    (the worker's buffers, the processes) and mapped files (the head's mmapped layers)."""
    cid = run(["docker", "inspect", "-f", "{{.Id}}", dev.container]).strip()
    for stat, keys in ((f"/sys/fs/cgroup/memory/docker/{cid}/memory.stat",
                        ("total_rss", "total_mapped_file")),
                       (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.stat",
                        ("anon", "file_mapped")),
                       (f"/sys/fs/cgroup/docker/{cid}/memory.stat", ("anon", "file_mapped"))):
        if Path(stat).exists():
            got = dict(line.split()[:2] for line in Path(stat).read_text().splitlines())
            anon, mapped = (int(got.get(k, 0)) / MIB for k in keys)
            return f"{anon:.0f} MiB anonymous + {mapped:.0f} MiB mapped"
    return "?"


def _overhead_verdict(phases: dict[str, Speed]) -> str:
    """Whether the split's extra time per token grows with the model (compute, bandwidth)
    or is about the same for the tiny one (a fixed wait per token)."""
    tiny = med([sp.overhead_ms() for k, sp in phases.items() if k.startswith("tiny")])
    real = med([sp.overhead_ms() for k, sp in phases.items() if k.startswith("real")])
    if tiny > 0.5 * real:
        return (f"about as much for the tiny model ({tiny:.0f} ms, median of its phases) as "
                f"for the real-shaped one ({real:.0f} ms), shaped or not, so it is neither "
                "the layers' compute nor the link's bandwidth but a wait of fixed length per "
                "token on the RPC's path (the head's llama-server, its SSH forward, the "
                "worker's sshd and RPC server, and back): far longer than the link's round "
                "trips, and the first thing to look into for a faster split.")
    return (f"it grows with the model ({tiny:.0f} ms for the tiny one, {real:.0f} ms for the "
            "real-shaped one): the RPC's work on each token's data, not a fixed wait.")


def _details(n: int, phases: dict[str, Speed], lines: dict[str, str], sizes: dict[str, int],
             tbf: dict[str, int], ttft: dict[str, list[float]], moved: dict[str, list[int]],
             big: dict) -> str:
    real = phases[f"real, {LINK_MBIT} Mbit/s"]
    own = phases[f"real, {LINK_MBIT} Mbit/s, a core each"]
    cores = os.cpu_count()
    ms_one = 1000 / med(real.one)
    ttft_rows = "\n".join(f"| {k} | {_each(v)} | {med(v):.1f} |" for k, v in ttft.items())
    return (
        "Two generated llama models (random weights, never downloaded), each served two "
        "ways at once: split over a head and one worker (`split_over = [worker]`; the lab "
        "devices reach each other at their lab address, port 22), and alone on a third "
        f"device. **Shaped like a small real model**: {_real_label(sizes['real'])}, "
        "TinyLlama's layer shapes (22 such layers in F16 are its 2.2 GB); the head's run "
        f"said `{lines['real']}`. **The tests' tiny model** (tests/e2e/test_split.py's, "
        f"4 layers 512/1024 F32, {sizes['tiny'] / MIB:.0f} MiB): `{lines['tiny']}`. "
        f"Tokens/s is llama-server's `timings.predicted_per_second` of a `/completion` "
        f"made on the device (n_predict {N_PREDICT}, a {len(PROMPT)}-byte prompt, "
        "temperature 0, seed 1, `ignore_eos`, `cache_prompt` false); a sample is the median "
        f"of {REQUESTS} request(s) after a warm-up. {n} round(s) per phase, split and one "
        "device in rotating order, side by side in one run; the ratio is the median over "
        "the rounds of each round's split / one device. Shaped: a "
        f"{LINK_MBIT} Mbit/s tbf on each device's veth (host side), which shapes what it "
        "receives (the head's answers from its worker, the worker's tensors and activations "
        "from its head). Bytes through the tbf during the shaped phase: "
        + ", ".join(f"{k} {v / MIB:.1f} MiB" for k, v in tbf.items()) + ".\n\n"
        + _speed_table(phases) + "\n\n"
        f"Goal split / one >= {GOAL} (llama.cpp's own figure over 1 GbE for TinyLlama F16 "
        "is 0.67) on the real-shaped model, links shaped, each device on a CPU core of its "
        "own as separate machines are (`docker update --cpuset-cpus`: the head and the "
        "single device on CPU 0, taking turns, the worker on CPU 1; `threads = 1` on all "
        f"three): **{own.ratio:.2f}**, " + ("met" if own.ratio >= GOAL else "**missed**")
        + f" ({own.overhead_ms():.1f} ms added per token against {1000 / med(own.one):.1f} ms "
        f"on one device). With the {cores} cores shared by all three devices, "
        f"{real.ratio:.2f}. "
        "What bounds it: a split never adds compute to one stream of tokens, its layers run "
        "in turn (the head's, then the worker's), so at best it matches one device; what it "
        "adds is the RPC on every token (the head sends the worker the activations and "
        "waits for its answer, each way through ssh's encryption on both ends and the "
        f"worker's RPC server): here {real.overhead_ms():.1f} ms per token against "
        f"{ms_one:.1f} ms of compute on one device. The split's extra time per token is "
        + ", ".join(f"{k} {sp.overhead_ms():.0f} ms" for k, sp in phases.items())
        + ": " + _overhead_verdict(phases) + " "
        f"Every lab device shares this machine's {cores} cores: the split's two devices do "
        "not add compute (nor would they for one stream), but the RPC's own CPU (ssh on "
        "both ends, the RPC server, the head's threads waiting) is taken from the same "
        "cores the layers run on, where separate devices would each spend their own; so on "
        "this machine the ratio is the split's overhead against the same compute, and the "
        "lab cannot show a split gaining from a second device's CPU. The tbf limits the rate "
        "only: it adds none of a real LAN's latency (a gigabit switch adds some 0.1 to 0.3 "
        "ms per round trip, paid on every token).\n\n"
        "**Restart to first token** (the real-shaped model, links shaped): seconds from "
        "`systemctl restart llama-docker` on the head (or on the single device) to the "
        "first answered `/completion` of one token, polled every 0.1 s on the device; cold: "
        f"the worker's tensor cache ({CACHE}) emptied first. {len(ttft['one device'])} "
        "round(s), the three in rotating order:\n\n"
        "| restart | seconds by round | median |\n|---|---|---|\n" + ttft_rows + "\n\n"
        "Bytes the worker received from its head (its loopback: the head's forward handing "
        "the RPC server the tensors) per restart: cold "
        + _each([b / MIB for b in moved["cold"]]) + " MiB, warm "
        + _each([b / MIB for b in moved["warm"]]) + " MiB. The worker caches tensors of 10 "
        "MiB and up only (llama.cpp's RPC): here the feed-forward matrices (22 MiB in F16); "
        "the attention ones (8 MiB) and the norms are sent again on every start.\n\n"
        f"**A model no single device holds**: {BIG['n_layer']} layers of the same shape "
        f"({big['size'] / MIB:.0f} MiB) on three devices with a {LIMIT_MIB} MiB container "
        "memory limit each (`docker run --memory`), the head splitting it over the other "
        f"two (`ram_margin_mib` 32, ctx {CTX}). The run said `{big['line']}`; it served, "
        f"at {_each(big['tok_s'])} tok/s by round (median {med(big['tok_s']):.1f}; the same "
        "samples as above, not side by side with anything: no single device can serve it). "
        "Each device's container memory after the samples (its cgroup's; the page cache "
        "the kernel reclaims under the limit apart): "
        + ", ".join(f"{k} {v}" for k, v in big["memory"].items()) + ".")
