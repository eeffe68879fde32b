"""The relay: redeploy a 256 MiB model to N = 1, 2, 4 devices with the relay on (the default)
and off (`relay = False`: the controller pushes to every device), on a lab shaped as a home
and unshaped, side by side in one run.

A home: the controller on Wi-Fi, the devices on wired gigabit. On the lab's Linux bridge a
qdisc on the bridge's own interface shapes what this machine (the controller) sends into
the lab, and one on a device's veth (host side) shapes everything that device receives,
from the controller or from another device. So: the bridge's interface gets an `htb` qdisc
whose one class is 100 Mbit/s, and u32 filters put into it only the packets for this
benchmark's devices (the controller's link to them, one link shared by all of them); every
other packet (the tests and benchmarks running beside this one on the same lab) has no
class and htb sends it on unshaped (this machine's kernel has htb and tbf, not prio). Each
device's veth gets a 1 Gbit/s tbf. Both are removed when the shaped rounds end, whatever
happens (a SIGTERM included).

Each redeploy: the model store of the N devices removed (the service stopped), then
`pyinfra -y INV model.py`, the way a user redeploys after changing the model knob. Timed:
the model step (from the operation that starts the pushes to the end of the operation that
waits for them: the fan-out) and the whole run (connect, facts, the fan-out, the service
restart and its health wait). The controller's bytes are the run's own `sent N bytes of
MODEL via ...` lines (push()'s counter); a relayed copy says `received N bytes ... over the
device link`. With one device the relay has no peer and the controller pushes, relay on or
off: N=1 runs once per round and is the reference of both.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol, TypeVar

from .common import (
    MIB,
    QUICK,
    WORK,
    Lab,
    Result,
    Row,
    interleave,
    lab,
    log,
    med,
    model,
    rounds,
    run,
    write_knobs,
)
from .fleet import RESET_MODEL, SHAPE, _reset, stamped

UPLINK_MBIT = 100  # the controller's link into the lab (Wi-Fi)
DEVICE_MBIT = 1000  # each device's link (wired gigabit)
GOAL = 1.3  # redeploy to 4 devices within 1.3x of one, on the shaped lab
HANDLE = "1b0"  # our root qdisc on the bridge (hex), told apart from anyone else's
QUICK_SHAPE = {"n_embd": 512, "n_ff": 2048, "n_layer": 2, "n_head": 8}  # about 33 MiB
NS = (1, 2, 4)
# One controller cache for every redeploy: the server image's archive is saved into it once
# (the warm-up), not once per inventory.
CACHE = WORK / "relay-cache"
OP = re.compile(r"--> Starting (?:nested )?operation: (.*)")


def relay_model() -> tuple[Path, str]:
    if QUICK:
        return model("relay-quick", seed=310, **QUICK_SHAPE)
    return model("fleet", seed=300, **SHAPE)  # the fleet benchmark's 256 MiB model


# -- the shaped lab ------------------------------------------------------------------------

def bridge() -> str:
    """The lab network's bridge on this machine: br-<the network's id, 12 characters>."""
    net = run(["docker", "network", "inspect", "-f", "{{.Id}}", lab.NET]).strip()
    name = f"br-{net[:12]}"
    if not Path("/sys/class/net", name).exists():
        raise RuntimeError(f"no interface {name} for the lab network {lab.NET}")
    return name


def _tc(*args: str, check: bool = True) -> str:
    return run(["tc", *args], check=check, timeout=30)


def _unshape(br: str, devs: list[lab.Device]) -> None:
    """Our qdiscs off: each device's veth, and the bridge's root if it is still ours."""
    for d in devs:
        try:
            d.limit_rate(None)
        except Exception as exc:  # noqa: BLE001 - the bridge's qdisc must go in any case
            log(f"could not lift the shaping of {d.name}: {exc}")
    if f"qdisc htb {HANDLE}: root" in _tc("qdisc", "show", "dev", br, check=False):
        _tc("qdisc", "del", "dev", br, "root", check=False)
    left = _tc("qdisc", "show", "dev", br, "root", check=False)
    log(f"shaping removed; {br}: {left.strip()}")


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that the finally below runs


@contextmanager
def home(devs: list[lab.Device]) -> Iterator[None]:
    """The lab shaped as a home for these devices only, for the duration of the block."""
    br = bridge()
    root = _tc("qdisc", "show", "dev", br, "root")
    if not root.startswith("qdisc noqueue"):
        raise RuntimeError(f"{br} already has a root qdisc ({root.strip()}): not ours, left "
                           "as it is; no shaped figures")
    ips = [d.ip for d in devs]
    log(f"shaping {br}: {UPLINK_MBIT} Mbit/s from this machine to {', '.join(ips)}; "
        f"{DEVICE_MBIT} Mbit/s into each device (by hand, should this process die: "
        f"tc qdisc del dev {br} root handle {HANDLE}:)")
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        # htb: packets for these devices go to class 1, 100 Mbit/s; every other packet has
        # no class (default 0) and htb sends it straight on, unshaped. The bridge has no tx
        # queue (tx_queue_len 0): the direct queue and class 1's fifo get lengths of their own.
        _tc("qdisc", "add", "dev", br, "root", "handle", f"{HANDLE}:", "htb", "default", "0",
            "direct_qlen", "10000")
        _tc("class", "add", "dev", br, "parent", f"{HANDLE}:", "classid", f"{HANDLE}:1", "htb",
            "rate", f"{UPLINK_MBIT}mbit", "ceil", f"{UPLINK_MBIT}mbit", "burst", "256k",
            "cburst", "256k", "quantum", "65536")
        _tc("qdisc", "add", "dev", br, "parent", f"{HANDLE}:1", "bfifo", "limit",
            str(UPLINK_MBIT * 1_000_000 // 8 // 10))  # 100 ms of the link
        for ip in ips:
            _tc("filter", "add", "dev", br, "parent", f"{HANDLE}:", "protocol", "ip", "prio",
                "1", "u32", "match", "ip", "dst", f"{ip}/32", "flowid", f"{HANDLE}:1")
        for d in devs:
            d.limit_rate(DEVICE_MBIT)
        yield
    finally:
        _unshape(br, devs)
        signal.signal(signal.SIGTERM, before)


# -- one redeploy --------------------------------------------------------------------------

@dataclass
class Run:
    wall: float  # the whole pyinfra run
    step: float  # the model step: its fan-out
    sent: int  # bytes of the model the controller sent
    pushes: int  # devices the controller pushed it to
    relayed: int  # devices that got it from another device
    busy: float  # share of the machine's CPU busy while it ran


def inventory(folder: Path, devs: list[lab.Device]) -> Path:
    """The devices as the controller reaches them (127.0.0.1, published ports) and as they
    reach each other: their lab address, port 22."""
    folder.mkdir(parents=True, exist_ok=True)
    hosts = [(d.name, {**d.host_data(), "lan_address": d.ip, "lan_ssh_port": 22})
             for d in devs]
    path = folder / "inventory.py"
    path.write_text(f"lab = {hosts!r}\n")
    return path


def model_step(lines: list[tuple[float, str]], filename: str) -> float:
    """From the operation that starts the pushes beside the image step to the start of the
    operation after the one that waits for them."""
    ops = [(t, m.group(1)) for t, line in lines if (m := OP.search(line))]
    push = next(i for i, (_, name) in enumerate(ops) if f"Push {filename} (" in name)
    start = next((t for t, name in ops if "Start the push of" in name), ops[push][0])
    end = ops[push + 1][0] if push + 1 < len(ops) else lines[-1][0]
    return end - start


def redeploy(devs: list[lab.Device], relay: bool, path: Path, sha: str, tag: str) -> Run:
    n = len(devs)
    folder = WORK / f"relay-{n}-{'on' if relay else 'off'}"
    inv = inventory(folder, devs)
    write_knobs(folder, model={"name": "relay", "path": str(path), "sha256": sha},
                relay=relay, cache_dir=str(CACHE))
    _reset(devs, RESET_MODEL)
    wall, lines, busy = stamped(inv, folder / f"{tag}.log", entry="model.py", timeout=900)
    text = "\n".join(line for _, line in lines)
    name = path.name
    sent = [int(m[1]) for m in re.finditer(rf"\]\s+sent (\d+) bytes of {re.escape(name)} via",
                                           text)]
    relayed = re.findall(rf"\]\s+received \d+ bytes of {re.escape(name)} from \S+ over the "
                         "device link", text)
    if len(sent) + len(relayed) != n:
        raise RuntimeError(f"{n} device(s), but {len(sent)} pushed and {len(relayed)} relayed: "
                           f"log {folder / (tag + '.log')}")
    return Run(wall, model_step(lines, name), sum(sent), len(sent), len(relayed), busy)


# -- the benchmark -------------------------------------------------------------------------

VARIANTS = [(1, True), (2, True), (2, False), (4, True), (4, False)]


def _label(n: int, relay: bool) -> str:
    return f"N={n}" if n == 1 else f"N={n} relay {'on' if relay else 'off'}"


class Timed(Protocol):
    step: float  # the step a benchmark times: what its rounds compare


T = TypeVar("T", bound=Timed)


def rounds_of(variants: list[tuple[int, bool]], n_rounds: int, name: str,
              one_run: Callable[[int, bool, str], T], said: Callable[[T], str]
              ) -> dict[tuple[int, bool], list[T]]:
    """Each (N, relay) variant once per round, in rotating order: its runs, each logged."""
    got: dict[tuple[int, bool], list[T]] = {v: [] for v in variants}
    count = [0]

    def variant(n: int, relay: bool):  # noqa: ANN202
        def one() -> float:
            count[0] += 1
            r = one_run(n, relay, f"{name}-{count[0]}")
            got[(n, relay)].append(r)
            log(f"{name}: {_label(n, relay)}: {said(r)}")
            return r.step
        return one

    interleave({_label(n, relay): variant(n, relay) for n, relay in variants}, n_rounds)
    return got


def phase(devs: list[lab.Device], name: str, n_rounds: int, path: Path, sha: str
          ) -> dict[tuple[int, bool], list[Run]]:
    return rounds_of(
        VARIANTS, n_rounds, name,
        lambda n, relay, tag: redeploy(devs[:n], relay, path, sha, tag),
        lambda r: (f"model step {r.step:.1f} s, run {r.wall:.1f} s, controller sent "
                   f"{r.sent / MIB:.0f} MiB to {r.pushes}, relayed to {r.relayed}, CPU "
                   f"{r.busy:.0%} busy"))


def _ratio(got: dict[tuple[int, bool], list[Run]], n: int, relay: bool, what: str) -> float:
    """Median over rounds of N's time / N=1's time, each round's pair."""
    return med([getattr(a, what) / getattr(b, what)
                for a, b in zip(got[(n, relay)], got[(1, True)], strict=True)])


