"""Controller download: fetch() (sha256 while streaming, resumable) against plain `curl -o`.

The server is the lab's fault server in its own process (so it does not share a GIL with
fetch()), on 127.0.0.1, once unlimited and once held to 125 MB/s (a 1 Gbit/s link, the
fastest a home controller is likely to see). Both clients write to the same disk. fetch() is
measured twice: called directly, and the way a deploy calls it, in a process that imported
pyinfra's CLI first (which patches threading, sockets and queues with gevent).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import llama_docker.transfer.download as fetch_mod
from llama_docker.transfer.download import fetch

from .common import (
    MIB,
    QUICK,
    REPO,
    WORK,
    Lab,
    Result,
    Row,
    interleave,
    mbs,
    med,
    ratio_rounds,
    rounds,
    run,
    timed,
)
from .push import random_file

LINK_RATE = 125_000_000  # bytes/s: 1 Gbit/s
# fetch() inside pyinfra's runtime: its CLI's import patches the stdlib with gevent, as in
# `pyinfra inventory.py deploy.py`; the time excludes the interpreter's start.
IN_PYINFRA = """
import sys, time
import pyinfra_cli  # noqa: F401 - gevent.monkey.patch_all(), as pyinfra's CLI does first
from pathlib import Path
from llama_docker.transfer.download import fetch
url, dest, sha, size = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
t = time.perf_counter()
fetch(url, dest, sha, size=size, progress=False)
print(time.perf_counter() - t)
"""


@contextmanager
def file_server(root: Path) -> Iterator[str]:
    """`python3 -m tests.lab.fault_server` on a free local port; yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.lab.fault_server", "--root",
                             str(root), "--port", "0"], cwd=REPO, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
        if not m:
            raise RuntimeError(f"fault server did not start: {line!r}")
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def set_faults(base: str, **faults: object) -> None:
    req = urllib.request.Request(f"{base}/_fault", data=json.dumps(faults).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def bench(L: Lab) -> Result:
    del L  # no device: this is the controller alone
    size = (256 if QUICK else 1024) * MIB
    src, sha = random_file(f"push-{size // MIB}m.bin", size)
    serve, out = WORK / "serve", WORK / "dl"
    for d in (serve, out):
        d.mkdir(parents=True, exist_ok=True)
    served = serve / "model.gguf"
    served.unlink(missing_ok=True)
    os.link(src, served)  # the server refuses symlinks out of its root; a hard link is in
    dest = out / "fetch.gguf"

    def clean() -> None:
        for p in out.iterdir():
            p.unlink()
        os.sync()

    finish: dict[str, list[float]] = {}  # fetch()'s last step: hash wait, fsync, rename
    orig_finish = fetch_mod._Download._finish

    def timed_finish(self: fetch_mod._Download, *a: int) -> fetch_mod.FetchResult:
        t = time.perf_counter()
        try:
            return orig_finish(self, *a)
        finally:
            finish.setdefault("fetch", []).append(time.perf_counter() - t)

    def ours(url: str) -> float:
        return timed(lambda: fetch(url, dest, sha, size=size, progress=False))

    def in_pyinfra(url: str) -> float:
        out = run([sys.executable, "-c", IN_PYINFRA, url, str(dest), sha, str(size)], cwd=REPO)
        return float(out.strip().splitlines()[-1])

    def curl(url: str, sync: bool) -> float:
        f = str(out / "curl.gguf")
        return timed(lambda: (run(["curl", "-sf", "-o", f, url]), sync and run(["sync", f])))

    t: dict[str, dict[str, list[float]]] = {}
    fin: dict[str, list[float]] = {}
    fetch_mod._Download._finish = timed_finish  # type: ignore[method-assign, assignment]
    try:
        with file_server(serve) as base:
            url = f"{base}/model.gguf"
            for mode, rate in (("loopback", None), ("125 MB/s", LINK_RATE)):
                set_faults(base, rate=rate)
                clean()
                finish.clear()
                variants = {"fetch": lambda: ours(url), "fetch in pyinfra": lambda: in_pyinfra(url),
                            "curl": lambda: curl(url, False)}
                if rate:  # the goal's rate: also the reference as durable as fetch()
                    variants["curl+sync"] = lambda: curl(url, True)
                t[mode] = interleave(variants, rounds(3), between=clean)
                fin[mode] = finish["fetch"]  # the direct calls only: the others run elsewhere
    finally:
        fetch_mod._Download._finish = orig_finish  # type: ignore[method-assign, assignment]
        clean()
        served.unlink()
    rows = []
    for mode, ours_key, ref, goal in (
            ("125 MB/s", "fetch", "curl", ">= 0.95"),
            ("125 MB/s", "fetch", "curl+sync", ">= 0.95"),
            ("125 MB/s", "fetch in pyinfra", "curl", ">= 0.95"),
            ("loopback", "fetch", "curl", "report"),
            ("loopback", "fetch in pyinfra", "curl", "report")):
        r = ratio_rounds(t[mode][ref], t[mode][ours_key])
        label = "fetch()" if ours_key == "fetch" else "fetch() in pyinfra"
        rows.append(Row(f"download {size // MIB} MiB, server at {mode}",
                        f"{label} {mbs(size, med(t[mode][ours_key]))}",
                        f"{'curl -o' if ref == 'curl' else 'curl -o; sync FILE'} "
                        f"{mbs(size, med(t[mode][ref]))}", r, goal,
                        r >= 0.95 if goal != "report" else None))
    stream = {m: [a - b for a, b in zip(t[m]["fetch"], fin[m], strict=True)] for m in t}
    details = (
        f"{size // MIB} MiB from the fault server (its own process) on 127.0.0.1 to this "
        "machine's disk, interleaved rounds. fetch() hashes while it streams (an OS thread of "
        "its own), then waits for the hash, fsyncs the file and renames it; plain curl does "
        "neither, `curl+sync` is curl followed by `sync FILE` (the same durability as "
        "fetch()). `fetch in pyinfra` is the same call in a process that imported pyinfra's "
        "CLI first, as a deploy does: gevent has patched threading there, so the hash and the "
        "flushes run on gevent's native threads (a patched `threading.Thread` would be a "
        "greenlet taking turns with the download). Seconds per round:\n\n"
        + "\n".join(f"- {mode}: " + "; ".join(f"{k} {', '.join(f'{x:.2f}' for x in v)}"
                                               for k, v in vs.items())
                    for mode, vs in t.items())
        + "\n\nWhere fetch()'s time goes (median s): "
        + "; ".join(f"{m}: streaming+hashing {med(stream[m]):.2f}, final hash wait + fsync + "
                    f"rename {med(fin[m]):.2f}" for m in t)
        + ". The final step is the fsync of what is still dirty in the page cache (plain curl "
        "leaves that to the kernel, after it has exited). fetch() flushes the .part every "
        "32 MiB from a thread of its own (fdatasync) while it streams, so the fsync finds "
        "little left. Measured on the way here: with no early flush fetch() reached 0.85 of "
        "curl at 125 MB/s; asking the kernel to start writeback early "
        "(`posix_fadvise(POSIX_FADV_DONTNEED)` every 32 MiB) 0.94-0.98, its final fsync "
        "still 0.2-0.9 s.")
    return Result("download", rows, details)
