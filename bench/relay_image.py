"""The server image's archive past one uplink: four devices that lost their image get it
again, with the relay on (once from the controller, then from each other) and off (the
controller pushes to each), on the lab shaped as a home and unshaped, side by side.

Each redeploy: on the N devices the service stopped and the server image removed (the model
stays), then `pyinfra -y INV deploy.py`. The controller's cache holds the archive (saved once,
in the warm-up, from a device that held the image), so every device of the N receives it.
Timed: the image step (the operation that ships the archive, and the one that removes the
copies kept for the relay), and the whole run. The controller's copies are the load lines
that say `sent N bytes of its archive`; a relayed copy says `received N bytes of
server-<hash>-<arch>.tar from <device> over the device link`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .common import MIB, QUICK, WORK, Lab, Result, Row, lab, log, med, rounds
from .common import write_knobs as knobs_file
from .fleet import _reset, stamped, steps
from .relay import (
    CACHE,
    DEVICE_MBIT,
    UPLINK_MBIT,
    _label,
    home,
    inventory,
    relay_model,
    rounds_of,
)

RESET_IMAGE = ("systemctl stop llama-docker 2>/dev/null; docker rm -f llama >/dev/null 2>&1; "
               "docker images -q llama-docker/server | xargs -r docker rmi -f >/dev/null; true")
VARIANTS = [(1, True), (4, True), (4, False)]
SHIPPED = re.compile(r"\]\s+loaded llama-docker/server\S* .*: (sent|received) (\d+) bytes of "
                     r"(its archive via|server-\S+\.tar from \S+ over the device link)")


@dataclass
class Run:
    wall: float
    step: float  # the image step: ship (and, relay on, drop the kept copies)
    archive: int  # the archive's size
    pushes: int  # devices the controller sent it to
    relayed: int  # devices that got it from another device
    busy: float


def redeploy(devs: list[lab.Device], relay: bool, path: Path, sha: str, tag: str) -> Run:
    n = len(devs)
    folder = WORK / f"relay-image-{n}-{'on' if relay else 'off'}"
    inv = inventory(folder, devs)
    knobs_file(folder, model={"name": "relay", "path": str(path), "sha256": sha},
               relay=relay, cache_dir=str(CACHE))
    _reset(devs, RESET_IMAGE)
    wall, lines, busy = stamped(inv, folder / f"{tag}.log", timeout=900)
    text = "\n".join(line for _, line in lines)
    shipped = SHIPPED.findall(text)
    pushes = [int(b) for how, b, _ in shipped if how == "sent"]
    relayed = [int(b) for how, b, _ in shipped if how == "received"]
    if len(pushes) + len(relayed) != n:
        raise RuntimeError(f"{n} device(s), but the archive was pushed to {len(pushes)} and "
                           f"relayed to {len(relayed)}: log {folder / (tag + '.log')}")
    step = sum(s for name, s in steps(lines)
               if "Server image llama-docker/server" in name and "ship" in name
               or "kept for the relay" in name)
    return Run(wall, step, max(pushes + relayed), len(pushes), len(relayed), busy)


def phase(devs: list[lab.Device], name: str, n_rounds: int, path: Path, sha: str
          ) -> dict[tuple[int, bool], list[Run]]:
    return rounds_of(
        VARIANTS, n_rounds, name,
        lambda n, relay, tag: redeploy(devs[:n], relay, path, sha, tag),
        lambda r: (f"image step {r.step:.1f} s, run {r.wall:.1f} s, archive pushed to "
                   f"{r.pushes}, relayed to {r.relayed}, CPU {r.busy:.0%}"))


def _table(got: dict[tuple[int, bool], list[Run]]) -> str:
    rows = []
    for key in VARIANTS:
        runs = got[key]
        rows.append(f"| {_label(*key)} | " + " / ".join(f"{r.step:.1f}" for r in runs)
                    + f" | {med([r.step for r in runs]):.1f} | "
                    + " / ".join(f"{r.wall:.1f}" for r in runs)
                    + f" | {med([r.wall for r in runs]):.1f} | {runs[0].pushes} | "
                    f"{runs[0].relayed} |")
    return ("| redeploy | image step s | median | whole run s | median | archives from the "
            "controller | relayed archives |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(rows))


def _ratio(got: dict[tuple[int, bool], list[Run]], a: tuple[int, bool], b: tuple[int, bool]
           ) -> float:
    return med([x.step / y.step for x, y in zip(got[a], got[b], strict=True)])


def _rows(got: dict[tuple[int, bool], list[Run]], where: str) -> list[Row]:
    def m(key: tuple[int, bool]) -> float:
        return med([r.step for r in got[key]])

    on, off, one = (4, True), (4, False), (1, True)
    return [
        Row(f"image archive to N=4 / N=1, relay on, image step, {where}", f"{m(on):.1f} s",
            f"N=1 {m(one):.1f} s", _ratio(got, on, one), "report", None),
        Row(f"image archive to N=4 / N=1, relay off, image step, {where}", f"{m(off):.1f} s",
            f"N=1 {m(one):.1f} s", _ratio(got, off, one), "report (about N without relay)",
            None),
        Row(f"image archive to N=4, controller's copies, {where}",
            f"relay on {got[on][0].pushes}", f"relay off {got[off][0].pushes}",
            float(got[on][0].pushes), "1 archive", got[on][0].pushes == 1),
    ]


def bench(L: Lab) -> Result:
    devs = L.converge(4)
    path, sha = relay_model()
    n_rounds = rounds(2)
    # Untimed: the archive into the shared cache, saved from a device that holds the image
    # (the first lacks it); and the model in place, so the timed runs move only the image.
    log("warm-up: the archive into the controller's cache, the model in place")
    _reset(devs[:1], RESET_IMAGE)
    folder = WORK / "relay-image-warm"
    knobs_file(folder, model={"name": "relay", "path": str(path), "sha256": sha},
               cache_dir=str(CACHE))
    stamped(inventory(folder, devs), folder / "warm-up.log", timeout=1800)

    unshaped = phase(devs, "unshaped", n_rounds, path, sha)
    with home(devs):
        shaped = phase(devs, "shaped", n_rounds, path, sha)
    size = shaped[(1, True)][0].archive
    one = med([r.step for r in shaped[(1, True)]])
    where = f"home ({UPLINK_MBIT} Mbit/s controller, {DEVICE_MBIT} Mbit/s devices)"
    rows = _rows(shaped, where) + _rows(unshaped, "unshaped")
    details = (
        f"The server image's archive ({size / MIB:.0f} MiB) shipped again to N = 1 and 4 lab "
        "devices whose image was removed (the service stopped, the model kept), with "
        "`pyinfra -y INV deploy.py`: relay on (the default) and `relay = False`. "
        f"{n_rounds} round(s) per phase, the redeploys of a round in rotating order. The "
        "image step is the operation that ships the archive and loads it, plus, relay on, "
        "the one that removes the copies kept for the relay; the whole run adds connecting, "
        "the facts, the service restart and its health wait. "
        + ("(QUICK: one small model.) " if QUICK else "")
        + f"N=1's image step on the shaped lab: {one:.1f} s ({size * 8 / one / 1e6:.0f} "
        "Mbit/s over the archive, its load included).\n\n"
        f"**Shaped as a home** (as the relay benchmark: the controller's link {UPLINK_MBIT} "
        f"Mbit/s, each device's {DEVICE_MBIT} Mbit/s). Seconds:\n\n" + _table(shaped)
        + "\n\n**Unshaped**. Seconds:\n\n" + _table(unshaped) + "\n\n"
        "Relay on, the controller's link carries the archive once and the devices pass it on "
        "in rounds that double (log2 N); relay off, it carries N copies. Each device then "
        "loads the archive (`docker load`), on this machine's shared cores.")
    return Result("relay-image", rows, details)