def _table(got: dict[tuple[int, bool], list[Run]], size: int) -> str:
    n = len(got[(1, True)])
    rows = []
    for key in VARIANTS:
        runs = got[key]
        rows.append(
            f"| {_label(*key)} | " + " / ".join(f"{r.step:.1f}" for r in runs)
            + f" | {med([r.step for r in runs]):.1f} | "
            + " / ".join(f"{r.wall:.1f}" for r in runs) + f" | {med([r.wall for r in runs]):.1f} | "
            + f"{med([r.sent for r in runs]) / size:.2f} | {runs[0].relayed} | "
            + " / ".join(f"{r.busy:.0%}" for r in runs) + " |")
    return (f"| redeploy | model step s ({n} round{'s' if n > 1 else ''}) | median | "
            "whole run s | median | "
            "controller sent (models) | relayed copies | machine CPU busy |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))


def _why(got: dict[tuple[int, bool], list[Run]], size: int, mbit: int | None) -> str:
    """Where N=4's extra time goes, round by round: the tree's copies after the first."""
    one, two, four = got[(1, True)], got[(2, True)], got[(4, True)]

    def each(xs: list[float]) -> str:
        return " / ".join(f"{x:.1f}" for x in xs)

    wire = f", against {size * 8 / mbit / 1e6:.1f} s on the wire at {mbit} Mbit/s" if mbit \
        else ""
    return (
        "N=4 / N=1 per round (model step): " + " / ".join(
            f"{a.step / b.step:.2f}" for a, b in zip(four, one, strict=True))
        + ". One relayed copy (N=2 relay on minus N=1, model step): "
        + each([a.step - b.step for a, b in zip(two, one, strict=True)]) + f" s{wire}. "
        "N=4 relay on minus N=1 (its two rounds of copies after the controller's, the second "
        "with two copies at once): "
        + each([a.step - b.step for a, b in zip(four, one, strict=True)])
        + " s. The rest of the run (whole run minus model step; the restart and the health "
        "wait, llama-server loading the model on every device at once): N=1 "
        + each([r.wall - r.step for r in one]) + " s, N=4 relay on "
        + each([r.wall - r.step for r in four]) + " s.")


def _verdict(got: dict[tuple[int, bool], list[Run]], size: int) -> str:
    """The goal on the shaped lab, with what bounds it: the tree's copies after the first."""
    n1 = med([r.step for r in got[(1, True)]])
    ratio = _ratio(got, 4, True, "step")
    wire = size * 8 / DEVICE_MBIT / 1e6
    copy = med([a.step - b.step for a, b in zip(got[(2, True)], got[(1, True)], strict=True)])
    return (
        f"Goal N=4 / N=1 <= {GOAL} (model step): {ratio:.2f}, "
        + ("met" if ratio <= GOAL else "**missed**") + ". With the relay the controller's "
        "link carries one copy, so N=4 costs N=1 plus two rounds of copies between devices "
        f"(log2 4). At {DEVICE_MBIT} Mbit/s those two rounds are {2 * wire:.1f} s on the wire, "
        f"a floor of {(n1 + 2 * wire) / n1:.2f} with this N=1 ({n1:.1f} s) before any per-copy "
        f"set-up; {GOAL} leaves {(GOAL - 1) * n1:.1f} s for both. A relayed copy also needs "
        "CPU on both devices (the sender's ssh, the receiver's sshd, tee and sha256), and "
        f"here every device shares this machine's {os.cpu_count()} cores with the others and "
        "with whatever else runs on it: one relayed copy (N=2 relay on minus N=1, median) took "
        f"{copy:.1f} s" + (f", {size / copy / 1e6:.0f} MB/s against the link's "
                           f"{DEVICE_MBIT / 8:.0f} MB/s" if copy > 0 else "")
        + ". The whole run's ratio adds the health wait, "
        "CPU-bound here: llama-server loading the model and answering a first completion on "
        "N devices at once, on the same cores.")


def _rows(got: dict[tuple[int, bool], list[Run]], where: str, size: int, shaped: bool
          ) -> list[Row]:
    def m(n: int, relay: bool, what: str) -> float:
        return med([getattr(r, what) for r in got[(n, relay)]])

    goal = f"<= {GOAL}" if shaped else "report"
    rows = []
    for what, label in (("step", "model step"), ("wall", "whole run")):
        ratio = _ratio(got, 4, True, what)
        rows.append(Row(f"relay redeploy N=4 / N=1, relay on, {label}, {where}",
                        f"{m(4, True, what):.1f} s", f"N=1 {m(1, True, what):.1f} s", ratio,
                        goal, ratio <= GOAL if shaped else None))
    for what, label in (("step", "model step"), ("wall", "whole run")):
        rows.append(Row(f"relay redeploy N=4 / N=1, relay off, {label}, {where}",
                        f"{m(4, False, what):.1f} s", f"N=1 {m(1, True, what):.1f} s",
                        _ratio(got, 4, False, what), "report (about N without the relay)",
                        None))
    rows.append(Row(f"relay redeploy N=4, relay on / relay off, model step, {where}",
                    f"{m(4, True, 'step'):.1f} s", f"relay off {m(4, False, 'step'):.1f} s",
                    med([a.step / b.step for a, b in zip(got[(4, True)], got[(4, False)],
                                                         strict=True)]),
                    "report (< 1: the relay is faster)", None))
    sent_on, sent_off = m(4, True, "sent") / size, m(4, False, "sent") / size
    rows.append(Row(f"relay redeploy N=4, controller's bytes, {where}",
                    f"relay on {sent_on:.2f} model", f"relay off {sent_off:.2f} models",
                    sent_on, "1 model", sent_on == 1))
    return rows


def bench(L: Lab) -> Result:
    devs = L.converge(4)
    path, sha = relay_model()
    size = path.stat().st_size
    n_rounds = rounds(3)
    # Untimed: the controller's hash marker of the model, and each sending device's link
    # key (made once per device, kept): the timed runs start from what a user's second
    # redeploy finds. The dry run's plan is quoted in the details.
    folder = WORK / "relay-dry"
    write_knobs(folder, model={"name": "relay", "path": str(path), "sha256": sha},
                cache_dir=str(CACHE))
    _reset(devs, RESET_MODEL)
    env = {**os.environ, "PYINFRA_PROGRESS": "off", "PYTHONPATH": str(lab.REPO)}
    dry = subprocess.run(["pyinfra", "-y", str(inventory(folder, devs)), "model.py", "--dry"],
                         cwd=lab.REPO, env=env, capture_output=True, text=True, timeout=300)
    plan = [line.strip() for line in (dry.stdout + dry.stderr).splitlines()
            if line.strip().startswith(("would move:", "would relay "))]
    log("warm-up: N=4, relay on, unshaped")
    redeploy(devs, True, path, sha, "warm-up")

    unshaped = phase(devs, "unshaped", n_rounds, path, sha)
    with home(devs):
        shaped = phase(devs, "shaped", n_rounds, path, sha)
    one = med([r.step for r in shaped[(1, True)]])
    rate = size * 8 / one / 1e6
    if rate > UPLINK_MBIT * 1.2:  # the shaping did not hold: these are no home figures
        raise RuntimeError(f"N=1 on the shaped lab moved the model at {rate:.0f} Mbit/s")

    rows = (_rows(shaped, f"home ({UPLINK_MBIT} Mbit/s controller, {DEVICE_MBIT} Mbit/s "
                  "devices)", size, True)
            + _rows(unshaped, "unshaped", size, False))
    busy4 = med([r.busy for r in unshaped[(4, True)] + unshaped[(4, False)]])
    details = (
        f"A {size / MIB:.0f} MiB generated model"
        + ("" if QUICK else " (the fleet benchmark's)") + " from a path on the "
        "controller, redeployed to N = 1, 2, 4 lab devices with `pyinfra -y INV model.py` "
        "after their model store was removed (the service stopped): relay on (the default; "
        "each device's `lan_address` is its lab IP, `lan_ssh_port` 22) and `relay = False`. "
        "With one device the relay has no peer and the controller pushes, relay on or off: "
        f"N=1 runs once per round and is the reference of both. {n_rounds} round(s) per "
        "phase, the five redeploys of a round in rotating order; the ratio is the median "
        "over the rounds of each round's N / N=1. The model step runs from the operation "
        "that starts the pushes to the end of the one that waits for them (the fan-out); the "
        "whole run adds connecting, the facts, the service restart and its health wait "
        "(llama-server loading the model on every device at once). Before the timed runs, "
        "one untimed N=4 redeploy with the relay (the controller's hash marker of the model, "
        "each sender's link key) and a dry run, whose plan read: "
        + ("; ".join(f"`{line}`" for line in plan) or "(none)") + ".\n\n"
        f"**Shaped as a home**: the controller's link to the devices {UPLINK_MBIT} Mbit/s, "
        f"each device's {DEVICE_MBIT} Mbit/s. On the lab bridge's own interface an `htb` "
        f"qdisc with one {UPLINK_MBIT} Mbit/s class, and u32 filters that put into it only "
        "the packets for this benchmark's devices (every other packet on the shared lab has "
        "no class and goes on unshaped); on each device's veth (host side) a "
        f"{DEVICE_MBIT} Mbit/s tbf, which shapes what the device receives from the controller "
        "or another device (a device's sending is not shaped: a sender sends to one device at "
        f"a time). N=1 moved the model at {rate:.0f} Mbit/s. Seconds:\n\n"
        + _table(shaped, size) + "\n\n" + _why(shaped, size, DEVICE_MBIT) + "\n\n"
        + _verdict(shaped, size) + "\n\n**Unshaped** (the same, no qdisc): seconds:\n\n"
        + _table(unshaped, size) + "\n\n" + _why(unshaped, size, None) + "\n\n"
        "Unshaped, every copy is bound by the CPU, not a link: the controller's ssh, each "
        "sending device's ssh, each receiving device's sshd and its sha256 share this "
        f"machine's {os.cpu_count()} cores with each other and with the other runs on it "
        f"(machine CPU busy during the unshaped N=4 redeploys: {busy4:.0%}, median), so a relayed "
        "copy costs about what a push does and the copies of a round take turns on the "
        "same cores: the relay's rounds are then a cost, and these figures say nothing of a "
        "real LAN, where each device has its own CPU and the controller's link is the "
        "bottleneck.")
    return Result("relay", rows, details, extra={"plan": " | ".join(plan)})
