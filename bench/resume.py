"""Resume waste: cut a download or a push at 10/50/90 %, run it again, count bytes sent twice.

fetch(): the fault server drops the connection after exactly that many body bytes; a first
call with one attempt fails and keeps its .part, a second call resumes. The server counts
every body byte it sent: waste = sent - size.

push(): the link into the device is shaped (a Wi-Fi), the OpenSSH client is killed once it
has read that share of the file, and push() is called again. ssh shares the file offset with
push(), so bytes read by ssh in the first try + bytes sent by the second - size = bytes read
(and so sent) twice.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import types
from pathlib import Path

from tqdm import tqdm

import llama_docker.transfer.push as push_mod
from llama_docker.device.store import Store
from llama_docker.knobs.errors import LlamaDockerError
from llama_docker.transfer.download import FetchError, fetch
from llama_docker.transfer.push import push
from tests.lab.fault_server import FaultServer

from .common import MIB, QUICK, WORK, Lab, Result, Row, lab, log
from .push import device_has_aes, random_file, target_for

FRACTIONS = (0.1, 0.5, 0.9)
GOAL = MIB
ROOT = "/var/tmp/bench-resume"
LINK_MBIT = 400  # a good Wi-Fi: slow enough to stop the push at a chosen byte


def fetch_waste(size: int) -> list[tuple[float, int, int]]:
    """(fraction, bytes the server sent beyond the file's size, resumed from) per cut."""
    src, sha = random_file(f"push-{size // MIB}m.bin", size)
    dest = WORK / "resume" / "model.gguf"
    dest.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with FaultServer(root=src.parent) as srv:
        url = srv.url("/" + src.name)
        for frac in FRACTIONS:
            for p in dest.parent.iterdir():
                p.unlink()
            srv.reset_counters()
            srv.set(drop_after=int(size * frac))
            try:
                fetch(url, dest, sha, size=size, retries=1, progress=False)
                raise RuntimeError("the cut download did not fail")
            except FetchError:
                pass
            res = fetch(url, dest, sha, size=size, progress=False)
            out.append((frac, srv.stats("/" + src.name).bytes - size, res.resumed_from))
    for p in dest.parent.iterdir():
        p.unlink()
    return out


class _Spy:
    """Stands in for push's `subprocess` and `tqdm` to see the ssh process and its offset."""

    def __init__(self) -> None:
        import subprocess

        self.proc: subprocess.Popen | None = None
        self.read_to = 0  # the file offset ssh had reached when its process ended
        spy = self

        def popen(*a: object, **kw: object) -> subprocess.Popen:
            spy.proc = subprocess.Popen(*a, **kw)  # type: ignore[call-overload]
            return spy.proc

        class Bar(tqdm):
            def __init__(self, *a: object, **kw: object) -> None:
                super().__init__(*a, **kw)  # type: ignore[arg-type]
                spy.read_to = int(kw.get("initial", 0))  # type: ignore[call-overload]

            def update(self, n: float | None = 1) -> bool | None:
                spy.read_to += int(n or 0)
                return super().update(n)

        self.subprocess = types.SimpleNamespace(Popen=popen, DEVNULL=subprocess.DEVNULL,
                                                PIPE=subprocess.PIPE,
                                                TimeoutExpired=subprocess.TimeoutExpired)
        self.tqdm = Bar

    def __enter__(self) -> _Spy:
        self._saved = push_mod.subprocess, push_mod.tqdm
        push_mod.subprocess, push_mod.tqdm = self.subprocess, self.tqdm  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        push_mod.subprocess, push_mod.tqdm = self._saved  # type: ignore[assignment]


def _kill_at(spy: _Spy, limit: int, deadline: float) -> None:
    """Kill ssh once its read offset in the file passes `limit` (polled every 5 ms)."""
    while time.monotonic() < deadline:
        proc = spy.proc
        if proc is not None and proc.poll() is None:
            try:
                text = Path(f"/proc/{proc.pid}/fdinfo/0").read_text()
            except OSError:
                text = ""
            pos = int(text.split()[1]) if text.startswith("pos:") else 0
            if pos >= limit:
                proc.kill()
                return
        time.sleep(0.005)


def push_waste(L: Lab, size: int) -> list[tuple[float, int, int]]:
    (dev,) = L.devices(1)
    local, sha = random_file(f"push-{size // MIB}m.bin", size)
    client, target, aes = dev.paramiko(), target_for(dev), device_has_aes(dev)
    store = Store(ROOT)
    dev.exec("sh", "-c", f"mkdir -p {ROOT} && chown {dev.user} {ROOT}")
    out = []
    dev.limit_rate(LINK_MBIT)
    try:
        for frac in FRACTIONS:
            dev.exec("sh", "-c", f"rm -f {ROOT}/*")
            with _Spy() as spy:
                killer = threading.Thread(target=_kill_at, daemon=True,
                                          args=(spy, int(size * frac), time.monotonic() + 120))
                killer.start()
                try:
                    push(client, local, sha, store, "bench", target, aes)
                    raise RuntimeError("the cut push did not fail")
                except LlamaDockerError:
                    pass
                killer.join(5)
                first = spy.read_to
            sent, offset = push(client, local, sha, store, "bench", target, aes)
            out.append((frac, first + sent - size, offset))
            log(f"push cut at {frac:.0%}: ssh had read {first}, landed {offset}, "
                f"resent {first - offset}")
    finally:
        dev.limit_rate(None)
        dev.exec("rm", "-rf", ROOT)
        client.close()
    return out


def ssh_window(dev: lab.Device) -> tuple[int, int]:
    """(window granted up front, top-up step): what the device's sshd lets a sender have in
    flight on a session channel, from `ssh -vv`'s own log of a 4 MiB upload."""
    argv = target_for(dev).argv(True)
    out = subprocess.run([argv[0], "-vv", *argv[1:], "cat > /dev/null"], capture_output=True,
                         timeout=60, input=b"\0" * (4 * MIB))
    grants = [int(x) for x in re.findall(r"rcvd adjust (\d+)", out.stderr.decode())]
    return (grants[0], min(grants[1:])) if len(grants) > 1 else (0, 0)


def bench(L: Lab) -> Result:
    size = (64 if QUICK else 256) * MIB
    f = fetch_waste(size)
    p = push_waste(L, size // 2)
    window = ssh_window(L.devices(1)[0])  # (up front, top-up step) in bytes
    rows = []
    for kind, got, total in (("fetch()", f, size), ("push()", p, size // 2)):
        worst = max(w for _, w, _ in got)
        rows.append(Row(f"resume waste, {kind} cut at 10/50/90 %",
                        " / ".join(f"{w / MIB:.2f}" for _, w, _ in got) + " MiB re-sent",
                        f"{total // MIB} MiB file", worst / total, "<= 1 MiB each",
                        worst <= GOAL))
    details = (
        "Ratio = worst bytes sent twice / file size. "
        f"fetch(): {size // MIB} MiB from the fault server on 127.0.0.1, the connection "
        "dropped after exactly 10/50/90 % of the body, one failed call, then a second call; "
        "bytes counted by the server. push(): "
        f"{size // 2 // MIB} MiB over OpenSSH to a lab device whose link is shaped to "
        f"{LINK_MBIT} Mbit/s (tc tbf), ssh killed once it has read 10/50/90 % of the file, "
        "then push() again; bytes read by ssh twice. Resumed from (bytes): fetch "
        + ", ".join(str(o) for _, _, o in f) + "; push " + ", ".join(str(o) for _, _, o in p)
        + ". A killed ssh loses what it had read but not yet delivered: "
        + ", ".join(f"{w / MIB:.2f}" for _, w, _ in p) + " MiB, about the same wherever the "
        "cut falls, so it does not grow with the file: it is the data in flight inside "
        f"OpenSSH. The device's sshd grants a session channel {window[0]} bytes up front "
        f"and tops the window up in steps of {window[1]} bytes as it writes them on "
        "(`rcvd adjust` in `ssh -vv`'s log of a 4 MiB upload): the client keeps up to that "
        "window sent but not yet written, and a cut loses it. OpenSSH has no setting for the "
        "window on either end. Feeding ssh's stdin only as far as its `-vv` log shows the "
        "device has consumed would bound the loss; not done: it puts a parser of ssh's debug "
        "log into the main transfer path to save at most 2 MiB per interrupted push. "
        "push() cannot keep bytes that never reached the device; fetch() loses none because "
        "the server's close delivers every byte it sent.")
    return Result("resume", rows, details)
