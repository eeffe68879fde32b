"""python3 -m bench [NAME ...]: run benchmarks (all by default), then write docs/BENCHMARKS.md.

Each result replaces that benchmark's entry in docs/benchmarks.json (committed); the doc is
rendered from all entries, so the ones not run this time keep their figures, date and commit.

Each benchmark prints its rows, and its headline ratio on its last line. Lab devices are
started fresh (bench-1..4) and removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from . import (
    download,
    fleet,
    gateway,
    hashcost,
    noop,
    ondemand,
    push,
    relay,
    relay_image,
    report,
    resume,
    serve,
    split,
    upstream,
    vulkan,
)
from .common import Lab, Result, log, save_result

BENCHES: dict[str, Callable[[Lab], Result]] = {
    "download": download.bench,
    "push": push.bench,
    "resume": resume.bench,
    "upstream": upstream.bench,
    "hash": hashcost.bench,
    "noop": noop.bench,
    "fleet": fleet.bench,
    "relay": relay.bench,
    "relay-image": relay_image.bench,
    "serve": serve.bench,
    "vulkan": vulkan.bench,
    "ondemand": ondemand.bench,
    "gateway": gateway.bench,
    "split": split.bench,
}


def headline(res: Result) -> str:
    """The last line a benchmark prints: its first row's ratio, and how many rows missed."""
    r = res.rows[0]
    met = "met" if r.met else "missed" if r.met is False else "info"
    missed = sum(x.met is False for x in res.rows)
    return (f"{res.name}: ratio {report._fmt(r.ratio)} ({r.benchmark}; goal {r.goal}: {met}; "
            f"{missed} of {len(res.rows)} rows missed their goal)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help="any of: " + ", ".join(BENCHES))
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    names = args.names or list(BENCHES)
    # Stamped on every result this run records: the others in docs/benchmarks.json keep theirs.
    measured: dict[str, str | list[str]] = {
        "commit": report.commit(), "command": " ".join(["python3 -m bench", *args.names]),
        "machine": report.machine()}
    L = Lab()
    began, failed = time.perf_counter(), []
    try:
        for name in names:
            t = time.perf_counter()
            log(f"--- {name}")
            try:
                res = BENCHES[name](L)
            except Exception as exc:  # noqa: BLE001 - one failed benchmark must not stop the rest
                log(f"{name} FAILED: {type(exc).__name__}: {exc}")
                failed.append(name)
                continue
            res.seconds = time.perf_counter() - t
            res.commit, res.command = str(measured["commit"]), str(measured["command"])
            res.machine = list(measured["machine"])
            save_result(res)
            for r in res.rows:
                print(f"  {r.benchmark}: {r.ours} vs {r.reference}: {report._fmt(r.ratio)} "
                      f"(goal {r.goal})")
            print(headline(res), flush=True)
    finally:
        L.remove()
    total = time.perf_counter() - began
    report.write(total, full=not args.names, measured=measured)
    log(f"total {total / 60:.1f} min; wrote {report.DOC}")
    if failed:
        log("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
